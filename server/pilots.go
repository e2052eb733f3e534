package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Plan decides which modules a pilot runs and with how many slots.
// Modules marked slot_on_head (the main router) run only on head pilots.
// A module's slots entries that match the pilot's host name add up; a
// module with no slots entries gets one slot per pilot. A pool entry
// counts on the pilots of that pool, and on local pilots (pool ""), so
// an app with pools still runs whole under `scalebox run` on a laptop. A
// module runs only on pilots of its cluster (its own `cluster:`, else the
// app's), when it has one.
func Plan(app *dataflow.App, r api.Register) []api.PlannedModule {
	host, head := r.Host, r.Head
	var out []api.PlannedModule
	for _, m := range app.Modules {
		cl := m.Cluster
		if cl == "" {
			cl = app.Cluster
		}
		if cl != "" && r.Cluster != "" && cl != r.Cluster {
			continue
		}
		if r.HeadOnly && !m.SlotOnHead {
			continue
		}
		n := 0
		if len(m.Slots) == 0 {
			n = 1
		}
		for _, s := range m.Slots {
			switch {
			case s.Pool != "" && (r.Pool == "" || r.Pool == s.Pool):
				n += s.Count
			case s.Pool == "" && s.Matches(host):
				n += s.Count
			}
		}
		if m.SlotOnHead && !head {
			n = 0
		}
		if m.SlotOnHead && head && n == 0 {
			n = 1
		}
		if n > 0 {
			out = append(out, api.PlannedModule{Module: m, Slots: n, SinkModule: app.DefaultSink(m)})
		}
	}
	return out
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req api.Register
	if !decode(w, r, &req) {
		return
	}
	if req.Host == "" {
		writeError(w, http.StatusBadRequest, errors.New("register: host is required"))
		return
	}
	app, st, err := s.broker.App(req.AppID)
	if err != nil {
		fail(w, err)
		return
	}
	if st.Done() {
		writeError(w, http.StatusConflict, fmt.Errorf("app %d has ended (%s)", req.AppID, st))
		return
	}
	id, err := s.broker.RegisterPilot(r.Context(), dataflow.PilotInfo{AppID: req.AppID, Host: req.Host, CPUs: req.CPUs,
		MemBytes: req.MemBytes, Head: req.Head, JobID: req.JobID})
	if err != nil {
		fail(w, err)
		return
	}
	plan := Plan(app, req)
	s.log.Info("pilot registered", "pilot", id, "app", req.AppID, "host", req.Host, "head", req.Head, "modules", len(plan))
	writeJSON(w, api.Registered{PilotID: id, AppID: req.AppID, AppName: app.Name, Cluster: app.Cluster, Plan: plan,
		LeaseTTL: s.opts.LeaseTTL, Heartbeat: s.opts.Heartbeat})
}

// pilotInfo returns a pilot's registration, cached: every lease, report
// and heartbeat needs it, and it changes only when the pilot leaves.
func (s *Server) pilotInfo(ctx context.Context, id int64) (*dataflow.PilotInfo, error) {
	if p, ok := s.pilots.Load(id); ok {
		return p.(*dataflow.PilotInfo), nil
	}
	p, err := s.broker.Pilot(ctx, id)
	if err != nil {
		return nil, err
	}
	s.pilots.Store(id, p)
	return p, nil
}

func (s *Server) pilot(w http.ResponseWriter, r *http.Request) (*dataflow.PilotInfo, bool) {
	id, ok := pathID(w, r, "pilot")
	if !ok {
		return nil, false
	}
	p, err := s.pilotInfo(r.Context(), id)
	if err != nil {
		fail(w, err)
		return nil, false
	}
	if p.State == "left" {
		writeError(w, http.StatusConflict, fmt.Errorf("pilot %d has left", id))
		return nil, false
	}
	return p, true
}

