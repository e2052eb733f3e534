package pilot

import (
	"context"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// feeder keeps a small buffer of leased tasks for one module's slots on
// this pilot, so a slot that finishes a task finds the next one waiting
// instead of paying a round trip to the head.
type feeder struct {
	p        *Pilot
	module   string
	capacity int // leased, not yet started
	mu       sync.Mutex
	cond     *sync.Cond
	buf      []dataflow.LeasedTask
	waiting  int // slots blocked in take
	closed   bool
	wake     chan struct{}
}

func newFeeder(p *Pilot, pm api.PlannedModule) *feeder {
	batch := max(pm.Module.TaskBatchSize, 1)
	capacity := pm.Slots * batch
	// With a check.sh, tasks wait for admission: lease only for slots that
	// asked, so they are not held away from other pilots.
	if !hasCheckScript(pm.Module) {
		capacity *= 2
	}
	f := &feeder{p: p, module: pm.Module.Name, capacity: capacity, wake: make(chan struct{}, 1)}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// want is how many tasks to ask for now.
func (f *feeder) want() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0
	}
	return f.capacity - len(f.buf)
}

func (f *feeder) run(ctx context.Context) {
	defer f.close()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		n := f.want()
		if n <= 0 {
			select {
			case <-f.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		res, err := f.p.cfg.Client.Lease(ctx, f.p.reg.PilotID, api.Lease{
			Wants: []dataflow.Want{{Module: f.module, Max: n}}, Wait: 20 * time.Second})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if api.IsConflict(err) || api.IsNotFound(err) {
				f.p.appEnded(dataflow.AppCancelled)
				return
			}
			f.p.log.Warn("lease failed; retrying", "module", f.module, "err", err, "in", backoff)
			if sleepCtx(ctx, jitter(backoff)) != nil {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		f.p.appEnded(res.AppStatus)
		if len(res.Tasks) > 0 {
			f.put(res.Tasks)
		}
		if res.AppStatus.Done() {
			return
		}
	}
}

func (f *feeder) put(ts []dataflow.LeasedTask) {
	f.mu.Lock()
	f.buf = append(f.buf, ts...)
	f.mu.Unlock()
	f.cond.Broadcast()
}

// take blocks for up to n tasks; nil means the feeder closed.
func (f *feeder) take(n int) []dataflow.LeasedTask {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.buf) == 0 && !f.closed {
		f.waiting++
		f.poke()
		f.cond.Wait()
		f.waiting--
	}
	if len(f.buf) == 0 {
		return nil
	}
	n = min(n, len(f.buf))
	out := append([]dataflow.LeasedTask(nil), f.buf[:n]...)
	f.buf = f.buf[n:]
	f.poke()
	return out
}

// poke tells the lease loop there is room (mu held or not; non-blocking).
func (f *feeder) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *feeder) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.cond.Broadcast()
}

// drain returns the tasks leased but never started.
func (f *feeder) drain() []dataflow.LeasedTask {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := f.buf
	f.buf = nil
	return out
}
