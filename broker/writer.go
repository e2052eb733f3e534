package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// op is one unit of work for the writer. fn runs inside the group's
// transaction under its own savepoint: an error rolls back this op only.
type op struct {
	ctx    context.Context
	fn     func(tx *wtx) error
	err    error
	signal bool          // tasks may have become ready
	lazy   bool          // may commit without a sync of its own (writeLazy)
	done   chan struct{} // closed once the op's group has committed or failed
	lead   chan struct{} // closed when this op's caller is to commit the next group
}

// write queues fn and waits for its group to commit.
func (b *Broker) write(ctx context.Context, fn func(tx *wtx) error) error {
	return b.writeOp(ctx, &op{fn: fn})
}

// writeReady is write for operations that may make tasks ready: waiting
// leases are woken after the commit.
func (b *Broker) writeReady(ctx context.Context, fn func(tx *wtx) error) error {
	return b.writeOp(ctx, &op{fn: fn, signal: true})
}

// writeLazy is write for state that may be lost with the machine's page
// cache (an OS crash or power cut; a killed process loses nothing): a
// group of such writes alone commits with synchronous=NORMAL, no sync of
// its own, and becomes durable with the next synced commit, since the
// WAL is one file appended in order and a sync covers every frame before
// it. Leases and heartbeats are such state (docs/design-decisions.md):
// a lease lost so leaves its task ready, to be leased again, and the
// report of the attempt that ran meanwhile is refused as stale; a lost
// heartbeat only leaves a deadline earlier. Neither loses a task, a
// result or a message, or records one twice.
func (b *Broker) writeLazy(ctx context.Context, fn func(tx *wtx) error) error {
	return b.writeOp(ctx, &op{fn: fn, lazy: true})
}

// writeOp commits fn on the caller's goroutine when no other commit is
// running, and otherwise queues it for the next group. Whoever commits a
// group hands the turn to the caller of the oldest queued op, so every
// group is one commit of all that queued behind the one before. A
// dedicated writer goroutine cost two goroutine wake-ups per commit;
// with one caller at a time (a pilot at batch 1) each of those was a
// futex wake of an idle thread, a fifth of the CPU of a lifecycle and
// most of the gap to goqite, which commits on the caller's goroutine.
func (b *Broker) writeOp(ctx context.Context, o *op) error {
	o.ctx, o.done, o.lead = ctx, make(chan struct{}), make(chan struct{})
	b.qmu.Lock()
	if b.closing {
		b.qmu.Unlock()
		return ErrClosed
	}
	b.queue = append(b.queue, o)
	leader := !b.leading
	b.leading = true
	b.qmu.Unlock()
	if !leader {
		// Wait even when ctx ends first: the group skips an op whose
		// context ended before it ran, but one already running finishes,
		// and its closure writes the caller's variables (returning early
		// was a data race the race detector found in Rescue at shutdown).
		select {
		case <-o.done:
			return o.err
		case <-o.lead:
		}
	}
	b.lead()
	<-o.done
	return o.err
}

// lead commits the queued ops (at most MaxBatch) as one group, then
// passes the turn to the oldest op still queued, or clears leading.
// Only the one caller holding the turn runs it.
func (b *Broker) lead() {
	b.qmu.Lock()
	n := min(len(b.queue), b.opts.MaxBatch)
	batch := append(b.batch[:0], b.queue[:n]...)
	rest := copy(b.queue, b.queue[n:])
	clear(b.queue[rest:])
	b.queue = b.queue[:rest]
	b.qmu.Unlock()

	// The turn passes on even if the commit panics, so no later write
	// waits for a turn that never comes.
	defer func() {
		clear(batch)
		b.batch = batch
		b.qmu.Lock()
		if len(b.queue) > 0 {
			close(b.queue[0].lead)
		} else {
			b.leading = false
			b.idle.Broadcast()
		}
		b.qmu.Unlock()
	}()
	b.commit(batch)
}

func (b *Broker) commit(batch []*op) {
	b.groups.Add(1)
	// Every waiter is released, whatever happens below.
	defer func() {
		for _, o := range batch {
			close(o.done)
		}
	}()
	committed, err := b.runGroup(batch)
	signal := false
	for _, o := range batch {
		if err != nil && o.err == nil {
			o.err = fmt.Errorf("commit: %w", err)
		}
		if o.err == nil {
			signal = signal || o.signal
		}
	}
	if err != nil {
		b.reloadCache()
	}
	if committed {
		b.signalReady(signal)
	} else {
		clear(b.touched)
	}
}

