// Package local is the batch system of `scalebox run` on one machine: it
// starts pilots as child processes of the calling process, behind the same
// dataflow.BatchSystem interface a Slurm cluster implements.
package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/internal/timerslack"
)

// BatchSystem runs `scalebox pilot` processes locally.
type BatchSystem struct {
	// Binary is the scalebox executable.
	Binary string
	// LogDir receives one log file per pilot.
	LogDir string
	// Args are extra global flags for the pilot (e.g. --log-level).
	Args []string

	mu   sync.Mutex
	jobs map[string]*job
	seq  int
}

type job struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

var _ dataflow.BatchSystem = (*BatchSystem)(nil)

// Submit starts a pilot process. It dies with its parent (PR_SET_PDEATHSIG)
// so an interrupted `scalebox run` leaves no pilots behind.
func (b *BatchSystem) Submit(ctx context.Context, req dataflow.PilotRequest) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.jobs == nil {
		b.jobs = map[string]*job{}
	}
	b.seq++
	id := "local-" + strconv.Itoa(b.seq)
	args := append([]string{"--server", req.Server}, b.Args...)
	if req.TokenFile != "" {
		args = append(args, "--token-file", req.TokenFile)
	}
	args = append(args, "pilot", "--app", strconv.FormatInt(req.AppID, 10), "--job-id", id)
	if req.Head {
		args = append(args, "--head")
	}
	if req.HeadOnly {
		args = append(args, "--head-only")
	}
	cmd := exec.Command(b.Binary, args...)
	if b.LogDir != "" {
		if err := os.MkdirAll(b.LogDir, 0o700); err != nil {
			return "", fmt.Errorf("submit local pilot: %w", err)
		}
		f, err := os.OpenFile(filepath.Join(b.LogDir, id+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return "", fmt.Errorf("submit local pilot: %w", err)
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	// A pilot passes the slack it inherits on to its tasks.
	var err error
	timerslack.ForChild(func() { err = cmd.Start() })
	if err != nil {
		return "", fmt.Errorf("submit local pilot: %w", err)
	}
	j := &job{cmd: cmd, done: make(chan struct{})}
	go func() { j.err = cmd.Wait(); close(j.done) }()
	b.jobs[id] = j
	return id, nil
}

// Status reports whether each pilot process is still running.
func (b *BatchSystem) Status(ctx context.Context, ids []string) (map[string]dataflow.JobState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]dataflow.JobState, len(ids))
	for _, id := range ids {
		j := b.jobs[id]
		switch {
		case j == nil:
			out[id] = dataflow.JobUnknown
		default:
			select {
			case <-j.done:
				if j.err != nil {
					out[id] = dataflow.JobFailed
				} else {
					out[id] = dataflow.JobDone
				}
			default:
				out[id] = dataflow.JobRunning
			}
		}
	}
	return out, nil
}

// Cancel sends SIGTERM, then SIGKILL to pilots still there after grace.
func (b *BatchSystem) Cancel(ctx context.Context, ids []string) error {
	b.mu.Lock()
	var jobs []*job
	for _, id := range ids {
		if j := b.jobs[id]; j != nil {
			jobs = append(jobs, j)
		}
	}
	b.mu.Unlock()
	for _, j := range jobs {
		j.cmd.Process.Signal(syscall.SIGTERM)
	}
	grace := time.NewTimer(10 * time.Second)
	defer grace.Stop()
	for _, j := range jobs {
		select {
		case <-j.done:
		case <-grace.C:
			j.cmd.Process.Kill()
		case <-ctx.Done():
			j.cmd.Process.Kill()
		}
	}
	return nil
}

// Wait blocks until every pilot exited or ctx ends.
func (b *BatchSystem) Wait(ctx context.Context) error {
	b.mu.Lock()
	var jobs []*job
	for _, j := range b.jobs {
		jobs = append(jobs, j)
	}
	b.mu.Unlock()
	for _, j := range jobs {
		select {
		case <-j.done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// IDs lists the submitted jobs.
func (b *BatchSystem) IDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]string, 0, len(b.jobs))
	for id := range b.jobs {
		out = append(out, id)
	}
	return out
}

// Ping always succeeds: the local machine is there.
func (b *BatchSystem) Ping(ctx context.Context) error { return nil }