// lease claims tasks for a pilot, long-polling up to the requested wait
// when none is ready.
func (s *Server) lease(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pilot(w, r)
	if !ok {
		return
	}
	var req api.Lease
	if !decode(w, r, &req) {
		return
	}
	wait := min(max(req.Wait, 0), MaxLeaseWait)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	if len(req.Wants) != 1 {
		writeError(w, http.StatusBadRequest, errors.New("lease: want exactly one module per request"))
		return
	}
	module := req.Wants[0].Module
	// Pool pilots waiting for work are checked for idleness while they wait.
	var idleCheck <-chan time.Time
	if p.JobID != "" && !p.Head {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		idleCheck = tick.C
	}
	for {
		if idleCheck != nil && s.shouldDrain(r.Context(), p) {
			writeJSON(w, api.Leased{Tasks: []dataflow.LeasedTask{}, AppStatus: dataflow.AppRunning, Drain: true})
			return
		}
		ready := s.broker.Ready(p.AppID, module) // before trying, so a commit in between still wakes us
		_, st, err := s.broker.App(p.AppID)
		if err != nil {
			fail(w, err)
			return
		}
		var tasks []dataflow.LeasedTask
		has := false
		if st == dataflow.AppRunning {
			if has, err = s.broker.HasReady(r.Context(), p.AppID, module); err != nil {
				writeError(w, http.StatusBadRequest, err)
				return
			}
		}
		if has {
			tasks, err = s.broker.Lease(r.Context(), broker.LeaseRequest{AppID: p.AppID, PilotID: p.ID, Host: p.Host,
				Wants: req.Wants, TTL: s.opts.LeaseTTL})
			if err != nil {
				if errors.Is(err, context.Canceled) {
					return
				}
				writeError(w, http.StatusBadRequest, err)
				return
			}
		}
		if len(tasks) > 0 {
			s.touch(p.ID)
		}
		if len(tasks) > 0 || st.Done() {
			writeJSON(w, api.Leased{Tasks: tasks, AppStatus: st})
			return
		}
		select {
		case <-ready:
		case <-s.changes():
		case <-idleCheck:
		case <-timer.C:
			writeJSON(w, api.Leased{Tasks: []dataflow.LeasedTask{}, AppStatus: st})
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "pilot")
	if !ok {
		return
	}
	var req api.Report
	if !decode(w, r, &req) {
		return
	}
	p, err := s.pilotInfo(r.Context(), id)
	if err != nil {
		fail(w, err)
		return
	}
	// A pilot that has left may still deliver results it holds; fencing
	// decides whether they count.
	res, err := s.broker.Complete(r.Context(), broker.Report{PilotID: id, Started: req.Started, Completions: req.Completions})
	if err != nil {
		fail(w, err)
		return
	}
	if len(req.Completions) > 0 {
		s.touch(id)
		s.kickFinisher()
	}
	_, st, _ := s.broker.App(p.AppID)
	if st.Done() {
		s.statusChanged() // a slot's set-finished may have ended it
	}
	writeJSON(w, api.Reported{Results: res, AppStatus: st})
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pilot(w, r)
	if !ok {
		return
	}
	var req api.Heartbeat
	if !decode(w, r, &req) {
		return
	}
	if err := s.broker.Heartbeat(r.Context(), p.ID, req.Held, req.Slots, s.opts.LeaseTTL); err != nil {
		fail(w, err)
		return
	}
	_, st, _ := s.broker.App(p.AppID)
	writeJSON(w, api.Beat{AppStatus: st})
}

func (s *Server) leave(w http.ResponseWriter, r *http.Request) {
	p, ok := s.pilot(w, r)
	if !ok {
		return
	}
	var req api.Leave
	if !decode(w, r, &req) {
		return
	}
	if err := s.broker.Release(r.Context(), p.ID, req.Release); err != nil {
		fail(w, err)
		return
	}
	if err := s.broker.PilotLeft(r.Context(), p.ID); err != nil {
		fail(w, err)
		return
	}
	left := *p
	left.State = "left"
	s.pilots.Store(p.ID, &left)
	s.log.Info("pilot left", "pilot", p.ID, "host", p.Host)
	writeJSON(w, struct{}{})
}
