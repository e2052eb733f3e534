package pilot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/internal/timerslack"
)

// TailBytes is how much of a task's stdout and stderr is kept.
const TailBytes = 16 << 10

// readTail returns the last max bytes of f, "" for /dev/null.
func readTail(f *os.File, max int64) string {
	if null, _ := devNull(); f == null {
		return ""
	}
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
//
// It forks with syscall.ForkExec rather than os/exec: a Cmd with a context
// starts a goroutine per run to watch it, dedups the environment, and
// duplicates the pidfd, and on a node of short tasks the wakeups of that
// goroutine alone were a fifth of the pilot's futex calls (bench/e2e).
// Outputs go to files, so there is nothing for a Cmd to copy.
func runProcess(ctx context.Context, c Command) Result {
	var res Result
	fail := func(code int, msg string) Result {
		res.Ended = time.Now()
		if res.Started.IsZero() {
			res.Started = res.Ended
		}
		res.ExitCode, res.SystemErr = code, msg
		return res
	}
	if c.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.Timeout)
		defer cancel()
	}
	argv0 := c.Argv[0]
	if !strings.Contains(argv0, "/") {
		lp, err := exec.LookPath(argv0)
		if err != nil {
			return fail(dataflow.ExitNotFound, err.Error())
		}
		argv0 = lp
	}
	null, err := devNull()
	if err != nil {
		return fail(dataflow.ExitRuntime, err.Error())
	}
	files := [3]*os.File{null, null, null}
	for i, path := range [2]string{c.Stdout, c.Stderr} {
		if path == "" {
			continue
		}
		f, done, err := c.Logs.open(path)
		if err != nil {
			return fail(dataflow.ExitRuntime, err.Error())
		}
		defer done()
		files[i+1] = f
	}
	env := c.Env
	if env == nil {
		env = os.Environ()
	}
	if err := ctx.Err(); err != nil {
		return fail(dataflow.ExitRuntime, err.Error())
	}
	pidfd := -1
	sys := &syscall.SysProcAttr{Setpgid: true}
	if pidfdWorks() {
		sys.PidFD = &pidfd
	}
	attr := &syscall.ProcAttr{Dir: c.Dir, Env: env, Sys: sys,
		Files: []uintptr{files[0].Fd(), files[1].Fd(), files[2].Fd()}}
	res.Started = time.Now()
	var pid int
	timerslack.ForChild(func() { pid, err = syscall.ForkExec(argv0, c.Argv, attr) })
	runtime.KeepAlive(files)
	if err != nil {
		code, _ := startFailure(err)
		return fail(code, fmt.Sprintf("fork/exec %s: %v", argv0, err))
	}
	// Kills from ctx stop once the leader is reaped: its pid, and so the
	// group id, may then belong to someone else.
	var mu sync.Mutex
	reaped := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !reaped {
			syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	defer stop()
	if pidfd < 0 || !waitExited(pidfd) {
		waitExitedBlocking(pid)
	}
	mu.Lock()
	reaped = true
	mu.Unlock()
	// The leader is a zombie until reaped, so -pid is still its group.
	syscall.Kill(-pid, syscall.SIGKILL)
	var ws syscall.WaitStatus
	for {
		_, err = syscall.Wait4(pid, &ws, 0, nil)
		if err != syscall.EINTR {
			break
		}
	}
	res.Ended = time.Now()
	res.Stdout = readTail(files[1], TailBytes)
	res.Stderr = readTail(files[2], TailBytes)
	switch {
	case ctx.Err() == context.DeadlineExceeded && c.Timeout > 0:
		res.ExitCode, res.TimedOut = dataflow.ExitTimeout, true
		res.SystemErr = "killed after task_max_seconds=" + c.Timeout.String()
	case err != nil:
		res.ExitCode, res.SystemErr = dataflow.ExitRuntime, fmt.Sprintf("wait %s: %v", argv0, err)
	case ws.Signaled():
		res.ExitCode = 128 + int(ws.Signal())
	default:
		res.ExitCode = ws.ExitStatus()
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
