package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// MaxLeaseWait bounds a long poll.
const MaxLeaseWait = 30 * time.Second

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	p := "/" + api.Version
	mux.HandleFunc("GET "+p+"/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, api.VersionInfo{Version: s.opts.Version, API: api.Version})
	})
	mux.HandleFunc("POST "+p+"/apps", s.createApp)
	mux.HandleFunc("GET "+p+"/apps", s.listApps)
	mux.HandleFunc("GET "+p+"/apps/{app}", s.appStatus)
	mux.HandleFunc("GET "+p+"/apps/{app}/wait", s.waitApp)
	mux.HandleFunc("POST "+p+"/apps/{app}/status", s.setStatus)
	mux.HandleFunc("POST "+p+"/apps/{app}/tasks", s.addTasks)
	mux.HandleFunc("GET "+p+"/apps/{app}/tasks", s.listTasks)
	mux.HandleFunc("GET "+p+"/apps/{app}/pilots", s.listPilots)
	mux.HandleFunc("POST "+p+"/apps/{app}/state", s.stateOp)
	mux.HandleFunc("GET "+p+"/apps/{app}/semaphores", s.listSemaphores)
	mux.HandleFunc("GET "+p+"/apps/{app}/variables", s.listVariables)
	mux.HandleFunc("GET "+p+"/tasks/{task}", s.showTask)
	mux.HandleFunc("POST "+p+"/pilots", s.register)
	mux.HandleFunc("POST "+p+"/pilots/{pilot}/lease", s.lease)
	mux.HandleFunc("POST "+p+"/pilots/{pilot}/report", s.report)
	mux.HandleFunc("POST "+p+"/pilots/{pilot}/heartbeat", s.heartbeat)
	mux.HandleFunc("POST "+p+"/pilots/{pilot}/leave", s.leave)
	return recoverer(mux)
}

// recoverer turns a handler panic into a 500 so no request can crash the head.
func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				writeError(w, http.StatusInternalServerError, fmt.Errorf("internal error: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
}

// fail maps store errors to HTTP codes.
func fail(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, broker.ErrNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, broker.ErrAppEnded):
		writeError(w, http.StatusConflict, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, err)
	default:
		writeError(w, http.StatusInternalServerError, err)
	}
}

// decode reads a bounded JSON body; unknown fields are refused so a typo in
// a client is an error, not a silent default.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	r.Body = http.MaxBytesReader(w, r.Body, api.MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	return true
}

func pathID(w http.ResponseWriter, r *http.Request, name string) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusBadRequest, fmt.Errorf("%s id %q is not a positive integer", name, r.PathValue(name)))
		return 0, false
	}
	return id, true
}

func (s *Server) createApp(w http.ResponseWriter, r *http.Request) {
	var req api.CreateApp
	if !decode(w, r, &req) {
		return
	}
	if req.App == nil {
		writeError(w, http.StatusBadRequest, errors.New("request body: app is required"))
		return
	}
	if err := req.App.Validate(); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	id, err := s.broker.CreateApp(r.Context(), req.App, req.Tasks)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	s.log.Info("app created", "app", id, "name", req.App.Name)
	s.kickFinisher()
	writeJSON(w, api.Created{AppID: id})
}

func (s *Server) listApps(w http.ResponseWriter, r *http.Request) {
	out := []dataflow.AppInfo{}
	for _, id := range s.broker.AppIDs() {
		info, err := s.broker.AppInfo(r.Context(), id)
		if err != nil {
			fail(w, err)
			return
		}
		out = append(out, *info)
	}
	writeJSON(w, out)
}

func (s *Server) appInfo(ctx context.Context, id int64) (*dataflow.AppInfo, error) {
	info, err := s.broker.AppInfo(ctx, id)
	if err != nil {
		return nil, err
	}
	if info.PilotPools, err = s.broker.Pools(ctx, id); err != nil {
		return nil, err
	}
	if info.Slots, err = s.broker.SlotStates(ctx, id); err != nil {
		return nil, err
	}
	info.Why = s.why(info)
	for _, st := range info.Slots {
		info.Why = append(info.Why, fmt.Sprintf("slot %s of module %s is %s after %d failed starts in a row: %s",
			st.Slot, st.Module, st.State, st.Failures, st.Reason))
	}
	for _, p := range info.PilotPools {
		switch {
		case p.Paused:
			info.Why = append(info.Why, fmt.Sprintf("pool %s on cluster %s is paused after %d failed submissions in a row (resume with `scalebox app start %d`): %s",
				p.Pool, p.Cluster, p.Failures, info.ID, p.LastError))
		case p.Failures > 0:
			info.Why = append(info.Why, fmt.Sprintf("pool %s on cluster %s: last submission failed (%d in a row), retrying: %s",
				p.Pool, p.Cluster, p.Failures, p.LastError))
		}
	}
	return info, nil
}

