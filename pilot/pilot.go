// Package pilot is the node agent: it registers with the head, receives
// its slot plan, runs each slot's scripts, leases tasks in batches over a
// long poll, reports completions in batches and keeps its leases alive
// with heartbeats.
package pilot

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/staging"
)

// Config configures one pilot.
type Config struct {
	Client *api.Client
	AppID  int64
	Host   string
	Head   bool
	JobID  string
	// WorkRoot holds one private work dir per slot.
	WorkRoot string
	// Server and TokenFile are handed to scripts so `scalebox` inside a
	// slot reaches the head.
	Server     string
	TokenFile  string
	CertSHA256 string
	// Cluster and Pool say where a Slurm pilot runs; the head plans its
	// slots from them.
	Cluster  string
	Pool     string
	HeadOnly bool
	// EndTime is the batch job's end (zero: none).
	EndTime time.Time
	// Binary is the scalebox executable, put first on the scripts' PATH.
	Binary string
	// Apptainer is the apptainer executable ("" = $SCALEBOX_APPTAINER or PATH).
	Apptainer string
	// AgentBinary is the static scalebox bound into containers ("" =
	// $SCALEBOX_AGENT_BINARY or this executable).
	AgentBinary string
	// GPUs are the device indices this node's slots share out (from
	// CUDA_VISIBLE_DEVICES or ROCR_VISIBLE_DEVICES when unset).
	GPUs []int
	// HeadTimeout: stop after the head has not answered for this long (0: never).
	HeadTimeout time.Duration
	Log         *slog.Logger
}

// Pilot is one running node agent.
type Pilot struct {
	cfg      Config
	tiers    staging.Tiers // this node's data tiers, for stage_in/stage_out
	usage    dirUsage      // dir_quota_gb checks
	cache    func() (*staging.Cache, error)
	reg      *api.Registered
	log      *slog.Logger
	rep      *reporter
	stop     context.CancelFunc
	stopMu   sync.Mutex
	ended    dataflow.AppStatus
	headLost error // set when the pilot stopped because the head was gone
	broken   error // set when a slot could not start: the pilot leaves
	feeders  []*feeder

	heldMu sync.Mutex
	held   map[int64]bool // tasks leased to this pilot and not yet reported

	slotMu   sync.Mutex
	troubled map[string]dataflow.SlotState // slots failing to start, by slot id
	beat     chan struct{}                 // send a heartbeat now
}

// newPilot is a pilot for a registration, its slots not started yet.
func newPilot(cfg Config, reg *api.Registered, log *slog.Logger) *Pilot {
	if cfg.GPUs == nil {
		cfg.GPUs = visibleGPUs()
	}
	tiers := staging.NodeTiers(cfg.Host)
	return &Pilot{cfg: cfg, tiers: tiers, cache: sync.OnceValues(func() (*staging.Cache, error) { return openCache(tiers) }),
		reg: reg, log: log, held: map[int64]bool{},
		troubled: map[string]dataflow.SlotState{}, beat: make(chan struct{}, 1)}
}

// slotState records a slot's start failure (err non-nil) or its recovery,
// and sends the news to the head with the next heartbeat, at once.
func (p *Pilot) slotState(s *slot, err error) {
	p.slotMu.Lock()
	_, had := p.troubled[s.id]
	if err == nil {
		delete(p.troubled, s.id)
	} else {
		st := dataflow.SlotState{Slot: s.id, Module: s.mod().Name, State: dataflow.SlotRestarting, Reason: err.Error(), Failures: s.failures}
		if s.failures >= slotErrorAfter {
			st.State = dataflow.SlotError
		}
		p.troubled[s.id] = st
	}
	p.slotMu.Unlock()
	if err != nil || had {
		select {
		case p.beat <- struct{}{}:
		default:
		}
	}
}

