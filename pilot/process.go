package pilot

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// TailBytes is how much of a task's stdout and stderr is kept.
const TailBytes = 16 << 10

// tail keeps the last max bytes written to it.
type tail struct {
	mu    sync.Mutex
	max   int
	buf   []byte
	total int64
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total += int64(len(p))
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return len(p), nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	t.buf = append(t.buf, p...)
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// Command is one script invocation.
type Command struct {
	Argv    []string
	Env     []string
	Dir     string
	Timeout time.Duration // 0 = none
}

// Result of a Command.
type Result struct {
	ExitCode  int
	Started   time.Time
	Ended     time.Time
	Stdout    string
	Stderr    string
	TimedOut  bool
	SystemErr string // why the system, not the script, chose the code
}

// runProcess runs argv directly (never through a shell) in its own process
// group. On timeout or ctx end the whole group is killed; the group is
// also killed after the script exits so no stray child outlives its task.
func runProcess(ctx context.Context, c Command) Result {
	var res Result
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	cmd.Env = c.Env
	cmd.Dir = c.Dir
	stdout, stderr := newTail(TailBytes), newTail(TailBytes)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A grandchild holding stdout open must not hold the slot forever.
	cmd.WaitDelay = 2 * time.Second
	res.Started = time.Now()
	err := cmd.Start()
	if err != nil {
		res.Ended = time.Now()
		res.ExitCode, res.SystemErr = startFailure(err)
		return res
	}
	err = cmd.Wait()
	res.Ended = time.Now()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	if ctx.Err() == context.DeadlineExceeded && c.Timeout > 0 {
		res.ExitCode, res.TimedOut = dataflow.ExitTimeout, true
		res.SystemErr = "killed after task_max_seconds=" + c.Timeout.String()
		return res
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		res.ExitCode = 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.ExitCode = 128 + int(ws.Signal())
		} else {
			res.ExitCode = ee.ExitCode()
		}
	case errors.Is(err, exec.ErrWaitDelay):
		res.ExitCode = cmd.ProcessState.ExitCode()
	default:
		res.ExitCode, res.SystemErr = dataflow.ExitRuntime, err.Error()
	}
	return res
}

func startFailure(err error) (int, string) {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dataflow.ExitNotFound, err.Error()
	case errors.Is(err, fs.ErrPermission), errors.Is(err, syscall.ENOEXEC):
		return dataflow.ExitNotRunnable, err.Error()
	}
	return dataflow.ExitRuntime, err.Error()
}

// findScript looks a module script up: the env override, then code_path
// (/app/bin), then /app/share/bin. It returns "" when there is none.
func findScript(name, override string, dirs []string) string {
	if override != "" {
		return override
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		p := d + "/" + name
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}
