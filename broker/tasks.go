package broker

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// insertSpecial adds one message whose headers ask for more than dedup:
// conflict_action=OVERWRITE (headers replaced, an ended task runs again)
// or repeatable=yes (a new task with the same body). Plain messages go
// through insertTasks' multi-row path. It reports whether a task became
// ready.
func (b *Broker) insertSpecial(tx *wtx, m resolved, now int64) (bool, error) {
	ok, err := insertSpecial(tx, m, dataKey(m), now)
	if ok {
		b.markReady(m.moduleID)
	}
	return ok, err
}

func insertSpecial(tx *wtx, m resolved, dataKey string, now int64) (bool, error) {
	appID, moduleID, msg := m.appID, m.moduleID, m.Message
	h := msg.Headers
	hj := h.JSON()
	sortTag, toHost := h[dataflow.HeaderSortTag], h[dataflow.HeaderToHost]
	if strings.EqualFold(h[dataflow.HeaderRepeatable], "yes") {
		_, err := tx.Exec(`INSERT INTO tasks (app_id, module_id, body, seq, headers, state, sort_tag, to_host, data_key, parent_id, bound_to_data, created_at, updated_at)
			VALUES (?, ?, ?, (SELECT coalesce(max(seq) + 1, 0) FROM tasks WHERE module_id = ? AND body = ?), ?, 'ready', ?, ?, ?, ?, ?, ?, ?)`,
			appID, moduleID, msg.Body, moduleID, msg.Body, hj, sortTag, toHost, dataKey, m.parent(), m.boundFlag(), now, now)
		if err == nil {
			tx.moved(moduleID, "", dataflow.TaskReady, 1)
		}
		return err == nil, err
	}
	res, err := tx.Exec(`INSERT INTO tasks (app_id, module_id, body, headers, state, sort_tag, to_host, data_key, parent_id, bound_to_data, created_at, updated_at)
		VALUES (?, ?, ?, ?, 'ready', ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (module_id, body, seq) DO NOTHING`,
		appID, moduleID, msg.Body, hj, sortTag, toHost, dataKey, m.parent(), m.boundFlag(), now, now)
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		tx.moved(moduleID, "", dataflow.TaskReady, 1)
		return true, nil
	}
	if !strings.EqualFold(h[dataflow.HeaderConflictAction], "OVERWRITE") {
		return false, nil
	}
	// OVERWRITE: new headers for the next attempt; an ended task runs again
	// with fresh retry counts. A task being run keeps its current attempt.
	_, err = tx.updateStates(`UPDATE tasks SET headers = ?, sort_tag = ?, to_host = ?, data_key = ?, parent_id = ?, bound_to_data = ?, updated_at = ?, prev_state = state,
			state = CASE WHEN state IN ('succeeded','failed','cancelled') THEN 'ready' ELSE state END,
			exit_code = CASE WHEN state IN ('succeeded','failed','cancelled') THEN NULL ELSE exit_code END,
			fail_counts = CASE WHEN state IN ('succeeded','failed','cancelled') THEN '{}' ELSE fail_counts END
		WHERE module_id = ? AND body = ? AND seq = 0`, hj, sortTag, toHost, dataKey, m.parent(), m.boundFlag(), now, moduleID, msg.Body)
	if err != nil {
		return false, err
	}
	return true, nil
}