func (p *Pilot) slotStates() []dataflow.SlotState {
	p.slotMu.Lock()
	defer p.slotMu.Unlock()
	out := make([]dataflow.SlotState, 0, len(p.troubled))
	for _, st := range p.troubled {
		out = append(out, st)
	}
	return out
}

// hold records leased tasks; heartbeats keep exactly these alive.
func (p *Pilot) hold(ts []dataflow.LeasedTask) {
	p.heldMu.Lock()
	for _, t := range ts {
		p.held[t.ID] = true
	}
	p.heldMu.Unlock()
}

// unhold forgets tasks whose completion the head has answered.
func (p *Pilot) unhold(ids []int64) {
	p.heldMu.Lock()
	for _, id := range ids {
		delete(p.held, id)
	}
	p.heldMu.Unlock()
}

func (p *Pilot) heldIDs() []int64 {
	p.heldMu.Lock()
	defer p.heldMu.Unlock()
	out := make([]int64, 0, len(p.held))
	for id := range p.held {
		out = append(out, id)
	}
	return out
}

// Run registers and serves the app until it ends or ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Host == "" {
		cfg.Host, _ = os.Hostname()
	}
	reg, err := register(ctx, cfg)
	if err != nil {
		return err
	}
	log := cfg.Log.With("pilot", reg.PilotID)
	if cfg.WorkRoot == "" {
		// Unique: another user's or an older pilot's dir of the same app
		// and pilot number may be there.
		dir, err := os.MkdirTemp("", fmt.Sprintf("scalebox-%d-pilot-%d-", reg.AppID, reg.PilotID))
		if err != nil {
			cfg.Client.Leave(context.Background(), reg.PilotID, api.Leave{})
			return fmt.Errorf("pilot work root: %w", err)
		}
		cfg.WorkRoot = dir
	}
	if err := os.MkdirAll(cfg.WorkRoot, 0o700); err != nil {
		cfg.Client.Leave(context.Background(), reg.PilotID, api.Leave{})
		return fmt.Errorf("pilot work root: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := newPilot(cfg, reg, log)
	p.stop = cancel
	p.rep = newReporter(cfg.Client, reg.PilotID, log, p.appStatus, p.unhold)
	log.Info("pilot registered", "host", cfg.Host, "modules", len(reg.Plan), "work_root", cfg.WorkRoot)

	var wg sync.WaitGroup
	repCtx, repCancel := context.WithCancel(context.Background())
	repDone := make(chan struct{})
	go func() { p.rep.run(repCtx); close(repDone) }()

	for _, pm := range reg.Plan {
		f := newFeeder(p, pm)
		p.feeders = append(p.feeders, f)
		wg.Add(1)
		go func() { defer wg.Done(); f.run(ctx) }()
		for i := 0; i < pm.Slots; i++ {
			s := newSlot(p, pm, f, i)
			wg.Add(1)
			go func() { defer wg.Done(); s.run(ctx) }()
		}
	}
	hbDone := make(chan struct{})
	go func() { p.heartbeats(ctx); close(hbDone) }()
	wg.Wait()
	cancel()
	<-hbDone
	// Deliver every completion before leaving; the reporter retries while
	// the head is unreachable, for as long as the leases could still count.
	repCancel()
	<-repDone
	flushFor, leaveFor := reg.LeaseTTL+10*time.Second, 10*time.Second
	if p.lostHead() {
		flushFor, leaveFor = 2*time.Second, 2*time.Second // nobody is there to hear it
	}
	flushCtx, flushCancel := context.WithTimeout(context.Background(), flushFor)
	p.rep.flushAll(flushCtx)
	flushCancel()
	var release []dataflow.LeasedTask
	for _, f := range p.feeders {
		release = append(release, f.drain()...)
	}
	leaveCtx, leaveCancel := context.WithTimeout(context.Background(), leaveFor)
	defer leaveCancel()
	if err := cfg.Client.Leave(leaveCtx, reg.PilotID, api.Leave{Release: release}); err != nil && !api.IsConflict(err) {
		log.Warn("leave", "err", err)
	}
	log.Info("pilot done", "app_status", p.appStatusValue())
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	if p.broken != nil {
		return p.broken
	}
	return p.headLost
}

// fail stops the pilot because part of it cannot work (a slot did not
// start): better to leave and hand back its leases than to hold tasks
// nobody will run.
func (p *Pilot) fail(err error) {
	p.stopMu.Lock()
	if p.broken == nil {
		p.broken = err
	}
	p.stopMu.Unlock()
	p.log.Error("pilot stops", "err", err)
	p.stop()
}

func register(ctx context.Context, cfg Config) (*api.Registered, error) {
	req := api.Register{AppID: cfg.AppID, Host: cfg.Host, CPUs: runtime.NumCPU(), MemBytes: memBytes(), Head: cfg.Head, JobID: cfg.JobID,
		Cluster: cfg.Cluster, Pool: cfg.Pool, HeadOnly: cfg.HeadOnly}
	delay := 200 * time.Millisecond
	deadline := time.Now().Add(2 * time.Minute)
	for {
		reg, err := cfg.Client.Register(ctx, req)
		if err == nil {
			return reg, nil
		}
		if api.IsClientError(err) || time.Now().After(deadline) {
			return nil, fmt.Errorf("register pilot: %w", err)
		}
		cfg.Log.Warn("register: head not reachable yet", "err", err)
		if err := sleepCtx(ctx, delay); err != nil {
			return nil, err
		}
		delay = min(delay*2, 5*time.Second)
	}
}

func memBytes() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kb int64
	fmt.Sscanf(string(data), "MemTotal: %d kB", &kb)
	return kb * 1024
}

