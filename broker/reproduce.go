package broker

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Re-producing node-local data. A task the head bound to its sender's
// node (the sender's output is on that node's local: or mem: tier, or the
// module is HOST-BOUND) can run nowhere else. When that node is lost —
// no pilot of the app has been active on it for a while — waiting would
// never end, so the head walks the task's lineage up to the first
// ancestor whose own input is not on that node and runs that ancestor
// again; the tasks in between are held ('initial', lost_host set) and
// each is released, bound to the node that produced it anew, when its
// parent emits its body again. The work runs twice; each task's messages
// still exist once (the held task is the one released). What a re-run
// ancestor changed outside its messages (a semaphore, a file on the shared
// filesystem) it changes again, as a retry would.

// ReproduceResult counts what one Reproduce pass did.
type ReproduceResult struct {
	Hosts int // lost nodes that held the input of waiting tasks
	Held  int // tasks held until their input is produced again
	Rerun int // ancestors made ready to produce it
	// Orphans are the tasks cancelled because their lineage cannot be
	// run again, each with the reason.
	Orphans []string
	// Batched counts tasks left waiting because a producer in their
	// lineage runs in batches (task_batch_size > 1): its messages ride on
	// a batch's first task, so re-running the one recorded as the parent
	// would not make the rest of that batch's outputs again.
	Batched int
}

// maxLineage bounds a walk up a task's ancestors.
const maxLineage = 1000

// Reproduce handles the tasks bound to nodes on which no pilot of their
// app has been active for lostFor (and at least one was once).
func (b *Broker) Reproduce(ctx context.Context, lostFor time.Duration) (ReproduceResult, error) {
	var rr ReproduceResult
	err := b.writeReady(ctx, func(tx *wtx) error {
		rr = ReproduceResult{}
		now := b.now()
		hosts, err := lostHosts(tx, ms(now.Add(-lostFor)))
		if err != nil {
			return err
		}
		for _, h := range hosts {
			ids, err := queryIDs(tx, boundWaiting, h.app, h.host)
			if err != nil {
				return err
			}
			if len(ids) > 0 {
				rr.Hosts++
			}
			for _, id := range ids {
				if err := b.reproduce(tx, id, h.host, ms(now), &rr); err != nil {
					return fmt.Errorf("task %d: %w", id, err)
				}
			}
		}
		if err := b.sweepHeld(tx, ms(now), &rr); err != nil {
			return err
		}
		return b.loadHolding(tx)
	})
	if err != nil {
		return rr, fmt.Errorf("reproduce lost node data: %w", err)
	}
	return rr, nil
}

// boundWaiting selects tasks waiting for a node (tasks_bound) that have
// a lineage to walk: those stored before it was recorded would only take
// places in the LIMIT.
const boundWaiting = `SELECT id FROM tasks WHERE app_id = ? AND to_host = ? AND bound_to_data = 1 AND state IN ('ready', 'retrying')
	AND parent_id IS NOT NULL LIMIT 1000`

// releaseHeldSQL finds a held task by its module and body (the unique
// index) and gives it the new emission's headers and node.
const releaseHeldSQL = `UPDATE tasks SET prev_state = state, state = 'ready', lost_host = '', headers = ?, sort_tag = ?, to_host = ?, data_key = ?,
	parent_id = ?, bound_to_data = ?, available_at = 0, updated_at = ? WHERE module_id = ? AND body = ? AND state = 'initial' AND lost_host <> ''`

type appHost struct {
	app  int64
	host string
}

// lostHosts lists the (app, host) pairs of running apps with no active
// pilot on the host and none seen there since cutoff.
func lostHosts(tx *wtx, cutoff int64) ([]appHost, error) {
	rows, err := tx.Query(`SELECT p.app_id, p.host FROM pilots p JOIN apps a ON a.id = p.app_id AND a.status = 'RUNNING'
		GROUP BY p.app_id, p.host HAVING sum(p.state = 'active') = 0 AND max(p.last_seen) < ?`, cutoff)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []appHost
	for rows.Next() {
		var h appHost
		if err := rows.Scan(&h.app, &h.host); err != nil {
			return nil, err
		}
		out = append(out, h)
	}
	return out, rows.Err()
}

// lineageRow is what the walk needs of a task.
type lineageRow struct {
	id, moduleID int64
	state        dataflow.TaskState
	parent       sql.NullInt64
	bound        bool
	toHost       string
}

func readLineage(tx *wtx, id int64) (lineageRow, error) {
	r := lineageRow{id: id}
	err := tx.QueryRow(`SELECT module_id, state, parent_id, bound_to_data, to_host FROM tasks WHERE id = ?`, id).
		Scan(&r.moduleID, &r.state, &r.parent, &r.bound, &r.toHost)
	return r, err
}