// insertTasks adds many messages: plain ones (the common case) with
// multi-row INSERT ... ON CONFLICT DO NOTHING statements, those with
// conflict_action=OVERWRITE or repeatable=yes one by one. It returns how
// many tasks were created or re-armed.
func (b *Broker) insertTasks(tx *wtx, msgs []resolved, now int64) (int, error) {
	n := 0
	// Plain messages are inserted per target module, so each statement's
	// row count is that module's new tasks.
	var modules []int64
	plain := map[int64][][]any{}
	for _, m := range msgs {
		if m.Body == "" {
			return n, fmt.Errorf("module %q: empty task body", m.Module)
		}
		if b.holding[m.appID] {
			released, err := b.releaseHeld(tx, m, now)
			if err != nil {
				return n, err
			}
			if released {
				n++
				continue
			}
		}
		h := m.Headers
		if strings.EqualFold(h[dataflow.HeaderRepeatable], "yes") || strings.EqualFold(h[dataflow.HeaderConflictAction], "OVERWRITE") {
			ok, err := b.insertSpecial(tx, m, now)
			if err != nil {
				return n, err
			}
			if ok {
				n++
			}
			continue
		}
		if plain[m.moduleID] == nil {
			modules = append(modules, m.moduleID)
		}
		plain[m.moduleID] = append(plain[m.moduleID], []any{m.appID, m.moduleID, m.Body, h.JSON(), h[dataflow.HeaderSortTag], h[dataflow.HeaderToHost], dataKey(m),
			m.parent(), m.boundFlag(), now, now})
		b.markReady(m.moduleID)
	}
	for _, module := range modules {
		k, err := bulkExec(tx, `INSERT INTO tasks (app_id, module_id, body, headers, state, sort_tag, to_host, data_key, parent_id, bound_to_data, created_at, updated_at)
			SELECT column1, column2, column3, column4, 'ready', column5, column6, column7, column8, column9, column10, column11 FROM (`,
			`) WHERE true ON CONFLICT (module_id, body, seq) DO NOTHING`, 11, plain[module])
		if err != nil {
			return n, err
		}
		tx.moved(module, "", dataflow.TaskReady, int(k))
		n += int(k)
	}
	return n, nil
}

