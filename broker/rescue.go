package broker

import (
	"context"
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
	err := b.writeReady(ctx, func(tx *wtx) error {
		rr = RescueResult{}
		now := b.now()
		expired, err := queryTaskRows(tx, "WHERE state IN ('leased','running') AND lease_deadline < ? LIMIT 10000", ms(now))
		if err != nil {
			return err
		}
		execs := make([]execRow, 0, len(expired))
		for _, t := range expired {
			mod := b.module(t.moduleID)
			if mod == nil {
				return fmt.Errorf("task %d: module %d not loaded", t.id, t.moduleID)
			}
			if _, err := b.settle(tx, now, t, mod, dataflow.ExitLost); err != nil {
				return err
			}
			c := dataflow.Completion{TaskID: t.id, Gen: t.gen, ExitCode: dataflow.ExitLost, EndedAt: now,
				Note: "lease expired: the pilot stopped reporting (lost node, killed job or network)"}
			execs = append(execs, newExecRow(t, t.pilot.Int64, c, 0))
		}
		if err := insertExecs(tx, execs); err != nil {
			return err
		}
		rr.Expired = len(expired)
		n, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'ready', updated_at = ? WHERE state = 'retrying' AND available_at <= ?`,
			ms(now), ms(now))
		if err != nil {
			return err
		}
		rr.Promoted = n
		return nil
	})
	if err != nil {
		return rr, fmt.Errorf("rescue: %w", err)
	}
	return rr, nil
}
