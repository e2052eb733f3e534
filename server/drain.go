package server

import (
	"context"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Idle pilots of Slurm pools are drained: a pilot that has held no task
// for its pool's idle_timeout, while the pool has more jobs than its min,
// is told to leave at its next lease request, and its job ends. Local
// pilots and head pilots are never drained.

type drainState struct {
	mu       sync.Mutex
	active   map[int64]time.Time // pilot -> last lease with tasks, or report
	pool     map[int64]*pilotPool
	draining map[string]bool // pilot job ids told to leave
}

type pilotPool struct {
	key   broker.PoolKey
	spec  *dataflow.Pool
	jobID string
}

// touch records that a pilot had work now.
func (s *Server) touch(pilotID int64) {
	s.drain.mu.Lock()
	s.drain.active[pilotID] = time.Now()
	s.drain.mu.Unlock()
}

// shouldDrain decides whether a pilot asking for work should leave.
func (s *Server) shouldDrain(ctx context.Context, p *dataflow.PilotInfo) bool {
	if p.JobID == "" || p.Head {
		return false
	}
	pp := s.pilotPool(ctx, p)
	if pp == nil {
		return false
	}
	idle, err := dataflow.ParseIdleTimeout(pp.spec.IdleTimeout)
	if err != nil || idle <= 0 {
		return false
	}
	s.drain.mu.Lock()
	last, ok := s.drain.active[p.ID]
	if !ok {
		// First sight (or a restarted head): idle from now on.
		s.drain.active[p.ID] = time.Now()
		s.drain.mu.Unlock()
		return false
	}
	already := s.drain.draining[pp.jobID]
	s.drain.mu.Unlock()
	if already {
		return true
	}
	if time.Since(last) < idle {
		return false
	}
	if held, err := s.broker.HeldBy(ctx, p.ID); err != nil || held > 0 {
		return false
	}
	jobs, err := s.broker.PilotJobs(ctx, p.AppID, true)
	if err != nil {
		return false
	}
	s.drain.mu.Lock()
	defer s.drain.mu.Unlock()
	staying := 0
	for _, j := range jobs {
		if j.Cluster == pp.key.Cluster && j.Pool == pp.key.Pool && !s.drain.draining[j.JobID] {
			staying++
		}
	}
	if staying <= pp.spec.Min {
		return false
	}
	s.drain.draining[pp.jobID] = true
	s.log.Info("draining idle pilot", "pilot", p.ID, "job", pp.jobID, "pool", pp.key.Pool, "idle", time.Since(last).Round(time.Second))
	return true
}

// pilotPool finds (once) the pool of a pilot's job.
func (s *Server) pilotPool(ctx context.Context, p *dataflow.PilotInfo) *pilotPool {
	s.drain.mu.Lock()
	if pp, ok := s.drain.pool[p.ID]; ok {
		s.drain.mu.Unlock()
		return pp
	}
	s.drain.mu.Unlock()
	jobs, err := s.broker.PilotJobs(ctx, p.AppID, false)
	if err != nil {
		return nil
	}
	app, _, err := s.broker.App(p.AppID)
	if err != nil {
		return nil
	}
	var pp *pilotPool
	for _, j := range jobs {
		if j.JobID == p.JobID {
			if c := app.Clusters[j.Cluster]; c != nil && c.Pools[j.Pool] != nil {
				pp = &pilotPool{key: broker.PoolKey{AppID: p.AppID, Cluster: j.Cluster, Pool: j.Pool}, spec: c.Pools[j.Pool], jobID: j.JobID}
			}
		}
	}
	s.drain.mu.Lock()
	s.drain.pool[p.ID] = pp
	s.drain.mu.Unlock()
	return pp
}
