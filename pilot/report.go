package pilot

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Report batching: a batch goes when it holds maxBatch completions or its
// oldest entry has waited flushAfter.
const (
	maxBatch   = 256
	flushAfter = 10 * time.Millisecond
)

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
	started []dataflow.Started
	done    []dataflow.Completion
	first   time.Time
	kick    chan struct{}
	sending bool
}

func newReporter(c *api.Client, pilotID int64, log *slog.Logger, onStatus func(dataflow.AppStatus), answered func([]int64)) *reporter {
	r := &reporter{client: c, pilotID: pilotID, log: log, onStatus: onStatus, answered: answered, kick: make(chan struct{}, 1)}
	return r
}

func (r *reporter) addStarted(s dataflow.Started) {
	r.mu.Lock()
	if len(r.started) == 0 && len(r.done) == 0 {
		r.first = time.Now()
	}
	r.started = append(r.started, s)
	r.mu.Unlock()
	r.poke()
}

func (r *reporter) addCompletion(c dataflow.Completion) {
	r.mu.Lock()
	if len(r.started) == 0 && len(r.done) == 0 {
		r.first = time.Now()
	}
	r.done = append(r.done, c)
	r.mu.Unlock()
	r.poke()
}

func (r *reporter) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
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
		pending := len(r.started) + len(r.done)
		full := len(r.done) >= maxBatch
		wait := flushAfter - time.Since(r.first)
		r.mu.Unlock()
		if pending == 0 {
			continue
		}
		if !full && wait > 0 {
			t.Reset(wait)
			continue
		}
		r.send(ctx)
		t.Reset(0)
	}
}

// send delivers what is pending, retrying until it is accepted or ctx ends.
func (r *reporter) send(ctx context.Context) {
	r.mu.Lock()
	if r.sending {
		r.mu.Unlock()
		return
	}
	r.sending = true
	n := min(len(r.done), maxBatch)
	batch := api.Report{Started: r.started, Completions: append([]dataflow.Completion(nil), r.done[:n]...)}
	r.started = nil
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
			// Put the batch back for a later flush.
			r.mu.Lock()
			r.started = append(batch.Started, r.started...)
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
	r.sending = false
	if len(r.started)+len(r.done) > 0 {
		r.first = time.Now().Add(-flushAfter)
	}
	r.mu.Unlock()
}

// flushAll sends everything pending before ctx ends. Call it only after
// run has returned.
func (r *reporter) flushAll(ctx context.Context) {
	for ctx.Err() == nil {
		r.mu.Lock()
		pending := len(r.started) + len(r.done)
		r.mu.Unlock()
		if pending == 0 {
			return
		}
		r.send(ctx)
	}
}