// AddTasks adds messages to an app's modules (Module empty = entry module)
// in one transaction and returns how many tasks were created or re-armed.
// An unknown module fails the whole call and adds nothing.
func (b *Broker) AddTasks(ctx context.Context, appID int64, msgs []dataflow.Message) (int, error) {
	def, status, err := b.App(appID)
	if err != nil {
		return 0, err
	}
	if status.Done() {
		return 0, fmt.Errorf("add tasks to app %d: %w (%s)", appID, ErrAppEnded, status)
	}
	rs := make([]resolved, len(msgs))
	for i, m := range msgs {
		if m.Module == "" {
			m.Module = def.EntryModule()
		}
		id, ok := b.moduleID(appID, m.Module)
		if !ok {
			return 0, fmt.Errorf("add tasks: app %d has no module %q", appID, m.Module)
		}
		if m.Body == "" {
			return 0, fmt.Errorf("add tasks: message %d has an empty body", i+1)
		}
		rs[i] = resolved{Message: m, appID: appID, moduleID: id, def: def.Module(m.Module)}
	}
	n := 0
	err = b.write(ctx, func(tx *wtx) error {
		var err error
		n, err = b.insertTasks(tx, rs, ms(b.now()))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("add tasks: %w", err)
	}
	return n, nil
}

// TaskFilter selects tasks to list.
type TaskFilter struct {
	Module string
	State  dataflow.TaskState
	Limit  int
	After  int64 // id, for paging
}

// Tasks lists an app's tasks by id.
func (b *Broker) Tasks(ctx context.Context, appID int64, f TaskFilter) ([]dataflow.TaskInfo, error) {
	q := `SELECT t.id, t.app_id, m.name, t.body, t.headers, t.state, t.attempts, t.exit_code, t.created_at, t.updated_at, t.parent_id, t.lost_host
		FROM tasks t JOIN modules m ON m.id = t.module_id WHERE t.app_id = ? AND t.id > ?`
	args := []any{appID, f.After}
	if f.Module != "" {
		q += " AND m.name = ?"
		args = append(args, f.Module)
	}
	if f.State != "" {
		q += " AND t.state = ?"
		args = append(args, string(f.State))
	}
	q += " ORDER BY t.id"
	if f.Limit > 0 {
		q += fmt.Sprintf(" LIMIT %d", f.Limit)
	}
	rows, err := b.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	defer rows.Close()
	var out []dataflow.TaskInfo
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

type scanner interface{ Scan(...any) error }

func scanTask(s scanner) (dataflow.TaskInfo, error) {
	var t dataflow.TaskInfo
	var headers string
	var exit sql.NullInt64
	var created, updated int64
	var parent sql.NullInt64
	if err := s.Scan(&t.ID, &t.AppID, &t.Module, &t.Body, &headers, &t.State, &t.Attempts, &exit, &created, &updated, &parent, &t.LostHost); err != nil {
		return t, err
	}
	t.ParentID = parent.Int64
	t.Headers, _ = dataflow.ParseHeaders(headers)
	if exit.Valid {
		c := int(exit.Int64)
		t.ExitCode = &c
	}
	t.CreatedAt, t.UpdatedAt = fromMS(created), fromMS(updated)
	return t, nil
}

// Task returns one task with its exec history.
func (b *Broker) Task(ctx context.Context, taskID int64) (*dataflow.TaskInfo, error) {
	row := b.r.QueryRowContext(ctx, `SELECT t.id, t.app_id, m.name, t.body, t.headers, t.state, t.attempts, t.exit_code, t.created_at, t.updated_at, t.parent_id, t.lost_host
		FROM tasks t JOIN modules m ON m.id = t.module_id WHERE t.id = ?`, taskID)
	t, err := scanTask(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("task %d: %w", taskID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", taskID, err)
	}
	t.Execs, err = b.Execs(ctx, taskID)
	return &t, err
}

// Execs returns a task's attempts in order.
func (b *Broker) Execs(ctx context.Context, taskID int64) ([]dataflow.Exec, error) {
	rows, err := b.r.QueryContext(ctx, `SELECT id, task_id, attempt, lease_gen, pilot_id, slot, host, exit_code, started_at, ended_at,
		stdout_tail, stderr_tail, auxout, note, timestamps, input_bytes, output_bytes, emitted, image,
		stage_in_bytes, stage_in_ms, stage_out_bytes, stage_out_ms
		FROM task_execs WHERE task_id = ? ORDER BY lease_gen`, taskID)
	if err != nil {
		return nil, fmt.Errorf("execs of task %d: %w", taskID, err)
	}
	defer rows.Close()
	var out []dataflow.Exec
	for rows.Next() {
		var e dataflow.Exec
		var pilot, started sql.NullInt64
		var slot, host, so, se, aux, note, ts, image sql.NullString
		var ended int64
		if err := rows.Scan(&e.ID, &e.TaskID, &e.Attempt, &e.Gen, &pilot, &slot, &host, &e.ExitCode, &started, &ended,
			&so, &se, &aux, &note, &ts, &e.InputBytes, &e.OutputBytes, &e.Emitted, &image,
			&e.StageInBytes, &e.StageInMS, &e.StageOutBytes, &e.StageOutMS); err != nil {
			return nil, err
		}
		e.PilotID, e.Image = pilot.Int64, image.String
		e.Slot, e.Host, e.StdoutTail, e.StderrTail, e.Auxout, e.Note = slot.String, host.String, so.String, se.String, aux.String, note.String
		e.StartedAt = nullTime(started)
		e.EndedAt = fromMS(ended)
		if ts.Valid && ts.String != "" {
			_ = json.Unmarshal([]byte(ts.String), &e.Timestamps)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// HasReady reports, from a reader, whether a module has a ready task. It
// lets a long poll skip a write when there is nothing to lease.
func (b *Broker) HasReady(ctx context.Context, appID int64, module string) (bool, error) {
	id, ok := b.moduleID(appID, module)
	if !ok {
		return false, fmt.Errorf("app %d has no module %q", appID, module)
	}
	var n int
	err := b.r.QueryRowContext(ctx, "SELECT EXISTS (SELECT 1 FROM tasks WHERE module_id = ? AND state = 'ready')", id).Scan(&n)
	return n == 1, err
}

// dataKey is a new task's cacheable input, for locality (dataflow.Module.DataKey).
func dataKey(m resolved) string {
	if m.def == nil || len(m.def.StageIn) == 0 {
		return ""
	}
	return m.def.DataKey(m.Body, m.Headers)
}