// walk is what re-producing one task's input takes: the tasks to hold
// (the task first, then the ancestors whose input was on the same node)
// and the ancestor to run again (nil when one is already on its way).
// why is set when the lineage cannot be run again; batched when a
// producer in it runs in batches; none when no lineage was recorded.
type walk struct {
	chain   []lineageRow
	rerun   *lineageRow
	why     string
	batched bool
	none    bool
}

// planReproduce walks the lineage up from task t, changing nothing.
func (b *Broker) planReproduce(tx *wtx, t lineageRow, host string) (walk, error) {
	if !t.parent.Valid {
		return walk{none: true}, nil // stored before lineage was recorded
	}
	var w walk
	for depth := 0; ; depth++ {
		w.chain = append(w.chain, t)
		if depth >= maxLineage {
			w.why = "its lineage is deeper than the head follows"
			return w, nil
		}
		if !t.parent.Valid {
			w.why = "an ancestor has no recorded parent"
			return w, nil
		}
		p, err := readLineage(tx, t.parent.Int64)
		if errors.Is(err, sql.ErrNoRows) {
			w.why = "its parent task is gone"
			return w, nil
		}
		if err != nil {
			return w, err
		}
		if m := b.module(p.moduleID); m != nil && m.def.TaskBatchSize > 1 {
			w.batched = true
			return w, nil
		}
		switch {
		case p.state == dataflow.TaskSucceeded && p.bound && p.toHost == host:
			// Its own input was on that node too: produce that first.
			t = p
		case p.state == dataflow.TaskSucceeded:
			w.rerun = &p
			return w, nil
		case p.state == dataflow.TaskFailed || p.state == dataflow.TaskCancelled:
			w.why = "its producer " + string(p.state)
			return w, nil
		default:
			// The producer is already running again or waiting to (a
			// sibling's walk got there first): its emission releases
			// this chain too.
			return w, nil
		}
	}
}

// canRun reports whether the walk ends in a producer that makes the
// input again.
func (w walk) canRun() bool { return w.why == "" && !w.batched && !w.none }

// reproduce holds task id, whose input was on host, and its ancestors up
// to one that can run elsewhere, which it makes ready.
func (b *Broker) reproduce(tx *wtx, id int64, host string, now int64, rr *ReproduceResult) error {
	t, err := readLineage(tx, id)
	if err != nil {
		return err
	}
	w, err := b.planReproduce(tx, t, host)
	if err != nil {
		return err
	}
	switch {
	case w.none:
		return nil // it keeps waiting
	case w.batched:
		rr.Batched++
		return nil
	case w.why != "":
		return orphan(tx, w.chain[0], host, now, rr, w.why)
	}
	return b.applyReproduce(tx, w, host, now, rr)
}

// applyReproduce holds the walk's chain and runs its producer again.
func (b *Broker) applyReproduce(tx *wtx, w walk, host string, now int64, rr *ReproduceResult) error {
	if err := hold(tx, w.chain, host, now); err != nil {
		return err
	}
	rr.Held += len(w.chain)
	if w.rerun == nil {
		return nil
	}
	if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'ready', exit_code = NULL, fail_counts = '{}', available_at = 0,
		updated_at = ? WHERE id = ? AND state = 'succeeded'`, now, w.rerun.id); err != nil {
		return err
	}
	b.markReady(w.rerun.moduleID)
	rr.Rerun++
	return nil
}

// A task whose input goes missing more than maxLostInput times is left to
// its retry rules; lostInputKey counts those times in fail_counts, apart
// from the rules' own keys (exit codes and "*").
const (
	maxLostInput = 3
	lostInputKey = "input_lost"
)

// lostInput handles an attempt that found its node-tier input missing
// on the node it was bound to (the node came back empty, or the file was
// removed): when the input can be made again, the task is held and its
// producer runs again, as for a lost node, without counting a retry;
// otherwise it reports false and the retry rules decide.
func (b *Broker) lostInput(tx *wtx, now time.Time, t taskRow, code int) (bool, error) {
	counts := map[string]int{}
	_ = json.Unmarshal([]byte(t.failCounts), &counts)
	if counts[lostInputKey] >= maxLostInput {
		return false, nil // a tier that keeps losing data: the rules decide
	}
	lin, err := readLineage(tx, t.id)
	if err != nil || !lin.bound || lin.toHost == "" {
		return false, err
	}
	w, err := b.planReproduce(tx, lin, lin.toHost)
	if err != nil || !w.canRun() {
		return false, err
	}
	counts[lostInputKey]++
	cj, _ := json.Marshal(counts)
	// leased or running → retrying (counted apart from the retry rules) → held.
	if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'retrying', exit_code = ?, attempts = attempts + 1, available_at = ?,
		fail_counts = ?, lease_pilot = NULL, lease_slot = NULL, lease_deadline = NULL, updated_at = ? WHERE id = ?`,
		code, ms(now), string(cj), ms(now), t.id); err != nil {
		return false, err
	}
	w.chain[0].state = dataflow.TaskRetrying
	var rr ReproduceResult
	if err := b.applyReproduce(tx, w, lin.toHost, ms(now), &rr); err != nil {
		return false, err
	}
	b.holding[t.appID] = true
	return true, nil
}

