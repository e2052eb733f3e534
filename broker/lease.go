package broker

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// LeaseRequest is one pilot's request for work.
type LeaseRequest struct {
	AppID   int64
	PilotID int64
	Host    string
	Wants   []dataflow.Want
	TTL     time.Duration
}

// Leasing claims the oldest ready tasks over the partial ready index with
// one UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING, inside the
// writer's transaction. (That form once cost ~200 µs of CPU against
// ~50 µs for a separate pick and claim: SQLite re-planned it at every
// bind, which qpsg.go stopped.) A module that caches its inputs first
// picks the tasks whose input this node holds, then claims the ids.
const (
	leasePick = `SELECT id FROM tasks WHERE module_id = ?1 AND state = 'ready' AND (to_host = '' OR to_host = ?2)
		ORDER BY sort_tag, id LIMIT ?3`
	leaseSet = `UPDATE tasks SET prev_state = state, state = 'leased', lease_pilot = ?1, lease_slot = NULL, lease_deadline = ?2,
		lease_gen = lease_gen + 1, updated_at = ?3 WHERE state = 'ready' AND id `
	leaseReturning = ` RETURNING id, body, headers, lease_gen, attempts, sort_tag`
	leaseClaimMany = leaseSet + "IN (SELECT value FROM json_each(?4))" + leaseReturning
	// leaseClaimPicked picks and claims in one statement, for a module
	// whose pick has no cached-input pass: no ids go to Go and back.
	leaseClaimPicked = leaseSet + `IN (SELECT id FROM tasks WHERE module_id = ?4 AND state = 'ready' AND (to_host = '' OR to_host = ?5)
		ORDER BY sort_tag, id LIMIT ?6)` + leaseReturning
)

