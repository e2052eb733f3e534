package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// The pool manager keeps each app's Slurm pools sized to its work: it
// submits pilot jobs while there is backlog (up to the pool's max, at
// least its min), watches them with one status call per cluster, notices
// jobs that ended under their pilots, backs off after failed submissions
// and pauses the pool after MaxSubmitFailures in a row, and cancels every
// job when the app ends. Its state is in the database (pilot_jobs, pools),
// so a restarted head counts the jobs still running and does not
// resubmit them; their pilots reconnect on their own.

// MaxSubmitFailures in a row pause a pool until `scalebox app start`.
const MaxSubmitFailures = 4

// SubmitBackoff is the wait after n failed submissions in a row.
func SubmitBackoff(n int) time.Duration {
	return dataflow.Backoff(n, 2*time.Second, 2*time.Minute, nil)
}

// statusEvery is how often a cluster is asked about its jobs: squeue is a
// load on slurmctld, and heartbeats find most losses first.
const statusEvery = 4 * time.Second

type poolRef struct {
	key  broker.PoolKey
	spec *dataflow.Pool
	// modules placed on this pool, and slots each has per node
	modules map[string]int
}

// appPools lists the pools an app's modules use on configured clusters.
func (s *Server) appPools(app *dataflow.App, appID int64) []*poolRef {
	byKey := map[broker.PoolKey]*poolRef{}
	add := func(m *dataflow.Module, pool string, count int) {
		cluster, spec := findPool(app, m, pool)
		if spec == nil || s.batchFor(appID, app, cluster) == nil {
			return
		}
		k := broker.PoolKey{AppID: appID, Cluster: cluster, Pool: pool}
		ref := byKey[k]
		if ref == nil {
			ref = &poolRef{key: k, spec: spec, modules: map[string]int{}}
			byKey[k] = ref
		}
		ref.modules[m.Name] += count
	}
	for _, m := range app.Modules {
		for _, sl := range m.Slots {
			if sl.Pool != "" {
				add(m, sl.Pool, sl.Count)
			}
		}
		// A module with no slots runs anywhere: one slot on every pilot,
		// placed on its cluster's default pool.
		if len(m.Slots) == 0 && !m.SlotOnHead {
			cl := m.Cluster
			if cl == "" {
				cl = app.Cluster
			}
			if name := defaultPool(app.Clusters[cl]); name != "" {
				add(m, name, 1)
			}
		}
	}
	out := make([]*poolRef, 0, len(byKey))
	for _, r := range byKey {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].key, out[j].key
		return a.Cluster < b.Cluster || a.Cluster == b.Cluster && a.Pool < b.Pool
	})
	return out
}

// findPool resolves a pool name: on the module's cluster, else the app's,
// else the only cluster that has a pool of that name.
func findPool(app *dataflow.App, m *dataflow.Module, name string) (string, *dataflow.Pool) {
	for _, cl := range []string{m.Cluster, app.Cluster} {
		if c := app.Clusters[cl]; cl != "" && c != nil && c.Pools[name] != nil {
			return cl, c.Pools[name]
		}
	}
	names := make([]string, 0, len(app.Clusters))
	for cl := range app.Clusters {
		names = append(names, cl)
	}
	sort.Strings(names)
	for _, cl := range names {
		if p := app.Clusters[cl].Pools[name]; p != nil {
			return cl, p
		}
	}
	return "", nil
}

// defaultPool is the pool named "default", or a cluster's only pool.
func defaultPool(c *dataflow.Cluster) string {
	if c == nil {
		return ""
	}
	if c.Pools["default"] != nil {
		return "default"
	}
	if len(c.Pools) == 1 {
		for name := range c.Pools {
			return name
		}
	}
	return ""
}

type poolManager struct {
	mu         sync.Mutex          // one pass at a time
	lastStatus map[int64]time.Time // per app
	batch      map[batchKey]dataflow.BatchSystem
	heads      map[int64]string // app -> head pilot job of HeadPilots
	headFails  int
	headRetry  time.Time
}

