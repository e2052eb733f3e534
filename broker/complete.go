package broker

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// MaxRetryBackoff caps the delay between retries.
const MaxRetryBackoff = 10 * time.Minute

// Report is one batch from a pilot: tasks it started and attempts it ended.
type Report struct {
	PilotID     int64
	Started     []dataflow.Started
	Completions []dataflow.Completion
}

// Complete records a pilot's completions. Each one commits, in the same
// transaction, its exec record, the task's new state (through the retry
// rules on failure), and on success its emitted messages and deferred state
// changes: a task's messages exist if and only if its success is recorded.
// A completion whose lease is no longer held by this pilot at this
// generation changes nothing and is answered ReportStale.
func (b *Broker) Complete(ctx context.Context, r Report) ([]dataflow.CompletionResult, error) {
	// A task that started and ended within one report goes straight from
	// leased to its end state; only the others are marked running.
	ended := make(map[int64]bool, len(r.Completions))
	for _, c := range r.Completions {
		ended[c.TaskID] = true
	}
	running := make([]dataflow.Started, 0, len(r.Started))
	for _, st := range r.Started {
		if !ended[st.TaskID] {
			running = append(running, st)
		}
	}
	var results []dataflow.CompletionResult
	// apply completes the report; quiet (each task's place) takes the
	// path for plain successes, nil the general one.
	apply := func(quiet map[int64]int) func(tx *wtx) error {
		return func(tx *wtx) error {
			now := b.now()
			if err := markRunning(tx, r.PilotID, running, ms(now)); err != nil {
				return err
			}
			var err error
			if quiet != nil {
				results, err = b.completeQuiet(tx, now, r.PilotID, r.Completions, quiet)
			} else {
				results, err = b.completeBatch(tx, now, r.PilotID, r.Completions)
			}
			return err
		}
	}
	// A report of plain successes, the common one, first tries the path
	// that needs no read; if it finds anything else, that attempt rolls
	// back and the general path answers each completion.
	quiet := quietReport(r.Completions)
	err := b.write(ctx, apply(quiet))
	if quiet != nil && errors.Is(err, errNotQuiet) {
		err = b.write(ctx, apply(nil))
	}
	if err != nil {
		return nil, fmt.Errorf("complete: %w", err)
	}
	return results, nil
}

type taskRow struct {
	id, appID, moduleID int64
	state               dataflow.TaskState
	gen                 int64
	pilot               sql.NullInt64
	attempts            int
	failCounts          string
	headers             string
}

// taskRowColumns are what completion and rescue need of a task.
const taskRowColumns = `SELECT id, app_id, module_id, state, lease_gen, lease_pilot, attempts, fail_counts, headers FROM tasks `