// why explains, for a running app with nothing running, what it waits for.
func (s *Server) why(info *dataflow.AppInfo) []string {
	var out []string
	switch info.Status {
	case dataflow.AppInitial, dataflow.AppPaused:
		return []string{fmt.Sprintf("app is %s: nothing is dispatched until `scalebox app start %d`", info.Status, info.ID)}
	case dataflow.AppRunning:
	default:
		return nil
	}
	if info.Tasks[dataflow.TaskRunning]+info.Tasks[dataflow.TaskLeased] > 0 {
		return nil
	}
	if info.Tasks[dataflow.TaskReady] > 0 && info.Pilots == 0 {
		out = append(out, fmt.Sprintf("%d tasks are ready but no pilot is connected", info.Tasks[dataflow.TaskReady]))
	}
	if n := info.Tasks[dataflow.TaskRetrying]; n > 0 {
		out = append(out, fmt.Sprintf("%d tasks wait for their retry backoff", n))
	}
	total := 0
	for _, n := range info.Tasks {
		total += n
	}
	if total == 0 {
		out = append(out, "the app has no tasks yet: add some with `scalebox task add`")
	}
	return out
}

func (s *Server) appStatus(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	info, err := s.appInfo(r.Context(), id)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, info)
}

func (s *Server) waitApp(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	wait := 30 * time.Second
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, fmt.Errorf("timeout %q is not a duration", v))
			return
		}
		wait = min(d, 5*time.Minute)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		ch := s.changes()
		_, st, err := s.broker.App(id)
		if err != nil {
			fail(w, err)
			return
		}
		if st.Done() {
			break
		}
		select {
		case <-ch:
			continue
		case <-timer.C:
		case <-r.Context().Done():
			return
		}
		break
	}
	info, err := s.appInfo(r.Context(), id)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, info)
}

func (s *Server) setStatus(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	var req api.SetStatus
	if !decode(w, r, &req) {
		return
	}
	switch req.Status {
	case dataflow.AppRunning, dataflow.AppPaused, dataflow.AppFinished, dataflow.AppFailed, dataflow.AppCancelled:
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("status %q: want RUNNING, PAUSED, FINISHED, FAILED or CANCELLED", req.Status))
		return
	}
	if err := s.broker.SetAppStatus(r.Context(), id, req.Status, req.Result); err != nil {
		fail(w, err)
		return
	}
	if req.Status == dataflow.AppRunning {
		// Starting an app again is how a user resumes pools paused by
		// failed submissions, after fixing the cause.
		if err := s.broker.ResumePools(r.Context(), id); err != nil {
			fail(w, err)
			return
		}
	}
	s.log.Info("app status set", "app", id, "status", req.Status)
	s.statusChanged()
	writeJSON(w, struct{}{})
}

func (s *Server) addTasks(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	var req api.AddTasks
	if !decode(w, r, &req) {
		return
	}
	n, err := s.broker.AddTasks(r.Context(), id, req.Messages)
	if err != nil {
		if errors.Is(err, broker.ErrNotFound) || errors.Is(err, broker.ErrAppEnded) {
			fail(w, err)
		} else {
			writeError(w, http.StatusBadRequest, err)
		}
		return
	}
	writeJSON(w, api.Added{Added: n})
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	q := r.URL.Query()
	f := broker.TaskFilter{Module: q.Get("module"), State: dataflow.TaskState(q.Get("state"))}
	if f.State != "" && !validState(f.State) {
		writeError(w, http.StatusBadRequest, fmt.Errorf("state %q is not a task state", f.State))
		return
	}
	f.Limit, _ = strconv.Atoi(q.Get("limit"))
	f.After, _ = strconv.ParseInt(q.Get("after"), 10, 64)
	out, err := s.broker.Tasks(r.Context(), id, f)
	if err != nil {
		fail(w, err)
		return
	}
	if out == nil {
		out = []dataflow.TaskInfo{}
	}
	writeJSON(w, out)
}

func validState(s dataflow.TaskState) bool {
	for _, st := range dataflow.AllTaskStates {
		if st == s {
			return true
		}
	}
	return false
}

func (s *Server) listPilots(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	out, err := s.broker.Pilots(r.Context(), id)
	if err != nil {
		fail(w, err)
		return
	}
	if out == nil {
		out = []dataflow.PilotInfo{}
	}
	writeJSON(w, out)
}

func (s *Server) showTask(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "task")
	if !ok {
		return
	}
	t, err := s.broker.Task(r.Context(), id)
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, t)
}

func (s *Server) stateOp(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	var op dataflow.StateOp
	if !decode(w, r, &op) {
		return
	}
	switch op.Kind {
	case "semaphore", "variable":
	default:
		writeError(w, http.StatusBadRequest, fmt.Errorf("kind %q: want semaphore or variable", op.Kind))
		return
	}
	v, err := s.broker.ApplyStateOp(r.Context(), id, op)
	if err != nil {
		if errors.Is(err, broker.ErrNotFound) {
			fail(w, err)
		} else {
			writeError(w, http.StatusBadRequest, err)
		}
		return
	}
	writeJSON(w, api.StateResult{Value: v})
}

func (s *Server) listSemaphores(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	q := r.URL.Query()
	var out map[string]int64
	var err error
	if re := q.Get("regex"); re != "" {
		rx, cerr := regexp.Compile("^(?:" + re + ")$")
		if cerr != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("regex %q: %w", re, cerr))
			return
		}
		out, err = s.broker.SemaphoresMatching(r.Context(), id, rx)
	} else {
		out, err = s.broker.Semaphores(r.Context(), id, q.Get("prefix"))
	}
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, out)
}

func (s *Server) listVariables(w http.ResponseWriter, r *http.Request) {
	id, ok := pathID(w, r, "app")
	if !ok {
		return
	}
	out, err := s.broker.Variables(r.Context(), id, r.URL.Query().Get("prefix"))
	if err != nil {
		fail(w, err)
		return
	}
	writeJSON(w, out)
}