type batchKey struct {
	app     int64
	cluster string
}

// batchFor returns (building once) the batch system of an app's cluster.
func (s *Server) batchFor(appID int64, app *dataflow.App, cluster string) dataflow.BatchSystem {
	k := batchKey{appID, cluster}
	if bs, ok := s.pm.batch[k]; ok {
		return bs
	}
	var bs dataflow.BatchSystem
	if c := app.Clusters[cluster]; c != nil && s.opts.Slurm != nil {
		var err error
		if bs, err = s.opts.Slurm(cluster, c); err != nil {
			s.log.Error("cluster definition", "app", appID, "cluster", cluster, "err", err)
			bs = nil
		}
	}
	s.pm.batch[k] = bs
	return bs
}

// SettlePools ends the bookkeeping of an ended app's pilot jobs now:
// `scalebox run` calls it before it reports, so no job is left running.
func (s *Server) SettlePools(ctx context.Context, appID int64) error {
	s.pm.mu.Lock()
	defer s.pm.mu.Unlock()
	return s.manageApp(ctx, appID)
}

func (s *Server) managePools(ctx context.Context) {
	s.pm.mu.Lock()
	defer s.pm.mu.Unlock()
	if s.opts.Slurm == nil {
		return
	}
	for _, id := range s.broker.AppIDs() {
		if err := s.manageApp(ctx, id); err != nil && ctx.Err() == nil {
			s.log.Error("pool manager", "app", id, "err", err)
		}
	}
}

func (s *Server) manageApp(ctx context.Context, appID int64) error {
	app, st, err := s.broker.App(appID)
	if err != nil {
		return err
	}
	pools := s.appPools(app, appID)
	jobs, err := s.broker.PilotJobs(ctx, appID, true)
	if err != nil {
		return err
	}
	if len(pools) == 0 && len(jobs) == 0 {
		return nil
	}
	if st.Done() {
		// Jobs whose pilots left on their own end as Slurm says; the rest
		// are cancelled.
		if jobs, err = s.refreshJobs(ctx, appID, app, jobs); err != nil {
			return err
		}
		return s.cancelJobs(ctx, appID, app, jobs, "app "+string(st))
	}
	if time.Since(s.pm.lastStatus[appID]) >= statusEvery && len(jobs) > 0 {
		s.pm.lastStatus[appID] = time.Now()
		if jobs, err = s.refreshJobs(ctx, appID, app, jobs); err != nil {
			return err
		}
	}
	if st != dataflow.AppRunning {
		return nil
	}
	if len(pools) > 0 {
		s.ensureHeadPilot(ctx, appID, app)
	}
	info, err := s.broker.AppInfo(ctx, appID)
	if err != nil {
		return err
	}
	states, err := s.broker.Pools(ctx, appID)
	if err != nil {
		return err
	}
	for _, p := range pools {
		if err := s.sizePool(ctx, app, p, info, jobs, states); err != nil {
			return err
		}
	}
	return nil
}

// byCluster groups an app's jobs by cluster, with their Slurm job ids.
func byCluster(jobs []broker.PilotJob) map[string][]broker.PilotJob {
	out := map[string][]broker.PilotJob{}
	for _, j := range jobs {
		out[j.Cluster] = append(out[j.Cluster], j)
	}
	return out
}

func jobIDs(js []broker.PilotJob) []string {
	ids := make([]string, len(js))
	for i, j := range js {
		ids[i] = j.JobID
	}
	return ids
}