// queryTaskRows reads the tasks selected by where.
func queryTaskRows(tx *wtx, where string, args ...any) ([]taskRow, error) {
	rows, err := tx.Query(taskRowColumns+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []taskRow
	for rows.Next() {
		var t taskRow
		if err := rows.Scan(&t.id, &t.appID, &t.moduleID, &t.state, &t.gen, &t.pilot, &t.attempts, &t.failCounts, &t.headers); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// loadTaskRows reads many tasks with one statement.
func loadTaskRows(tx *wtx, ids []int64) (map[int64]taskRow, error) {
	var list []taskRow
	var err error
	if len(ids) == 1 {
		list, err = queryTaskRows(tx, "WHERE id = ?", ids[0])
	} else {
		js, _ := json.Marshal(ids)
		list, err = queryTaskRows(tx, "WHERE id IN (SELECT value FROM json_each(?))", string(js))
	}
	out := make(map[int64]taskRow, len(list))
	for _, t := range list {
		out[t.id] = t
	}
	return out, err
}

// completeBatch applies a report's completions with a few set-based
// statements: one read of the tasks, one update for the successes, one
// insert of all exec records and one of all plain emitted messages.
// Failures (retry rules) and special messages (OVERWRITE, repeatable) take
// the per-row path.
func (b *Broker) completeBatch(tx *wtx, now time.Time, pilotID int64, cs []dataflow.Completion) ([]dataflow.CompletionResult, error) {
	results := make([]dataflow.CompletionResult, len(cs))
	ids := make([]int64, len(cs))
	for i, c := range cs {
		ids[i] = c.TaskID
	}
	rows, err := loadTaskRows(tx, ids)
	if err != nil {
		return nil, err
	}
	var succeeded []int64
	var execs []execRow
	var emitted []resolved
	var appOps []appOp
	for i, c := range cs {
		res := dataflow.CompletionResult{TaskID: c.TaskID}
		t, found := rows[c.TaskID]
		// A second completion of one task in the same batch finds it gone.
		delete(rows, c.TaskID)
		switch {
		case !found:
			res.Status, res.Error = dataflow.ReportStale, "no such task, or reported twice in one batch"
			results[i] = res
			continue
		case (t.state != dataflow.TaskLeased && t.state != dataflow.TaskRunning) || t.gen != c.Gen || !t.pilot.Valid || t.pilot.Int64 != pilotID:
			res.Status, res.State = dataflow.ReportStale, t.state
			res.Error = fmt.Sprintf("lease lost: task is %s at generation %d", t.state, t.gen)
			results[i] = res
			continue
		}
		mod := b.module(t.moduleID)
		if mod == nil {
			return nil, fmt.Errorf("task %d: module %d not loaded", t.id, t.moduleID)
		}
		var msgs []resolved
		if c.ExitCode == 0 {
			msgs, err = b.resolveMessages(t, mod, c)
			if err != nil {
				// A success that cannot deliver its output is a module error,
				// not retryable: the same script would emit the same lines.
				c.ExitCode = dataflow.ExitNotRetryable
				c.Note = strings.TrimSpace(c.Note + "\n" + err.Error())
				msgs = nil
			}
		}
		if c.ExitCode == 0 {
			for _, op := range c.Deferred {
				if op.Kind == "app" {
					appOps = append(appOps, appOp{t.appID, op})
					continue
				}
				if _, err := applyStateOp(tx, t.appID, op, ms(now)); err != nil {
					c.ExitCode = dataflow.ExitNotRetryable
					c.Note = strings.TrimSpace(c.Note + "\n" + "deferred " + op.Kind + " " + op.Op + " " + op.Name + ": " + err.Error())
					msgs = nil
					break
				}
			}
		}
		if c.ExitCode == 0 {
			succeeded = append(succeeded, t.id)
			tx.moved(t.moduleID, t.state, dataflow.TaskSucceeded, 1)
			res.State = dataflow.TaskSucceeded
			emitted = append(emitted, msgs...)
		} else {
			held := false
			if c.InputLost {
				if held, err = b.lostInput(tx, now, t, c.ExitCode); err != nil {
					return nil, err
				}
			}
			if held {
				res.State = dataflow.TaskInitial
				c.Note = strings.TrimSpace(c.Note + "\ninput missing on this node: its producer runs again, the task waits for it")
			} else if res.State, err = b.settle(tx, now, t, mod, c.ExitCode); err != nil {
				return nil, err
			}
		}
		execs = append(execs, newExecRow(t, pilotID, c, len(msgs)))
		if err := recordCached(tx, t.appID, c, ms(now)); err != nil {
			return nil, err
		}
		res.Status = dataflow.ReportAccepted
		results[i] = res
	}
	const succeed = succeedSet + ` WHERE id `
	switch len(succeeded) {
	case 0:
	case 1:
		if _, err := tx.Exec(succeed+"= ?2", ms(now), succeeded[0]); err != nil {
			return nil, err
		}
	default:
		js, _ := json.Marshal(succeeded)
		if _, err := tx.Exec(succeed+"IN (SELECT value FROM json_each(?2))", ms(now), string(js)); err != nil {
			return nil, err
		}
	}
	if err := insertExecs(tx, execs); err != nil {
		return nil, err
	}
	if _, err := b.insertTasks(tx, emitted, ms(now)); err != nil {
		return nil, err
	}
	// App changes (set-finished from inside a slot) come last, after the
	// task itself is recorded, so the task that ends the app is not
	// cancelled by it.
	for _, a := range appOps {
		if a.op.Op != "set-finished" {
			continue
		}
		if err := b.setAppStatus(tx, a.appID, dataflow.AppFinished, a.op.Value); err != nil && !errors.Is(err, ErrAppEnded) {
			return nil, err
		}
	}
	return results, nil
}

// succeedSet ends the lease of a succeeded task (?1 = now); both
// completion paths add which tasks.
const succeedSet = `UPDATE tasks SET prev_state = state, state = 'succeeded', exit_code = 0, attempts = attempts + 1, lease_pilot = NULL,
	lease_slot = NULL, lease_deadline = NULL, updated_at = ?1`

// succeedReturning moves the tasks of a JSON list of [id, gen] pairs
// whose lease this pilot holds at that generation to succeeded, and
// returns what completeBatch would otherwise have read before: the state
// left (prev_state), the attempts before this one, the headers. The
// join reads json_each first and finds each task by its id.
const succeedReturning = succeedSet + `
	FROM (SELECT value ->> 0 AS id, value ->> 1 AS gen FROM json_each(?2)) AS c
	WHERE tasks.id = c.id AND tasks.lease_gen = c.gen AND tasks.lease_pilot = ?3 AND tasks.state IN ('leased', 'running')
	RETURNING tasks.id, tasks.app_id, tasks.module_id, tasks.prev_state, tasks.lease_gen, tasks.attempts - 1, tasks.headers`

// errNotQuiet is completeQuiet finding a completion that is not a plain
// success; its operation rolls back.
var errNotQuiet = errors.New("report is not of plain successes")

// quietReport returns, when every completion is a success with no
// deferred state change, each of a different task (the reports
// completeQuiet can apply), each task's place in cs; else nil.
func quietReport(cs []dataflow.Completion) map[int64]int {
	at := make(map[int64]int, len(cs))
	for i, c := range cs {
		if _, twice := at[c.TaskID]; twice || c.ExitCode != 0 || len(c.Deferred) > 0 {
			return nil
		}
		at[c.TaskID] = i
	}
	if len(at) == 0 {
		return nil
	}
	return at
}

// completeQuiet applies a quietReport by one UPDATE ... RETURNING instead
// of a read and an update. It returns errNotQuiet when any completion
// would be answered otherwise than as a plain success (a stale lease,
// output that cannot be delivered); its caller's operation then rolls
// back, changes included.
func (b *Broker) completeQuiet(tx *wtx, now time.Time, pilotID int64, cs []dataflow.Completion, at map[int64]int) ([]dataflow.CompletionResult, error) {
	pairs := make([][2]int64, len(cs))
	for i, c := range cs {
		pairs[i] = [2]int64{c.TaskID, c.Gen}
	}
	js, _ := json.Marshal(pairs)
	rows, err := tx.Query(succeedReturning, ms(now), string(js), pilotID)
	if err != nil {
		return nil, err
	}
	done := make([]taskRow, len(cs))
	n := 0
	for rows.Next() {
		var t taskRow
		if err := rows.Scan(&t.id, &t.appID, &t.moduleID, &t.state, &t.gen, &t.attempts, &t.headers); err != nil {
			rows.Close()
			return nil, err
		}
		done[at[t.id]] = t
		n++
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if n != len(cs) {
		return nil, errNotQuiet
	}
	results := make([]dataflow.CompletionResult, len(cs))
	execs := make([]execRow, len(cs))
	var emitted []resolved
	for i, c := range cs {
		t := done[i]
		mod := b.module(t.moduleID)
		if mod == nil {
			return nil, fmt.Errorf("task %d: module %d not loaded", t.id, t.moduleID)
		}
		msgs, err := b.resolveMessages(t, mod, c)
		if err != nil {
			return nil, errNotQuiet
		}
		emitted = append(emitted, msgs...)
		execs[i] = newExecRow(t, pilotID, c, len(msgs))
		results[i] = dataflow.CompletionResult{TaskID: c.TaskID, Status: dataflow.ReportAccepted, State: dataflow.TaskSucceeded}
		tx.moved(t.moduleID, t.state, dataflow.TaskSucceeded, 1)
		if err := recordCached(tx, t.appID, c, ms(now)); err != nil {
			return nil, err
		}
	}
	if err := insertExecs(tx, execs); err != nil {
		return nil, err
	}
	if _, err := b.insertTasks(tx, emitted, ms(now)); err != nil {
		return nil, err
	}
	return results, nil
}

type appOp struct {
	appID int64
	op    dataflow.StateOp
}

type resolved struct {
	dataflow.Message
	appID, moduleID int64
	// def is the target module, found when the message was resolved, so
	// inserting needs no lookup per row.
	def *dataflow.Module
	// parentID is the task that emitted the message (0: none); bound is
	// set when the head bound it to that task's node, where its input is.
	parentID int64
	bound    bool
}

// parent and boundFlag are the lineage columns' values (migration 0007).
func (r resolved) parent() any {
	if r.parentID == 0 {
		return nil
	}
	return r.parentID
}

func (r resolved) boundFlag() int {
	if r.bound {
		return 1
	}
	return 0
}

// resolveMessages gives each emitted message its destination module and
// the headers the system adds (from_module, from_host, passed-through _*).
func (b *Broker) resolveMessages(t taskRow, mod *moduleInfo, c dataflow.Completion) ([]resolved, error) {
	if len(c.Messages) == 0 {
		return nil, nil
	}
	def, _, err := b.App(t.appID)
	if err != nil {
		return nil, err
	}
	in, _ := dataflow.ParseHeaders(t.headers)
	isRouter := def.Parameters.MainRouter == mod.def.Name
	out := make([]resolved, 0, len(c.Messages))
	for i, m := range c.Messages {
		name := m.Module
		if name == "" {
			name = def.DefaultSink(mod.def)
		}
		if name == "" {
			return nil, fmt.Errorf("sink-tasks line %d (%q): module %q has no sink_modules and the app has no main_router; name the target module", i+1, m.Body, mod.def.Name)
		}
		id, ok := b.moduleID(t.appID, name)
		if !ok {
			return nil, fmt.Errorf("sink-tasks line %d (%q): module %q does not exist", i+1, m.Body, name)
		}
		if m.Body == "" {
			return nil, fmt.Errorf("sink-tasks line %d: empty body", i+1)
		}
		h := dataflow.Headers{}
		for k, v := range in {
			if strings.HasPrefix(k, "_") {
				h[k] = v
			}
		}
		for k, v := range m.Headers {
			h[k] = v
		}
		h[dataflow.HeaderFromModule] = mod.def.Name
		if c.Host != "" {
			h[dataflow.HeaderFromHost] = c.Host
		}
		if isRouter && in[dataflow.HeaderFromModule] != "" {
			h[dataflow.HeaderFromModuleLast] = in[dataflow.HeaderFromModule]
		}
		// A HOST-BOUND module's task runs where its data is: the host the
		// sender names, else the host that produced it. So does a module
		// reading a node tier (local:, mem:) when the sender staged its
		// output to one: no other node can read it.
		target := def.Module(name)
		bound := target != nil && (target.DistMode == dataflow.DistHostBound || c.DataOnNode && target.ReadsNodeTier())
		boundHere := bound && h[dataflow.HeaderToHost] == "" && c.Host != ""
		if boundHere {
			h[dataflow.HeaderToHost] = c.Host
		}
		out = append(out, resolved{Message: dataflow.Message{Module: name, Body: m.Body, Headers: h}, appID: t.appID, moduleID: id, def: target,
			parentID: t.id, bound: boundHere})
	}
	return out, nil
}

// settle moves a failed attempt's task (code != 0) to its next state:
// retrying (with backoff) while its retry rules allow, else failed.
func (b *Broker) settle(tx *wtx, now time.Time, t taskRow, mod *moduleInfo, code int) (dataflow.TaskState, error) {
	nowMS := ms(now)
	counts := map[string]int{}
	_ = json.Unmarshal([]byte(t.failCounts), &counts)
	rules := mod.def.RetryRules
	key := rules.Key(code)
	used := counts[key]
	if used >= rules.Allowed(code) {
		_, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'failed', exit_code = ?, attempts = attempts + 1, lease_pilot = NULL,
			lease_slot = NULL, lease_deadline = NULL, updated_at = ? WHERE id = ?`, code, nowMS, t.id)
		return dataflow.TaskFailed, err
	}
	counts[key] = used + 1
	cj, _ := json.Marshal(counts)
	b.rndMu.Lock()
	delay := dataflow.Backoff(used+1, time.Duration(mod.def.RetryBackoff), MaxRetryBackoff, b.opts.Rand)
	b.rndMu.Unlock()
	if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'retrying', exit_code = ?, attempts = attempts + 1, fail_counts = ?, available_at = ?,
		lease_pilot = NULL, lease_slot = NULL, lease_deadline = NULL, updated_at = ? WHERE id = ?`,
		code, string(cj), ms(now.Add(delay)), nowMS, t.id); err != nil {
		return "", err
	}
	if delay == 0 {
		if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'ready' WHERE id = ?`, t.id); err != nil {
			return "", err
		}
		b.markReady(t.moduleID)
		return dataflow.TaskReady, nil
	}
	return dataflow.TaskRetrying, nil
}

// execRow is one task_execs row.
type execRow []any

func newExecRow(t taskRow, pilotID int64, c dataflow.Completion, emitted int) execRow {
	var ts, started any
	if len(c.Timestamps) > 0 {
		b, _ := json.Marshal(c.Timestamps)
		ts = string(b)
	}
	if !c.StartedAt.IsZero() {
		started = ms(c.StartedAt)
	}
	ended := c.EndedAt
	if ended.IsZero() {
		ended = time.Now()
	}
	return execRow{t.id, t.appID, t.moduleID, t.attempts + 1, t.gen, pilotID, nullStr(c.Slot), nullStr(c.Host), c.ExitCode,
		started, ms(ended), nullStr(c.StdoutTail), nullStr(c.StderrTail), nullStr(c.Auxout), nullStr(c.Note), ts,
		c.InputBytes, c.OutputBytes, emitted, nullStr(c.Image), c.StageInBytes, c.StageInMS, c.StageOutBytes, c.StageOutMS}
}

// execLean are the exec columns every record sets; a record with nothing
// else but emitted (no output tails, notes, timestamps, bytes, image: a
// quiet success) goes in a statement of these alone, with half the
// parameters to bind. execEmitted is emitted's place in an execRow.
const (
	execLean    = 11
	execEmitted = 18
)

// insertExecs adds exec records in multi-row statements.
func insertExecs(tx *wtx, rows []execRow) error {
	if len(rows) == 0 {
		return nil
	}
	var lean, full [][]any
	for _, r := range rows {
		if isLean(r) {
			lean = append(lean, append(r[:execLean:execLean], r[execEmitted]))
		} else {
			full = append(full, r)
		}
	}
	if _, err := bulkExec(tx, `INSERT INTO task_execs (task_id, app_id, module_id, attempt, lease_gen, pilot_id, slot, host, exit_code,
			started_at, ended_at, emitted)`, "", execLean+1, lean); err != nil {
		return err
	}
	_, err := bulkExec(tx, `INSERT INTO task_execs (task_id, app_id, module_id, attempt, lease_gen, pilot_id, slot, host, exit_code,
			started_at, ended_at, stdout_tail, stderr_tail, auxout, note, timestamps, input_bytes, output_bytes, emitted, image,
			stage_in_bytes, stage_in_ms, stage_out_bytes, stage_out_ms)`, "", 24, full)
	return err
}

// isLean reports whether an exec row has only the lean columns and
// emitted set.
func isLean(r execRow) bool {
	for i := execLean; i < len(r); i++ {
		if i == execEmitted {
			continue
		}
		switch v := r[i].(type) {
		case nil:
		case int64:
			if v != 0 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// recordCached notes what an attempt left in or evicted from its node's
// cache. A stale row only costs a preference that does not pay off.
func recordCached(tx *wtx, appID int64, c dataflow.Completion, now int64) error {
	if c.Host == "" {
		return nil
	}
	for _, k := range c.Cached {
		if _, err := tx.Exec(`INSERT INTO cached (app_id, host, data_key, at) VALUES (?, ?, ?, ?)
			ON CONFLICT (app_id, host, data_key) DO UPDATE SET at = excluded.at`, appID, c.Host, k, now); err != nil {
			return err
		}
	}
	for _, k := range c.Uncached {
		if _, err := tx.Exec(`DELETE FROM cached WHERE app_id = ? AND host = ? AND data_key = ?`, appID, c.Host, k); err != nil {
			return err
		}
	}
	return nil
}
