package pilot

import (
	"context"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// feeder keeps a buffer of leased tasks for one module's slots on this
// pilot, so a slot that finishes a task finds the next one waiting instead
// of paying a round trip to the head. The buffer holds about holdFor of
// work per slot (from the observed task durations), at least one task per
// slot and at most maxPerSlot: short tasks are fetched in large batches,
// long ones one at a time so they are not held away from other pilots.
type feeder struct {
	p        *Pilot
	module   string
	slots    int
	batch    int
	prefetch bool
	mu       sync.Mutex
	cond     *sync.Cond
	buf      []dataflow.LeasedTask
	avg      time.Duration // moving average of task run time
	closed   bool
	waiting  int // slots blocked in take
	wake     chan struct{}
	// maxRun is the module's task_max_seconds: a task is leased and
	// started only while it can finish before the pilot's end.
	maxRun time.Duration
}

// walltimeMargin is kept free at the end of a job for the last reports
// and a clean leave.
const walltimeMargin = 10 * time.Second

// timeLeft is how long a task started now may run before the job ends
// (a large value without an end time).
func (f *feeder) timeLeft() time.Duration {
	end := f.p.cfg.EndTime
	if end.IsZero() {
		return 1 << 62
	}
	return time.Until(end) - walltimeMargin - f.maxRun
}

const (
	holdFor    = 500 * time.Millisecond
	maxPerSlot = 64
)

func newFeeder(p *Pilot, pm api.PlannedModule) *feeder {
	f := &feeder{p: p, module: pm.Module.Name, slots: pm.Slots, batch: max(pm.Module.TaskBatchSize, 1),
		// With a check.sh or space rules, tasks wait for admission: lease
		// only for slots that asked, so they are not held away from other
		// pilots.
		prefetch: !hasCheckScript(pm.Module) && !hasSpaceRules(pm.Module), wake: make(chan struct{}, 1),
		maxRun: time.Duration(pm.Module.TaskMaxSeconds) * time.Second}
	f.cond = sync.NewCond(&f.mu)
	return f
}

// capacity is the buffer size to aim for; mu held.
//
// It counts tasks buffered beyond those slots are waiting for: none for
// tasks longer than holdFor (a buffered task would wait behind a running
// one while another pilot idles), none without prefetch (check.sh
// admission), two per slot until durations are known.
func (f *feeder) capacity() int {
	per := 0
	if f.prefetch {
		per = 2
		if f.avg > 0 {
			per = min(int(holdFor/f.avg), maxPerSlot)
		}
	}
	return f.slots * f.batch * per
}

// observe feeds a task's run time into the average.
func (f *feeder) observe(d time.Duration) {
	f.mu.Lock()
	if f.avg == 0 {
		f.avg = d
	} else {
		f.avg = (f.avg*7 + d) / 8
	}
	f.mu.Unlock()
}

// want is how many tasks to ask for now: none while the buffer is above
// half its capacity, so leases go out in batches.
func (f *feeder) want() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return 0
	}
	c := f.capacity()
	asked := f.waiting * f.batch
	need := max(c, asked)
	if len(f.buf) >= need || len(f.buf) > c/2 && len(f.buf) >= asked {
		return 0
	}
	return need - len(f.buf)
}

func (f *feeder) run(ctx context.Context) {
	defer f.close()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		left := f.timeLeft()
		if left <= 0 {
			f.p.log.Info("walltime: no more tasks fit before the job ends", "module", f.module,
				"end", f.p.cfg.EndTime.Format(time.RFC3339), "task_max_seconds", f.maxRun.Seconds())
			return
		}
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
			Wants: []dataflow.Want{{Module: f.module, Max: n}}, Wait: min(20*time.Second, left)})
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
		if res.Drain {
			f.p.log.Info("pilot drained: the pool has more pilots than work", "module", f.module)
			f.p.stop()
			return
		}
		f.p.appEnded(res.AppStatus)
		if len(res.Tasks) > 0 {
			f.p.hold(res.Tasks)
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
	// A buffered task that no longer fits is left for drain (released
	// unstarted, without counting an attempt).
	if f.timeLeft() <= 0 {
		f.poke() // the lease loop sees the time is up and closes
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