// refreshJobs asks each cluster once about an app's active jobs and
// records the ones that started or ended. It returns the jobs still active.
func (s *Server) refreshJobs(ctx context.Context, appID int64, app *dataflow.App, jobs []broker.PilotJob) ([]broker.PilotJob, error) {
	var still []broker.PilotJob
	for cluster, js := range byCluster(jobs) {
		bs := s.batchFor(appID, app, cluster)
		if bs == nil {
			still = append(still, js...)
			continue
		}
		states, err := bs.Status(ctx, jobIDs(js))
		if err != nil {
			s.log.Warn("job status", "cluster", cluster, "err", err)
			still = append(still, js...)
			continue
		}
		for _, j := range js {
			switch states[j.JobID] {
			case dataflow.JobRunning:
				if j.StartedAt == nil {
					s.broker.JobStarted(ctx, j.ID)
				}
				still = append(still, j)
			case dataflow.JobPending:
				still = append(still, j)
			case dataflow.JobUnknown:
				// Just submitted jobs may not be listed yet; long-gone
				// ones were purged by Slurm.
				if time.Since(j.SubmittedAt) < time.Minute {
					still = append(still, j)
					continue
				}
				fallthrough
			default:
				lost, err := s.broker.JobEnded(ctx, j.ID, string(states[j.JobID]))
				if err != nil {
					return nil, err
				}
				lvl := s.log.Info
				if lost > 0 {
					lvl = s.log.Warn
				}
				lvl("pilot job ended", "app", j.AppID, "cluster", cluster, "pool", j.Pool, "job", j.JobID,
					"state", states[j.JobID], "pilots_lost", lost)
				if lost > 0 {
					s.kickRescue()
				}
			}
		}
	}
	return still, nil
}

// sizePool submits the jobs a pool is short of.
func (s *Server) sizePool(ctx context.Context, app *dataflow.App, p *poolRef, info *dataflow.AppInfo, jobs []broker.PilotJob, states []dataflow.PoolInfo) error {
	var state dataflow.PoolInfo
	for _, ps := range states {
		if ps.Cluster == p.key.Cluster && ps.Pool == p.key.Pool {
			state = ps
		}
	}
	if state.Paused || state.RetryAt != nil && time.Now().Before(*state.RetryAt) {
		return nil
	}
	active := 0
	for _, j := range jobs {
		if j.Cluster == p.key.Cluster && j.Pool == p.key.Pool && !expiring(j, p, app, time.Now()) {
			active++
		}
	}
	want := wantedJobs(p, info, active)
	if want > active && s.advertiseURL() == "" {
		return nil // not listening on TCP yet: pilots could not reach us
	}
	for ; active < want; active++ {
		bs := s.batchFor(p.key.AppID, app, p.key.Cluster)
		req := dataflow.PilotRequest{AppID: p.key.AppID, AppName: app.Name, Cluster: p.key.Cluster, Pool: p.key.Pool,
			Spec: p.spec, Server: s.advertiseURL(), CertSHA256: s.pin, TokenFile: s.TokenFile(),
			Name: jobName(app.Name, p.key.Pool)}
		id, err := bs.Submit(ctx, req)
		if err != nil {
			n := state.Failures + 1
			pause := n >= MaxSubmitFailures
			msg := oneLine(err.Error())
			s.log.Error("pilot submission failed", "app", p.key.AppID, "cluster", p.key.Cluster, "pool", p.key.Pool,
				"failures_in_a_row", n, "paused", pause, "err", msg)
			return s.broker.SubmitFailed(ctx, p.key, msg, time.Now().Add(SubmitBackoff(n)), pause)
		}
		script := ""
		if sp, ok := bs.(interface{ ScriptPath(int64, string) string }); ok {
			script = sp.ScriptPath(p.key.AppID, id)
		}
		if err := s.broker.JobSubmitted(ctx, p.key, id, script); err != nil {
			return err
		}
		state.Failures = 0
		s.log.Info("pilot job submitted", "app", p.key.AppID, "cluster", p.key.Cluster, "pool", p.key.Pool, "job", id)
	}
	return nil
}

// replaceLead is how long before a job's walltime its replacement is
// submitted, beyond the longest task of the pool: time to queue and start.
const replaceLead = 30 * time.Second

