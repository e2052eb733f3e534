package pilot

import (
	"context"
	"errors"
	"io"
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

// readTail returns the last max bytes of f.
func readTail(f *os.File, max int64) string {
	st, err := f.Stat()
	if err != nil || st.Size() == 0 {
		return ""
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	buf := make([]byte, st.Size()-off)
	n, _ := f.ReadAt(buf, off)
	return string(buf[:n])
}

// devNull is /dev/null, opened once and shared as every script's stdin.
var devNull = sync.OnceValues(func() (*os.File, error) { return os.Open(os.DevNull) })

// Command is one script invocation.
type Command struct {
	Argv    []string
	Env     []string
	Dir     string
	Timeout time.Duration // 0 = none
	// Stdout and Stderr receive the output (truncated first); their tails
	// go into the Result. Files, not pipes: no copying goroutines, and the
	// whole output of the last task stays in the slot dir for debugging.
	Stdout, Stderr string
	// Logs, if set, keeps those files open for the next run.
	Logs *scriptLogs
}

// scriptLogs holds scripts' stdout and stderr files open between runs: a
// run empties them rather than opening and closing two files (in a
// profile of a pilot running no-op tasks, a seventh of its CPU). They are
// opened O_APPEND, so a write lands at the (emptied) end and not at the
// offset the previous run's script left.
type scriptLogs struct {
	mu    sync.Mutex
	files map[string]*os.File // by path
}

// open returns path's file emptied, and the function to call when the
// run is done with it.
func (l *scriptLogs) open(path string) (*os.File, func(), error) {
	if l == nil {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o600)
		if err != nil {
			return nil, nil, err
		}
		return f, func() { f.Close() }, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.files[path]; f != nil {
		// A log someone removed is opened again, not written unseen; an
		// empty one (most tasks print nothing) needs no truncating.
		if size, ok := linkedSize(f); ok && (size == 0 || f.Truncate(0) == nil) {
			return f, func() {}, nil
		}
		f.Close()
		delete(l.files, path)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	if l.files == nil {
		l.files = map[string]*os.File{}
	}
	l.files[path] = f
	return f, func() {}, nil
}

// linkedSize is f's size, and whether f still has a name.
func linkedSize(f *os.File) (int64, bool) {
	st, err := f.Stat()
	if err != nil {
		return 0, false
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	return st.Size(), !ok || sys.Nlink > 0
}

func (l *scriptLogs) close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for path, f := range l.files {
		errs = append(errs, f.Close())
		delete(l.files, path)
	}
	return errors.Join(errs...)
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
	// os/exec would open /dev/null for a nil Stdin on every start.
	if null, err := devNull(); err == nil {
		cmd.Stdin = null
	}
	for _, out := range []struct {
		path string
		dst  *io.Writer
	}{{c.Stdout, &cmd.Stdout}, {c.Stderr, &cmd.Stderr}} {
		if out.path == "" {
			continue
		}
		f, done, err := c.Logs.open(out.path)
		if err != nil {
			res.Started, res.Ended = time.Now(), time.Now()
			res.ExitCode, res.SystemErr = dataflow.ExitRuntime, err.Error()
			return res
		}
		defer done()
		*out.dst = f
	}
	pidfd := -1
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, PidFD: &pidfd}
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
	if pidfd >= 0 {
		waitExited(pidfd) // then Wait only reaps
	}
	err = cmd.Wait()
	res.Ended = time.Now()
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	if f, ok := cmd.Stdout.(*os.File); ok {
		res.Stdout = readTail(f, TailBytes)
	}
	if f, ok := cmd.Stderr.(*os.File); ok {
		res.Stderr = readTail(f, TailBytes)
	}
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
