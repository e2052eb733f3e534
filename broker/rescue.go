package broker

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// RescueResult counts what one Rescue pass did.
type RescueResult struct {
	Expired  int // leases that ran out, charged exit 123
	Promoted int // retrying tasks whose backoff ended
}

// Rescue returns tasks whose lease deadline passed through the retry rules
// as lost (exit 123, with an exec record saying so), and makes retrying
// tasks whose backoff has ended ready.
func (b *Broker) Rescue(ctx context.Context) (RescueResult, error) {
	var rr RescueResult
	err := b.writeReady(ctx, func(tx *sql.Tx) error {
		rr = RescueResult{}
		now := b.now()
		rows, err := tx.Query(`SELECT id FROM tasks WHERE state IN ('leased','running') AND lease_deadline < ? LIMIT 10000`, ms(now))
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		for _, id := range ids {
			t, err := loadTaskRow(tx, id)
			if err != nil {
				return err
			}
			mod := b.module(t.moduleID)
			if mod == nil {
				return fmt.Errorf("task %d: module %d not loaded", id, t.moduleID)
			}
			if _, err := b.settle(tx, now, t, mod, dataflow.ExitLost); err != nil {
				return err
			}
			c := dataflow.Completion{TaskID: id, Gen: t.gen, ExitCode: dataflow.ExitLost, EndedAt: now,
				Note: "lease expired: the pilot stopped reporting (lost node, killed job or network)"}
			if err := insertExecs(tx, []execRow{newExecRow(t, t.pilot.Int64, c, 0)}); err != nil {
				return err
			}
			rr.Expired++
		}
		res, err := tx.Exec(`UPDATE tasks SET state = 'ready', updated_at = ? WHERE state = 'retrying' AND available_at <= ?`, ms(now), ms(now))
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		rr.Promoted = int(n)
		return nil
	})
	if err != nil {
		return rr, fmt.Errorf("rescue: %w", err)
	}
	return rr, nil
}
