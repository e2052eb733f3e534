package pilot

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Report batching: completions go when maxBatch of them wait or the oldest
// has waited flushAfter. Each report is one durable commit on the head, so
// the wait sets how many completions share one: at 10 ms a busy pilot of
// short tasks sent 3-4 per report and the head's commits were a quarter of
// the run's overhead; 50 ms gave 12-15 % more end-to-end throughput
// (bench/e2e) for 40 ms more latency per pipeline hop, which no task
// longer than a second notices. A "started" note is held for startedDelay
// and dropped if the task ends first: for short tasks the running state
// would cost a write per task and tell nobody anything.
const (
	maxBatch     = 256
	flushAfter   = 50 * time.Millisecond
	startedDelay = time.Second
)

type startedNote struct {
	dataflow.Started
	at time.Time
}

// reporter sends started notes and completions to the head in batches and
// keeps retrying while the head is unreachable: the fencing generation
// makes a repeated report harmless.
type reporter struct {
	client   *api.Client
	pilotID  int64
	log      *slog.Logger
	onStatus func(dataflow.AppStatus)
	answered func(ids []int64) // completions the head has answered

	mu      sync.Mutex
	started []startedNote // oldest first
	done    []dataflow.Completion
	first   time.Time // when the oldest waiting completion arrived
	kick    chan struct{}
	sending bool
}

func newReporter(c *api.Client, pilotID int64, log *slog.Logger, onStatus func(dataflow.AppStatus), answered func([]int64)) *reporter {
	return &reporter{client: c, pilotID: pilotID, log: log, onStatus: onStatus, answered: answered, kick: make(chan struct{}, 1)}
}

func (r *reporter) addStarted(s dataflow.Started) {
	r.mu.Lock()
	r.started = append(r.started, startedNote{s, time.Now()})
	r.mu.Unlock()
	r.poke()
}

func (r *reporter) addCompletion(c dataflow.Completion) {
	r.mu.Lock()
	if len(r.done) == 0 {
		r.first = time.Now()
	}
	r.done = append(r.done, c)
	for i, s := range r.started {
		if s.TaskID == c.TaskID {
			r.started = append(r.started[:i], r.started[i+1:]...)
			break
		}
	}
	r.mu.Unlock()
	r.poke()
}

func (r *reporter) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// due reports whether a batch should go now, else how long until one
// should (negative: nothing pending). mu held.
func (r *reporter) due(now time.Time) (bool, time.Duration) {
	wait := time.Duration(-1)
	if len(r.done) > 0 {
		left := flushAfter - now.Sub(r.first)
		if len(r.done) >= maxBatch || left <= 0 {
			return true, 0
		}
		wait = left
	}
	if len(r.started) > 0 {
		left := startedDelay - now.Sub(r.started[0].at)
		if left <= 0 {
			return true, 0
		}
		if wait < 0 || left < wait {
			wait = left
		}
	}
	return false, wait
}

func (r *reporter) run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
		}
		r.mu.Lock()
		now, wait := r.due(time.Now())
		r.mu.Unlock()
		switch {
		case now:
			r.send(ctx)
			t.Reset(0)
		case wait >= 0:
			t.Reset(wait)
		}
	}
}

// send delivers up to maxBatch completions and the started notes that are
// due, retrying until the head answers or ctx ends.
func (r *reporter) send(ctx context.Context) {
	r.mu.Lock()
	if r.sending {
		r.mu.Unlock()
		return
	}
	r.sending = true
	n := min(len(r.done), maxBatch)
	batch := api.Report{Completions: append([]dataflow.Completion(nil), r.done[:n]...)}
	cut := time.Now().Add(-startedDelay)
	k := 0
	for k < len(r.started) && !r.started[k].at.After(cut) {
		batch.Started = append(batch.Started, r.started[k].Started)
		k++
	}
	notes := append([]startedNote(nil), r.started[:k]...)
	r.started = r.started[k:]
	r.mu.Unlock()
	backoff := 100 * time.Millisecond
	for {
		res, err := r.client.Report(ctx, r.pilotID, batch)
		if err == nil {
			ids := make([]int64, 0, len(batch.Completions))
			for _, c := range batch.Completions {
				ids = append(ids, c.TaskID)
			}
			r.answered(ids)
			for _, cr := range res.Results {
				if cr.Status == dataflow.ReportStale {
					r.log.Warn("report refused: lease lost", "task", cr.TaskID, "reason", cr.Error)
				}
			}
			r.onStatus(res.AppStatus)
			break
		}
		if ctx.Err() != nil {
			// Keep the notes for a later flush; the completions were never removed.
			r.mu.Lock()
			r.started = append(notes, r.started...)
			r.sending = false
			r.mu.Unlock()
			return
		}
		if api.IsClientError(err) && !api.IsConflict(err) {
			r.log.Error("report rejected", "err", err, "completions", len(batch.Completions))
			break
		}
		r.log.Warn("report failed; head unreachable, retrying", "err", err, "in", backoff)
		if sleepCtx(ctx, jitter(backoff)) != nil {
			continue
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	r.mu.Lock()
	r.done = r.done[n:]
	if len(r.done) > 0 {
		r.first = time.Now().Add(-flushAfter)
	}
	r.sending = false
	r.mu.Unlock()
}

// flushAll sends every waiting completion before ctx ends. Call it only
// after run has returned. Started notes of tasks that never ended are
// dropped: the leases say the same.
func (r *reporter) flushAll(ctx context.Context) {
	for ctx.Err() == nil {
		r.mu.Lock()
		pending := len(r.done)
		r.mu.Unlock()
		if pending == 0 {
			return
		}
		r.send(ctx)
	}
}
