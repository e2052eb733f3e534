package broker

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// queued waits until n ops wait behind the running group.
func queued(t *testing.T, b *Broker, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.qmu.Lock()
		got := len(b.queue)
		b.qmu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d ops queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockWriter starts a write that holds the turn until release is closed.
func blockWriter(t *testing.T, b *Broker) (release func(), done <-chan error) {
	t.Helper()
	running, hold, errc := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		errc <- b.write(context.Background(), func(*wtx) error { close(running); <-hold; return nil })
	}()
	<-running
	return func() { close(hold) }, errc
}

func TestWritesQueuedBehindACommitShareTheNextOne(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxBatch  int
		writers   int
		wantGroup int64 // groups after the blocking one
	}{
		{"one group", 0, 40, 1},
		{"bounded by MaxBatch", 16, 40, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Open(context.Background(), filepath.Join(t.TempDir(), "s.db"), Options{MaxBatch: tc.maxBatch})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			release, first := blockWriter(t, b)
			var mu sync.Mutex
			ran := 0
			var wg sync.WaitGroup
			errs := make(chan error, tc.writers)
			for range tc.writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- b.write(context.Background(), func(tx *wtx) error {
						mu.Lock()
						ran++
						mu.Unlock()
						_, err := tx.Exec("SELECT 1")
						return err
					})
				}()
			}
			queued(t, b, tc.writers)
			before := b.groups.Load()
			release()
			if err := <-first; err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if ran != tc.writers {
				t.Errorf("%d ops ran, want %d", ran, tc.writers)
			}
			if got := b.groups.Load() - before; got != tc.wantGroup {
				t.Errorf("the queued ops took %d commits, want %d", got, tc.wantGroup)
			}
			b.qmu.Lock()
			defer b.qmu.Unlock()
			if b.leading || len(b.queue) > 0 {
				t.Errorf("after the last write: leading %v, %d queued; want idle", b.leading, len(b.queue))
			}
		})
	}
}

func TestCloseCommitsQueuedWritesThenRefuses(t *testing.T) {
	b, err := Open(context.Background(), filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	release, first := blockWriter(t, b)
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- b.write(context.Background(), func(*wtx) error { return nil }) }()
	}
	queued(t, b, 3)
	closed := make(chan error)
	go func() { closed <- b.Close() }()
	// Close marks the broker closing before it waits; a write after that
	// is refused while the queued ones still commit.
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.qmu.Lock()
		closing := b.closing
		b.qmu.Unlock()
		if closing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Close did not start")
		}
		time.Sleep(time.Millisecond)
	}
	if err := b.write(context.Background(), func(*wtx) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Errorf("write during Close: %v, want ErrClosed", err)
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Errorf("queued write: %v, want committed", err)
		}
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A panicking operation fails alone, in a group of its own or with
// others, and the broker goes on committing.
func TestPanickingOpFailsAlone(t *testing.T) {
	b, err := Open(context.Background(), filepath.Join(t.TempDir(), "s.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	boom := func(*wtx) error { panic("boom") }
	if err := b.write(context.Background(), boom); err == nil || !strings.Contains(err.Error(), "panicked: boom") {
		t.Errorf("panicking op alone: %v, want its panic as an error", err)
	}
	release, first := blockWriter(t, b)
	errs := make(chan error, 2)
	go func() { errs <- b.write(context.Background(), boom) }()
	queued(t, b, 1)
	go func() { errs <- b.write(context.Background(), func(*wtx) error { return nil }) }()
	queued(t, b, 2)
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	got := []error{<-errs, <-errs}
	failed := 0
	for _, err := range got {
		if err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("group of a panicking and a plain op: errors %v, want exactly one", got)
	}
	if err := b.write(context.Background(), func(tx *wtx) error { _, err := tx.Exec("SELECT 1"); return err }); err != nil {
		t.Errorf("write after the panics: %v", err)
	}
}

// A group of lazy writes alone commits without a sync (synchronous=NORMAL,
// 1); any other write in the group, or alone, commits with the configured
// mode. The mode is read inside each op, on the connection committing it.
func TestOnlyLazyGroupsSkipTheSync(t *testing.T) {
	for _, configured := range []struct {
		name string
		want int // PRAGMA synchronous of a durable commit
	}{{"FULL", 2}, {"EXTRA", 3}, {"NORMAL", 1}} {
		t.Run(configured.name, func(t *testing.T) {
			b, err := Open(context.Background(), filepath.Join(t.TempDir(), "s.db"), Options{Synchronous: strings.ToLower(configured.name)})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			mode := func(got *int) func(tx *wtx) error {
				return func(tx *wtx) error { return tx.QueryRow("PRAGMA synchronous").Scan(got) }
			}
			var lazy, durable, afterLazy int
			if err := b.writeLazy(context.Background(), mode(&lazy)); err != nil {
				t.Fatal(err)
			}
			if err := b.write(context.Background(), mode(&durable)); err != nil {
				t.Fatal(err)
			}
			if lazy != 1 || durable != configured.want {
				t.Errorf("lazy write ran at synchronous=%d, durable at %d; want 1 and %d", lazy, durable, configured.want)
			}
			// Queued together, a lazy write commits with the durable one.
			release, first := blockWriter(t, b)
			errs := make(chan error, 2)
			var mixedLazy, mixedDurable int
			go func() { errs <- b.writeLazy(context.Background(), mode(&mixedLazy)) }()
			queued(t, b, 1)
			go func() { errs <- b.write(context.Background(), mode(&mixedDurable)) }()
			queued(t, b, 2)
			release()
			for _, c := range []<-chan error{first, errs, errs} {
				if err := <-c; err != nil {
					t.Fatal(err)
				}
			}
			if mixedLazy != configured.want || mixedDurable != configured.want {
				t.Errorf("mixed group ran at synchronous=%d/%d, want %d", mixedLazy, mixedDurable, configured.want)
			}
			if err := b.writeLazy(context.Background(), mode(&afterLazy)); err != nil || afterLazy != 1 {
				t.Errorf("lazy write after a mixed group: synchronous=%d (%v), want 1", afterLazy, err)
			}
		})
	}
}
