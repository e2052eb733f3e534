package broker

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// RegisterPilot records a new pilot and returns its id.
func (b *Broker) RegisterPilot(ctx context.Context, p dataflow.PilotInfo) (int64, error) {
	if _, _, err := b.App(p.AppID); err != nil {
		return 0, err
	}
	var id int64
	err := b.write(ctx, func(tx *wtx) error {
		now := ms(b.now())
		res, err := tx.Exec(`INSERT INTO pilots (app_id, host, cpus, mem_bytes, head, job_id, state, registered_at, last_seen)
			VALUES (?, ?, ?, ?, ?, ?, 'active', ?, ?)`, p.AppID, p.Host, p.CPUs, p.MemBytes, p.Head, p.JobID, now, now)
		if err != nil {
			return err
		}
		id, err = res.LastInsertId()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("register pilot: %w", err)
	}
	return id, nil
}

// Pilot returns one pilot.
func (b *Broker) Pilot(ctx context.Context, id int64) (*dataflow.PilotInfo, error) {
	var p dataflow.PilotInfo
	var seen int64
	err := b.r.QueryRowContext(ctx, "SELECT id, app_id, host, cpus, mem_bytes, head, job_id, state, last_seen FROM pilots WHERE id = ?", id).
		Scan(&p.ID, &p.AppID, &p.Host, &p.CPUs, &p.MemBytes, &p.Head, &p.JobID, &p.State, &seen)
	if err == sql.ErrNoRows {
		return nil, fmt.Errorf("pilot %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	p.LastSeen = fromMS(seen)
	return &p, nil
}

// Pilots lists an app's pilots.
func (b *Broker) Pilots(ctx context.Context, appID int64) ([]dataflow.PilotInfo, error) {
	rows, err := b.r.QueryContext(ctx, "SELECT id, app_id, host, cpus, mem_bytes, head, job_id, state, last_seen FROM pilots WHERE app_id = ? ORDER BY id", appID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []dataflow.PilotInfo
	for rows.Next() {
		var p dataflow.PilotInfo
		var seen int64
		if err := rows.Scan(&p.ID, &p.AppID, &p.Host, &p.CPUs, &p.MemBytes, &p.Head, &p.JobID, &p.State, &seen); err != nil {
			return nil, err
		}
		p.LastSeen = fromMS(seen)
		out = append(out, p)
	}
	return out, rows.Err()
}

// PilotLeft marks a pilot gone; its unstarted leases become ready again.
func (b *Broker) PilotLeft(ctx context.Context, id int64) error {
	err := b.writeReady(ctx, func(tx *wtx) error {
		now := ms(b.now())
		if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'ready', lease_pilot = NULL, lease_slot = NULL, lease_deadline = NULL,
			updated_at = ? WHERE state = 'leased' AND lease_pilot = ?`, now, id); err != nil {
			return err
		}
		_, err := tx.Exec("UPDATE pilots SET state = 'left', last_seen = ? WHERE id = ?", now, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("pilot %d left: %w", id, err)
	}
	return nil
}

// MarkLostPilots marks active pilots not seen for longer than timeout as lost.
func (b *Broker) MarkLostPilots(ctx context.Context, timeout time.Duration) (int, error) {
	n := 0
	err := b.write(ctx, func(tx *wtx) error {
		res, err := tx.Exec("UPDATE pilots SET state = 'lost' WHERE state = 'active' AND last_seen < ?", ms(b.now().Add(-timeout)))
		if err != nil {
			return err
		}
		m, _ := res.RowsAffected()
		n = int(m)
		return nil
	})
	return n, err
}

// HeldBy counts the tasks a pilot holds (leased or running).
func (b *Broker) HeldBy(ctx context.Context, pilotID int64) (int, error) {
	var n int
	err := b.r.QueryRowContext(ctx, "SELECT count(*) FROM tasks WHERE state IN ('leased','running') AND lease_pilot = ?", pilotID).Scan(&n)
	return n, err
}
