package pilot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/staging"
)

// staged is what stage-in put into a slot's work dir for one run, so it
// can be removed afterwards: the next task must not find the last one's
// inputs.
type staged struct {
	files []string // work-dir paths
	stats dataflow.Stage
	// cached and uncached are data keys for the head's record of what
	// this node's cache holds (dataflow.Completion.Cached).
	cached, uncached []string
	// lost is the task whose input on this node's tier was missing
	// (dataflow.Completion.InputLost); stage-in stops at the first.
	lost int64
}

// errStage marks a transfer failure: the attempt fails with
// dataflow.ExitRuntime and the reason, and retry rules decide the rest.
type errStage struct{ err error }

func (e errStage) Error() string { return e.err.Error() }
func (e errStage) Unwrap() error { return e.err }

// stageIn copies the tasks' declared inputs into the work dir, verified.
func (s *slot) stageIn(ctx context.Context, tasks []dataflow.LeasedTask) (*staged, error) {
	st := &staged{}
	t0 := time.Now()
	defer func() { st.stats.StageInMS = time.Since(t0).Milliseconds() }()
	for _, t := range tasks {
		in, _, err := dataflow.TaskStageSpecs(s.mod(), t.Headers)
		if err != nil {
			return st, errStage{err}
		}
		for _, sp := range in {
			from, raw, err := s.stageURL(sp.From, t)
			if err != nil {
				return st, err
			}
			to, err := s.workPath(sp.To, t)
			if err != nil {
				return st, errStage{fmt.Errorf("stage_in %s: %w", sp.From, err)}
			}
			var n int64
			if s.mod().StageCache && !from.OnNode() {
				n, err = s.fromCache(ctx, from, dataflow.DataKeyOf(raw), to, st)
			} else {
				n, err = s.copy(ctx, from, s.workURL(to))
			}
			if err != nil {
				if from.OnNode() && errors.Is(err, fs.ErrNotExist) {
					st.lost = t.ID
				}
				return st, errStage{fmt.Errorf("stage_in %s -> %s: %w", from, to, err)}
			}
			st.files = append(st.files, to)
			st.stats.StageInBytes += n
		}
	}
	return st, nil
}

// stageOut copies the tasks' declared outputs from the work dir to their
// URLs and removes them there (stage_out moves). onNode reports whether
// any went to a tier of this node, which only tasks here can read.
func (s *slot) stageOut(ctx context.Context, tasks []dataflow.LeasedTask, st *staged) (onNode bool, err error) {
	t0 := time.Now()
	defer func() { st.stats.StageOutMS = time.Since(t0).Milliseconds() }()
	for _, t := range tasks {
		_, out, err := dataflow.TaskStageSpecs(s.mod(), t.Headers)
		if err != nil {
			return onNode, errStage{err}
		}
		for _, sp := range out {
			from, err := s.workPath(sp.From, t)
			if err != nil {
				return onNode, errStage{fmt.Errorf("stage_out %s: %w", sp.From, err)}
			}
			to, _, err := s.stageURL(sp.To, t)
			if err != nil {
				return onNode, err
			}
			n, err := s.copy(ctx, s.workURL(from), to)
			if err != nil {
				return onNode, errStage{fmt.Errorf("stage_out %s -> %s: %w", from, to, err)}
			}
			st.files = append(st.files, from)
			st.stats.StageOutBytes += n
			onNode = onNode || to.OnNode()
		}
	}
	return onNode, nil
}

// cleanup removes what staging put into or took out of the work dir.
func (s *slot) cleanup(st *staged) {
	if st == nil {
		return
	}
	for _, f := range st.files {
		os.Remove(filepath.Join(s.host.Work, filepath.FromSlash(f)))
	}
}

// stageURL fills and parses a URL template (confinement is checked here
// and by the store); raw is the filled template, as the head expands it.
func (s *slot) stageURL(tmpl string, t dataflow.LeasedTask) (u staging.URL, raw string, err error) {
	if raw, err = dataflow.ExpandTemplate(tmpl, t.Body, t.Headers, s.headerEnv); err != nil {
		return u, raw, errStage{err}
	}
	if u, err = staging.ParseURL(raw); err != nil {
		return u, raw, errStage{err}
	}
	return u, raw, nil
}

// workPath fills a WORK_DIR path template and refuses a result that
// leaves the work dir.
func (s *slot) workPath(tmpl string, t dataflow.LeasedTask) (string, error) {
	p, err := dataflow.ExpandTemplate(tmpl, t.Body, t.Headers, s.headerEnv)
	if err != nil {
		return "", err
	}
	if err := dataflow.CheckWorkPath(p); err != nil {
		return "", err
	}
	return p, nil
}

// workURL names a file of the slot's work dir as a staging URL.
func (s *slot) workURL(rel string) staging.URL {
	return staging.URL{Scheme: staging.SchemeFile, Path: path.Join(filepath.ToSlash(s.host.Work), rel)}
}

// headerEnv is the fallback of a missing header: the module's
// environments, then the pilot's (Scalebox's module-default convention).
func (s *slot) headerEnv(name string) string {
	if v := s.mod().Env(name); v != "" {
		return v
	}
	return os.Getenv(name)
}

// copy moves one file between tiers and returns the bytes sent.
func (s *slot) copy(ctx context.Context, from, to staging.URL) (int64, error) {
	src, fname, err := s.p.tiers.Open(ctx, from, staging.Read)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, tname, err := s.p.tiers.Open(ctx, to, staging.Write)
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	res, err := staging.Copy(ctx, src, fname, dst, tname, nil)
	s.p.usage.forget()
	if err != nil {
		return 0, err
	}
	return res.Bytes, nil
}

// stageFailure is the result of an attempt whose data could not be moved.
func stageFailure(err error) Result {
	now := time.Now()
	var es errStage
	msg := err.Error()
	if !errors.As(err, &es) {
		msg = "staging: " + msg
	}
	return Result{ExitCode: dataflow.ExitRuntime, Started: now, Ended: now, SystemErr: msg}
}

// fromCache gives the task its own copy of a shared or remote file from
// the node's cache, fetching it into the cache first if needed, and
// returns the bytes read from the source (0 on a hit). key is the input's
// data key, reported to the head with what the fetch evicted.
func (s *slot) fromCache(ctx context.Context, from staging.URL, key, to string, st *staged) (int64, error) {
	c, err := s.p.cache()
	if err != nil {
		return 0, err
	}
	src, name, err := s.p.tiers.Open(ctx, from, staging.Read)
	if err != nil {
		return 0, err
	}
	h, err := c.Get(ctx, from, src, name, key)
	src.Close()
	s.p.usage.forget()
	if h != nil {
		st.uncached = append(st.uncached, h.Evicted...)
	}
	if err != nil {
		return 0, err
	}
	defer h.Release()
	st.cached = append(st.cached, key)
	if _, err := staging.CopyOut(h, filepath.Join(s.host.Work, filepath.FromSlash(to))); err != nil {
		return 0, err
	}
	return h.Bytes, nil
}