// Lease claims ready tasks for a pilot in one commit: for each wanted
// module, the oldest ready tasks (by sort_tag, then id) that are not bound
// to another host. Each leased task's generation is incremented; only a
// report carrying the new generation will be accepted.
func (b *Broker) Lease(ctx context.Context, req LeaseRequest) ([]dataflow.LeasedTask, error) {
	type target struct {
		id   int64
		name string
		max  int
	}
	var targets []target
	for _, w := range req.Wants {
		if w.Max <= 0 {
			continue
		}
		id, ok := b.moduleID(req.AppID, w.Module)
		if !ok {
			return nil, fmt.Errorf("lease: app %d has no module %q", req.AppID, w.Module)
		}
		targets = append(targets, target{id, w.Module, min(w.Max, 10000)})
	}
	if len(targets) == 0 {
		return nil, nil
	}
	var out []dataflow.LeasedTask
	err := b.writeLazy(ctx, func(tx *wtx) error {
		out = out[:0]
		now := b.now()
		deadline := ms(now.Add(req.TTL))
		for _, t := range targets {
			// Tasks whose input this node caches first, then any.
			ids, err := pickCached(tx, req.AppID, t.id, req.Host, t.max, b.module(t.id))
			if err != nil {
				return err
			}
			var rows *sql.Rows
			if len(ids) == 0 {
				rows, err = tx.Query(leaseClaimPicked, req.PilotID, deadline, ms(now), t.id, req.Host, t.max)
			} else {
				if len(ids) < t.max {
					more, err := pickReady(tx, t.id, req.Host, t.max, ids)
					if err != nil {
						return err
					}
					ids = append(ids, more...)
				}
				var list []byte
				if list, err = json.Marshal(ids); err == nil {
					rows, err = tx.Query(leaseClaimMany, req.PilotID, deadline, ms(now), string(list))
				}
			}
			if err != nil {
				return err
			}
			type leased struct {
				dataflow.LeasedTask
				tag string
			}
			var got []leased
			for rows.Next() {
				var l leased
				var headers string
				if err := rows.Scan(&l.ID, &l.Body, &headers, &l.Gen, &l.Attempt, &l.tag); err != nil {
					rows.Close()
					return err
				}
				l.Module = t.name
				l.Attempt++
				l.Headers, _ = dataflow.ParseHeaders(headers)
				got = append(got, l)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			// RETURNING has no defined order; dispatch order is sort_tag, id.
			sort.Slice(got, func(i, j int) bool {
				if got[i].tag != got[j].tag {
					return got[i].tag < got[j].tag
				}
				return got[i].ID < got[j].ID
			})
			for _, l := range got {
				out = append(out, l.LeasedTask)
			}
			tx.moved(t.id, dataflow.TaskReady, dataflow.TaskLeased, len(got))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	return out, nil
}

// pickReady returns the ids of up to max-len(taken) ready tasks of a
// module that may run on host, in dispatch order, other than taken.
func pickReady(tx *wtx, moduleID int64, host string, max int, taken []int64) ([]int64, error) {
	skip := make(map[int64]bool, len(taken))
	for _, id := range taken {
		skip[id] = true
	}
	picked, err := queryIDs(tx, leasePick, moduleID, host, max)
	var ids []int64
	for _, id := range picked {
		if !skip[id] && len(ids)+len(taken) < max {
			ids = append(ids, id)
		}
	}
	return ids, err
}

// queryIDs runs a query of one id column.
func queryIDs(tx *wtx, q string, args ...any) ([]int64, error) {
	rows, err := tx.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// leasePickCached is the dispatch query for the tasks whose input the
// asking node caches. It goes from the node's cache records (its 1000
// most recent: what is likely still there) to the ready tasks of each
// key through their partial index — CROSS JOIN keeps that order, so the
// cost follows the node's cache, not the module's backlog.
const leasePickCached = `SELECT t.id FROM
	(SELECT data_key FROM cached WHERE app_id = ?4 AND host = ?2 ORDER BY at DESC LIMIT 1000) c
	CROSS JOIN tasks t ON t.module_id = ?1 AND t.data_key = c.data_key AND t.state = 'ready' AND t.data_key <> ''
	WHERE (t.to_host = '' OR t.to_host = ?2)
	ORDER BY t.sort_tag, t.id LIMIT ?3`

// pickCached returns up to max ready tasks of the module whose input the
// host's cache holds, for modules that cache their inputs.
func pickCached(tx *wtx, appID, moduleID int64, host string, max int, m *moduleInfo) ([]int64, error) {
	if m == nil || !m.def.StageCache || len(m.def.StageIn) == 0 || host == "" {
		return nil, nil
	}
	return queryIDs(tx, leasePickCached, moduleID, host, max, appID)
}

// Heartbeat extends to now+ttl the leases the pilot says it holds and
// records that the pilot is alive. Leases of this pilot that it does not
// list are left to expire.
func (b *Broker) Heartbeat(ctx context.Context, pilotID int64, held []int64, slots []dataflow.SlotState, ttl time.Duration) error {
	ids, err := json.Marshal(held)
	if err != nil {
		return err
	}
	err = b.writeLazy(ctx, func(tx *wtx) error {
		now := b.now()
		if len(held) > 0 {
			if _, err := tx.Exec(`UPDATE tasks SET lease_deadline = ? WHERE lease_pilot = ? AND state IN ('leased','running')
				AND id IN (SELECT value FROM json_each(?))`, ms(now.Add(ttl)), pilotID, string(ids)); err != nil {
				return err
			}
		}
		if _, err := tx.Exec("UPDATE pilots SET last_seen = ?, state = 'active' WHERE id = ? AND state <> 'left'", ms(now), pilotID); err != nil {
			return err
		}
		return replaceSlotStates(tx, pilotID, slots, ms(now))
	})
	if err != nil {
		return fmt.Errorf("heartbeat of pilot %d: %w", pilotID, err)
	}
	return nil
}

func markRunning(tx *wtx, pilotID int64, started []dataflow.Started, now int64) error {
	for _, s := range started {
		if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'running', lease_slot = ?, updated_at = ?
			WHERE id = ? AND lease_gen = ? AND lease_pilot = ? AND state = 'leased'`, s.Slot, now, s.TaskID, s.Gen, pilotID); err != nil {
			return err
		}
	}
	return nil
}

// Release gives back leased tasks a pilot will not start (for example when
// it leaves): they become ready again without counting an attempt.
func (b *Broker) Release(ctx context.Context, pilotID int64, tasks []dataflow.LeasedTask) error {
	if len(tasks) == 0 {
		return nil
	}
	err := b.writeReady(ctx, func(tx *wtx) error {
		now := ms(b.now())
		for _, t := range tasks {
			if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'ready', lease_pilot = NULL, lease_slot = NULL, lease_deadline = NULL,
				updated_at = ? WHERE id = ? AND lease_gen = ? AND lease_pilot = ? AND state = 'leased'`, now, t.ID, t.Gen, pilotID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("release leases of pilot %d: %w", pilotID, err)
	}
	return nil
}
