package broker

import (
	"context"
	"fmt"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// maxSlotReason bounds a reported reason (it comes from a node).
const maxSlotReason = 2048

// replaceSlotStates makes slots the pilot's troubled slots. Entries with
// an unknown state are dropped rather than failing the heartbeat that
// carries them: the heartbeat also keeps the pilot's leases alive.
func replaceSlotStates(tx *wtx, pilotID int64, slots []dataflow.SlotState, now int64) error {
	if _, err := tx.Exec(`DELETE FROM slot_states WHERE pilot_id = ?`, pilotID); err != nil {
		return err
	}
	for _, st := range slots {
		if (st.State != dataflow.SlotRestarting && st.State != dataflow.SlotError) || st.Slot == "" {
			continue
		}
		reason := st.Reason
		if len(reason) > maxSlotReason {
			reason = reason[:maxSlotReason]
		}
		if _, err := tx.Exec(`INSERT INTO slot_states (pilot_id, slot, app_id, module, state, reason, failures, updated_at)
			SELECT id, ?, app_id, ?, ?, ?, ?, ? FROM pilots WHERE id = ?
			ON CONFLICT (pilot_id, slot) DO UPDATE SET state = excluded.state, reason = excluded.reason,
				failures = excluded.failures, updated_at = excluded.updated_at`,
			st.Slot, st.Module, st.State, reason, max(st.Failures, 0), now, pilotID); err != nil {
			return err
		}
	}
	return nil
}

// SlotStates are the troubled slots of an app's active pilots.
func (b *Broker) SlotStates(ctx context.Context, appID int64) ([]dataflow.SlotState, error) {
	rows, err := b.r.QueryContext(ctx, `SELECT s.slot, s.module, s.state, s.reason, s.failures FROM slot_states s
		JOIN pilots p ON p.id = s.pilot_id WHERE s.app_id = ? AND p.state = 'active' ORDER BY s.module, s.slot`, appID)
	if err != nil {
		return nil, fmt.Errorf("slot states of app %d: %w", appID, err)
	}
	defer rows.Close()
	var out []dataflow.SlotState
	for rows.Next() {
		var st dataflow.SlotState
		if err := rows.Scan(&st.Slot, &st.Module, &st.State, &st.Reason, &st.Failures); err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, rows.Err()
}
