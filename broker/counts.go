package broker

import (
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Task counts per module and state (table task_counts, read by `app
// status` so it never scans the tasks) are kept by the writer, not by
// triggers: each operation notes the moves it makes, and the net change
// of a commit group is written by one statement just before COMMIT. An
// operation rolled back to its savepoint takes its moves with it.

type countKey struct {
	module int64
	state  dataflow.TaskState
}

// moved notes n tasks of a module moved from one state to another; from
// "" is a new task.
func (t *wtx) moved(module int64, from, to dataflow.TaskState, n int) {
	if n == 0 || from == to {
		return
	}
	if t.moves == nil {
		t.moves = map[countKey]int{}
	}
	if from != "" {
		t.moves[countKey{module, from}] -= n
	}
	t.moves[countKey{module, to}] += n
}

// updateStates runs an UPDATE of tasks that sets prev_state = state and
// ends in stateReturning, notes its moves and returns how many rows it
// changed.
func (t *wtx) updateStates(query string, args ...any) (int, error) {
	rows, err := t.Query(query+stateReturning, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var module int64
		var from, to dataflow.TaskState
		if err := rows.Scan(&module, &from, &to); err != nil {
			return n, err
		}
		t.moved(module, from, to, 1)
		n++
	}
	return n, rows.Err()
}

const stateReturning = " RETURNING module_id, prev_state, state"

// endOp ends the running operation: kept, its moves join the group's;
// else they are dropped.
func (t *wtx) endOp(kept bool) {
	if kept {
		if t.group == nil {
			t.group = map[countKey]int{}
		}
		for k, n := range t.moves {
			t.group[k] += n
		}
	}
	clear(t.moves)
}

// flushCounts writes the group's net moves in one UPDATE; every module
// has a row per state from its creation (addCountRows), so no move needs
// an insert. (An upsert could not carry a negative delta: CHECK (n >= 0)
// is tested on the row it would insert.)
func (t *wtx) flushCounts() error {
	var deltas [][]any
	for k, n := range t.group {
		if n != 0 {
			deltas = append(deltas, []any{k.module, string(k.state), n})
		}
	}
	clear(t.group)
	_, err := bulkExec(t, "UPDATE task_counts SET n = n + d.column3 FROM (",
		") AS d WHERE task_counts.module_id = d.column1 AND task_counts.state = d.column2", 3, deltas)
	return err
}

// addCountRows gives a new module its count of 0 in every state.
func addCountRows(tx *wtx, module int64) error {
	rows := make([][]any, len(dataflow.AllTaskStates))
	for i, st := range dataflow.AllTaskStates {
		rows[i] = []any{module, string(st)}
	}
	_, err := bulkExec(tx, "INSERT INTO task_counts (module_id, state, n) SELECT column1, column2, 0 FROM (",
		") WHERE true ON CONFLICT (module_id, state) DO NOTHING", 2, rows)
	return err
}