// hold moves tasks (ready, retrying or succeeded) to 'initial' with
// lost_host set, through 'ready', the one way the state machine allows.
func hold(tx *wtx, chain []lineageRow, host string, now int64) error {
	for _, t := range chain {
		if t.state != dataflow.TaskReady {
			if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'ready', updated_at = ? WHERE id = ? AND state IN ('retrying', 'succeeded')`,
				now, t.id); err != nil {
				return err
			}
		}
		if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'initial', lost_host = ?, updated_at = ? WHERE id = ? AND state = 'ready'`,
			host, now, t.id); err != nil {
			return err
		}
	}
	return nil
}

// orphan cancels task t, whose input cannot be made again (the reason
// goes into the result); the ancestors walked stay as they were.
func orphan(tx *wtx, t lineageRow, host string, now int64, rr *ReproduceResult, why string) error {
	if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'cancelled', updated_at = ? WHERE id = ? AND state IN ('ready', 'retrying')`,
		now, t.id); err != nil {
		return err
	}
	rr.Orphans = append(rr.Orphans, fmt.Sprintf("task %d: its input was on %s and cannot be produced again: %s", t.id, host, why))
	return nil
}

// heldOrphans finds held tasks that nothing will release: their parent
// ended (a held task's parent is never left succeeded when it is held,
// and a success that emits the body releases the child in its own
// commit, so a held child of a succeeded parent was not emitted again).
const heldOrphans = `SELECT c.id, p.id, p.state FROM tasks c JOIN tasks p ON p.id = c.parent_id
	WHERE c.state = 'initial' AND c.lost_host <> '' AND p.state IN ('succeeded', 'failed', 'cancelled') LIMIT 1000`

// sweepHeld cancels held tasks whose producer ended without making
// their input again, down their held descendants.
func (b *Broker) sweepHeld(tx *wtx, now int64, rr *ReproduceResult) error {
	for range maxLineage {
		rows, err := tx.Query(heldOrphans)
		if err != nil {
			return err
		}
		type orphan struct {
			id, parent int64
			state      string
		}
		var found []orphan
		for rows.Next() {
			var o orphan
			if err := rows.Scan(&o.id, &o.parent, &o.state); err != nil {
				rows.Close()
				return err
			}
			found = append(found, o)
		}
		rows.Close()
		if err := rows.Err(); err != nil || len(found) == 0 {
			return err
		}
		for _, o := range found {
			if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'cancelled', updated_at = ? WHERE id = ? AND state = 'initial'`,
				now, o.id); err != nil {
				return err
			}
			why := fmt.Sprintf("task %d: held for input lost with its node, and its producer (task %d) ended %s without making it again", o.id, o.parent, o.state)
			rr.Orphans = append(rr.Orphans, why)
		}
	}
	return nil
}

// releaseHeld gives a held task of m's module and body m's headers and
// makes it ready: its input exists again, where m's sender put it. It
// reports false when no such task waits.
func (b *Broker) releaseHeld(tx *wtx, m resolved, now int64) (bool, error) {
	h := m.Headers
	n, err := tx.updateStates(releaseHeldSQL, h.JSON(), h[dataflow.HeaderSortTag], h[dataflow.HeaderToHost], dataKey(m), m.parent(), m.boundFlag(), now, m.moduleID, m.Body)
	if err != nil {
		return false, err
	}
	if n > 0 {
		b.markReady(m.moduleID)
	}
	return n > 0, nil
}

// loadHolding marks the apps with held tasks, afresh.
func (b *Broker) loadHolding(tx *wtx) error {
	clear(b.holding)
	rows, err := tx.Query(`SELECT DISTINCT app_id FROM tasks WHERE state = 'initial' AND lost_host <> ''`)
	if err != nil {
		return fmt.Errorf("held tasks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return err
		}
		b.holding[id] = true
	}
	return rows.Err()
}