// runGroup runs the ops in one transaction and commits it; each op keeps
// its own error, err is the group's. A panic outside the ops (which run
// guarded) fails the group instead of escaping into whichever caller was
// committing it: that may be an HTTP handler whose panic is recovered,
// and a transaction left open with the turn held would hang every later
// write.
func (b *Broker) runGroup(batch []*op) (committed bool, err error) {
	tx := b.wtx
	defer func() {
		if r := recover(); r != nil {
			committed, err = false, fmt.Errorf("broker commit panicked: %v", r)
			clear(tx.moves)
			clear(tx.group)
			tx.rollback()
		}
	}()
	lazy := b.opts.Synchronous != "NORMAL"
	for _, o := range batch {
		lazy = lazy && o.lazy
	}
	if err := tx.setLazy(lazy, b.opts.Synchronous); err != nil {
		return false, err
	}
	if _, err := tx.Exec("BEGIN IMMEDIATE"); err != nil {
		return false, err
	}
	if len(batch) == 1 {
		// Alone in its group, an op needs no savepoint: its error rolls
		// the whole transaction back.
		o := batch[0]
		if o.err = o.ctx.Err(); o.err == nil {
			o.err = runGuarded(tx, o.fn)
		}
		tx.endOp(o.err == nil)
		if o.err != nil {
			// Ops change the in-memory cache only as their last step, so
			// a failed op left it as it was.
			tx.rollback()
			return false, nil
		}
	} else {
		for _, o := range batch {
			if o.ctx.Err() != nil {
				o.err = o.ctx.Err()
				continue
			}
			o.err = runSavepoint(tx, o.fn)
			tx.endOp(o.err == nil)
		}
	}
	if err = tx.flushCounts(); err == nil {
		_, err = tx.Exec("COMMIT")
	}
	if err != nil {
		tx.rollback()
		return false, err
	}
	return true, nil
}

// wtx is the writer's transaction: BEGIN and COMMIT are SQL on the one
// writer connection rather than a database/sql Tx, because a Tx starts a
// goroutine to watch its context and so does every query made in it;
// on a queue of short commits those goroutines and their wake-ups were
// a measurable share of each call.
type wtx struct {
	c *sql.Conn
	// moves and group are the task count changes of the running
	// operation and of the group's kept ones (counts.go).
	moves, group map[countKey]int
	// lazy is set while the connection runs with synchronous=NORMAL for
	// a group of writeLazy operations.
	lazy bool
}

// setLazy switches the connection between synchronous=NORMAL and the
// configured mode, between transactions (where SQLite allows it).
func (t *wtx) setLazy(lazy bool, configured string) error {
	if lazy == t.lazy {
		return nil
	}
	mode := configured
	if lazy {
		mode = "NORMAL"
	}
	if _, err := t.Exec("PRAGMA synchronous = " + mode); err != nil {
		return fmt.Errorf("synchronous=%s: %w", mode, err)
	}
	t.lazy = lazy
	return nil
}

func (t *wtx) Exec(query string, args ...any) (sql.Result, error) {
	return t.c.ExecContext(context.Background(), query, args...)
}

func (t *wtx) Query(query string, args ...any) (*sql.Rows, error) {
	return t.c.QueryContext(context.Background(), query, args...)
}

func (t *wtx) QueryRow(query string, args ...any) *sql.Row {
	return t.c.QueryRowContext(context.Background(), query, args...)
}

// rollback ends a failed transaction. SQLite may have rolled it back
// already (some errors do), so "no transaction" is not an error here.
func (t *wtx) rollback() { t.Exec("ROLLBACK") }

// runGuarded runs fn, turning a panic into an error.
func runGuarded(tx *wtx, fn func(tx *wtx) error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("broker operation panicked: %v", r)
		}
	}()
	return fn(tx)
}

func runSavepoint(tx *wtx, fn func(tx *wtx) error) (err error) {
	if _, err := tx.Exec("SAVEPOINT op"); err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("broker operation panicked: %v", r)
		}
		if err != nil {
			if _, rerr := tx.Exec("ROLLBACK TO op"); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		if _, rerr := tx.Exec("RELEASE op"); rerr != nil && err == nil {
			err = rerr
		}
	}()
	return fn(tx)
}

// Ready returns a channel closed the next time tasks of the module may
// have become ready.
func (b *Broker) Ready(appID int64, module string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := b.byName[appModule{appID, module}]
	ch := b.ready[id]
	if ch == nil {
		ch = make(chan struct{})
		b.ready[id] = ch
	}
	return ch
}

// markReady notes, inside a commit, that a module got a ready task.
func (b *Broker) markReady(moduleID int64) { b.touched[moduleID] = true }

// signalReady wakes the modules touched by the committed group, or every
// module when all is set (rescues, releases: tasks of any module).
func (b *Broker) signalReady(all bool) {
	b.mu.Lock()
	for id, ch := range b.ready {
		if all || b.touched[id] {
			close(ch)
			delete(b.ready, id)
		}
	}
	b.mu.Unlock()
	clear(b.touched)
}
