// Package broker is the SQLite store that is also the app's message broker:
// schema migrations, the task state machine, leases with fencing, group
// commits through one writer, retries, dedup, semaphores, variables and
// exec records. It is the only package with SQL.
package broker

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/mattn/go-sqlite3" // the driver
)

//go:embed migrations/*.sql
var migrations embed.FS

// Options tune a Broker.
type Options struct {
	// Synchronous is SQLite's synchronous setting: FULL (default, every
	// commit survives power loss, except that leases and heartbeats alone
	// in a commit wait for the next synced one: writeLazy) or NORMAL (a
	// commit may be lost on power loss, never on a process crash).
	Synchronous string
	// MaxBatch bounds the operations grouped into one commit.
	MaxBatch int
	// Now is the clock; tests inject one.
	Now func() time.Time
	// Rand drives retry jitter.
	Rand *rand.Rand
	// Strict adds checks for tests, on the writer's connection only: a
	// task's state may change only in an UPDATE that records the state it
	// left in prev_state (migration 0006), so the CHECK on transitions
	// sees every one. Also set by SCALEBOX_STRICT=1 (make test, CI).
	Strict bool
}

// strictTrigger is Options.Strict's check; TEMP, so it is never stored.
const strictTrigger = `CREATE TEMP TRIGGER strict_prev_state BEFORE UPDATE OF state ON main.tasks
	WHEN NEW.state <> OLD.state AND NEW.prev_state IS NOT OLD.state
	BEGIN SELECT RAISE(ABORT, 'task state changed without prev_state = state'); END`

// Broker owns one SQLite database.
type Broker struct {
	w    *sql.DB // holds the one writer connection
	wtx  *wtx    // that connection, used only by the caller holding the turn (writer.go)
	r    *sql.DB // readers
	path string
	opts Options

	// Writes are committed by their callers, one at a time (see writeOp):
	// qmu guards the queue of waiting operations and the leading flag,
	// set while some caller is committing.
	qmu     sync.Mutex
	queue   []*op
	leading bool
	closing bool
	idle    *sync.Cond   // on qmu; broadcast when leading is cleared
	batch   []*op        // the leader's scratch slice
	groups  atomic.Int64 // commits of groups, for tests

	mu      sync.Mutex
	modules map[int64]*moduleInfo // by module id
	byName  map[appModule]int64
	apps    map[int64]*appInfo
	// ready holds one channel per module, closed and replaced when tasks of
	// that module may have become ready, so a long-polling lease wakes only
	// for its own module.
	ready map[int64]chan struct{}
	// touched collects, inside a commit, the modules given ready tasks by
	// the group being committed.
	touched map[int64]bool
	// holding marks the apps that may have tasks held for lost input
	// (reproduce.go): their emitted messages first try to release one.
	// Only the caller holding the writer's turn uses it.
	holding map[int64]bool
	rndMu   sync.Mutex
}

// ErrNotFound is returned for a missing app, task, semaphore or variable.
var ErrNotFound = errors.New("not found")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("broker closed")

// Open opens (creating and migrating if needed) the database at path.
func Open(ctx context.Context, path string, opts Options) (*Broker, error) {
	if opts.Synchronous == "" {
		opts.Synchronous = "FULL"
	}
	opts.Synchronous = strings.ToUpper(opts.Synchronous)
	switch opts.Synchronous {
	case "FULL", "NORMAL", "EXTRA":
	default:
		return nil, fmt.Errorf("open broker: synchronous %q must be FULL, NORMAL or EXTRA", opts.Synchronous)
	}
	opts.Strict = opts.Strict || os.Getenv("SCALEBOX_STRICT") == "1"
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	}
	if err := registerQPSG(); err != nil {
		return nil, fmt.Errorf("open broker: %w", err)
	}
	q := url.Values{}
	q.Set("scalebox_qpsg", "1") // qpsg.go
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", opts.Synchronous)
	q.Set("_busy_timeout", "10000")
	q.Set("_foreign_keys", "on")
	q.Set("_txlock", "immediate")
	// Statements on tasks compile their CHECKs and the transition trigger
	// when prepared; reusing prepared statements keeps that off the hot path.
	q.Set("_stmt_cache_size", "64")
	w, err := sql.Open("sqlite3", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open broker: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("open broker %s: %w", path, err)
	}
	rq := url.Values{}
	rq.Set("scalebox_qpsg", "1")
	rq.Set("_busy_timeout", "10000")
	rq.Set("_query_only", "1")
	rq.Set("_stmt_cache_size", "32")
	r, err := sql.Open("sqlite3", "file:"+path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open broker readers: %w", err)
	}
	r.SetMaxOpenConns(8)
	// The WAL is checkpointed by the writer itself, inline, every 1000
	// pages (SQLite's default). A checkpointer on its own connection never
	// catches up with a writer that keeps appending, so the WAL was never
	// restarted and every commit extended the file (TestWALStaysBounded).
	b := &Broker{
		w: w, r: r, path: path, opts: opts,
		modules: map[int64]*moduleInfo{},
		byName:  map[appModule]int64{},
		apps:    map[int64]*appInfo{},
		ready:   map[int64]chan struct{}{},
		touched: map[int64]bool{},
		holding: map[int64]bool{},
	}
	if err := b.loadCache(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, err
	}
	wc, err := w.Conn(ctx)
	if err == nil && opts.Strict {
		_, err = wc.ExecContext(ctx, strictTrigger)
	}
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("open broker: %w", err)
	}
	b.wtx = &wtx{c: wc}
	b.idle = sync.NewCond(&b.qmu)
	if err := b.loadHolding(b.wtx); err != nil {
		wc.Close()
		r.Close()
		w.Close()
		return nil, fmt.Errorf("open broker: %w", err)
	}
	return b, nil
}

// Path is the database file.
func (b *Broker) Path() string { return b.path }

// Close refuses new writes, waits for the queued ones to commit and
// closes the database.
func (b *Broker) Close() error {
	b.qmu.Lock()
	first := !b.closing
	b.closing = true
	for b.leading {
		b.idle.Wait()
	}
	b.qmu.Unlock()
	if !first {
		return nil
	}
	return errors.Join(b.r.Close(), b.wtx.c.Close(), b.w.Close())
}

func migrate(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	entries, err := migrations.ReadDir("migrations")
	if err != nil {
		return err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	if version > len(names) {
		return fmt.Errorf("database schema version %d is newer than this scalebox (%d); upgrade scalebox", version, len(names))
	}
	for i := version; i < len(names); i++ {
		body, err := migrations.ReadFile("migrations/" + names[i])
		if err != nil {
			return err
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", names[i], err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", i+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", names[i], err)
		}
	}
	return nil
}

func (b *Broker) now() time.Time { return b.opts.Now() }

func ms(t time.Time) int64 { return t.UnixMilli() }

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func nullTime(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := fromMS(v.Int64)
	return &t
}

// CheckLocalFS refuses a directory on a network filesystem, where SQLite's
// WAL locking does not work and the database would be corrupted.
func CheckLocalFS(dir string) error {
	fs, err := filesystemType(dir)
	if err != nil {
		return fmt.Errorf("check state dir %s: %w", dir, err)
	}
	if fs != "" {
		return fmt.Errorf("state dir %s is on %s: SQLite's WAL needs a node-local filesystem (all readers and the writer on one host); put --state-dir on the head node's local disk", dir, fs)
	}
	return nil
}

// EnsureDir creates a private state directory (0700).
func EnsureDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// DBPath is the database file inside a state dir.
func DBPath(stateDir string) string { return filepath.Join(stateDir, "scalebox.db") }