// expiring is true for a running job so close to its walltime that its
// pilots take no more of the pool's longest tasks: it no longer counts,
// so a replacement is submitted while it finishes what it runs.
func expiring(j broker.PilotJob, p *poolRef, app *dataflow.App, now time.Time) bool {
	limit := p.spec.TimeLimit()
	if limit <= 0 || j.StartedAt == nil {
		return false
	}
	var longest time.Duration
	for name := range p.modules {
		if m := app.Module(name); m != nil {
			longest = max(longest, time.Duration(m.TaskMaxSeconds)*time.Second)
		}
	}
	return now.After(j.StartedAt.Add(limit - longest - replaceLead))
}

// wantedJobs is the number of pilot jobs a pool should have, given active
// jobs that count: the jobs busy with the pool's held (leased or running)
// tasks, plus enough for its ready and retrying tasks, clamped to
// [min, max]. Held tasks never ask for a new job: only their pilot can
// run them.
func wantedJobs(p *poolRef, info *dataflow.AppInfo, active int) int {
	waiting, held, slots := 0, 0, 0
	for m, n := range p.modules {
		c := info.Modules[m]
		waiting += c[dataflow.TaskReady] + c[dataflow.TaskRetrying]
		held += c[dataflow.TaskLeased] + c[dataflow.TaskRunning]
		slots += n
	}
	perJob := max(slots*max(p.spec.Nodes, 1), 1)
	busy := min(active, (held+perJob-1)/perJob)
	want := busy + (waiting+perJob-1)/perJob
	maxJobs := p.spec.Max
	if maxJobs <= 0 {
		maxJobs = 1
	}
	return min(max(want, p.spec.Min), maxJobs)
}

func (s *Server) cancelJobs(ctx context.Context, appID int64, app *dataflow.App, jobs []broker.PilotJob, why string) error {
	for cluster, js := range byCluster(jobs) {
		ids := jobIDs(js)
		if bs := s.batchFor(appID, app, cluster); bs != nil {
			if err := bs.Cancel(ctx, ids); err != nil {
				s.log.Warn("cancel pilot jobs", "cluster", cluster, "jobs", ids, "err", err)
				continue
			}
		}
		for _, j := range js {
			if _, err := s.broker.JobEnded(ctx, j.ID, "CANCELLED ("+why+")"); err != nil {
				return err
			}
		}
		s.log.Info("pilot jobs cancelled", "cluster", cluster, "jobs", strings.Join(ids, ","), "why", why)
	}
	return nil
}

func jobName(app, pool string) string {
	return fmt.Sprintf("scalebox-%s-%s", app, pool)
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 1000 {
		s = s[:1000] + "..."
	}
	return s
}

// ensureHeadPilot keeps one local pilot for the app's slot_on_head modules
// (the main router) while its pools run on Slurm, restarting it if it
// exits, with a backoff.
func (s *Server) ensureHeadPilot(ctx context.Context, appID int64, app *dataflow.App) {
	if s.opts.HeadPilots == nil || time.Now().Before(s.pm.headRetry) {
		return
	}
	need := false
	for _, m := range app.Modules {
		need = need || m.SlotOnHead
	}
	if !need {
		return
	}
	if id, ok := s.pm.heads[appID]; ok {
		st, err := s.opts.HeadPilots.Status(ctx, []string{id})
		if err == nil && (st[id] == dataflow.JobRunning || st[id] == dataflow.JobPending) {
			return
		}
		s.log.Warn("head pilot exited; starting another", "app", appID, "job", id)
	}
	id, err := s.opts.HeadPilots.Submit(ctx, dataflow.PilotRequest{AppID: appID, Server: "unix://" + SocketPath(s.opts.StateDir),
		Head: true, HeadOnly: true, Name: app.Name})
	if err != nil {
		s.pm.headFails++
		s.pm.headRetry = time.Now().Add(SubmitBackoff(s.pm.headFails))
		s.log.Error("start head pilot", "app", appID, "err", err)
		return
	}
	s.pm.headFails = 0
	s.pm.heads[appID] = id
}