// appEnded records that the head says the app is over and stops the pilot.
func (p *Pilot) appEnded(st dataflow.AppStatus) {
	if !st.Done() {
		return
	}
	p.stopMu.Lock()
	first := p.ended == ""
	p.ended = st
	p.stopMu.Unlock()
	if first {
		p.log.Info("app ended; stopping slots", "status", st)
		p.stop()
	}
}

func (p *Pilot) appStatus(st dataflow.AppStatus) { p.appEnded(st) }

func (p *Pilot) lostHead() bool {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	return p.headLost != nil
}

func (p *Pilot) appStatusValue() dataflow.AppStatus {
	p.stopMu.Lock()
	defer p.stopMu.Unlock()
	return p.ended
}

func (p *Pilot) heartbeats(ctx context.Context) {
	every := p.reg.Heartbeat
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.beat:
		}
		beat, err := p.cfg.Client.Heartbeat(ctx, p.reg.PilotID, api.Heartbeat{Held: p.heldIDs(), Slots: p.slotStates()})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if api.IsConflict(err) || api.IsNotFound(err) {
				p.appEnded(dataflow.AppCancelled)
				return
			}
			// Past HeadTimeout our leases have long expired and the tasks run
			// elsewhere: stop rather than hold the allocation for nothing.
			if gone := time.Since(lastOK); p.cfg.HeadTimeout > 0 && gone > p.cfg.HeadTimeout {
				p.stopMu.Lock()
				p.headLost = fmt.Errorf("head unreachable for %s: %w", gone.Round(time.Second), err)
				p.stopMu.Unlock()
				p.log.Error("pilot gives up", "err", p.headLost)
				p.stop()
				return
			}
			p.log.Warn("heartbeat failed; head unreachable, tasks go on", "err", err)
			continue
		}
		lastOK = time.Now()
		p.appEnded(beat.AppStatus)
	}
}

// visibleGPUs are the devices the batch system gave this job.
func visibleGPUs() []int {
	for _, k := range []string{"CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES"} {
		v := os.Getenv(k)
		if v == "" {
			continue
		}
		var out []int
		for _, f := range strings.Split(v, ",") {
			var n int
			if _, err := fmt.Sscan(strings.TrimSpace(f), &n); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}
