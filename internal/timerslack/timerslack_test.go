//go:build linux && cgo

package timerslack

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Run as a helper (the test binary started again), the process prints
// what its constructor decided.
func TestMain(m *testing.M) {
	if os.Getenv("TIMERSLACK_HELPER") == "1" {
		fmt.Printf("%d %d\n", Own(), Child())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func raised(t *testing.T) {
	t.Helper()
	if Own() == 0 {
		t.Skip("SCALEBOX_TIMERSLACK_NS=0: the slack is left as inherited")
	}
}

// slackOfChild forks `cat /proc/self/timerslack_ns` with start and
// returns what it printed.
func slackOfChild(t *testing.T, start func(func())) uint64 {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	attr := &syscall.ProcAttr{Files: []uintptr{0, w.Fd(), 2}}
	var pid int
	start(func() { pid, err = syscall.ForkExec("/bin/cat", []string{"cat", "/proc/self/timerslack_ns"}, attr) })
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	var ws syscall.WaitStatus
	syscall.Wait4(pid, &ws, 0, nil)
	buf := make([]byte, 64)
	n, _ := r.Read(buf)
	v, err := strconv.ParseUint(strings.TrimSpace(string(buf[:n])), 10, 64)
	if err != nil {
		t.Fatalf("child printed %q: %v", buf[:n], err)
	}
	return v
}

func TestThreadsRunWithTheRaisedSlack(t *testing.T) {
	raised(t)
	if Own() != 2_000_000 {
		t.Errorf("Own() = %d, want the default 2 ms", Own())
	}
	// Threads made by the runtime after start-up inherit it: look from
	// many goroutines, each locked to whatever thread it got.
	const n = 16
	got := make(chan int, n)
	for range n {
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			v, _ := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
			got <- v
		}()
	}
	for range n {
		if v := <-got; uint64(v) != Own() {
			t.Errorf("a thread has slack %d, want %d", v, Own())
		}
	}
}

func TestForChildGivesTheChildItsOwnSlack(t *testing.T) {
	raised(t)
	if got := slackOfChild(t, func(f func()) { f() }); got != Own() {
		t.Errorf("a child forked the ordinary way has slack %d, want ours (%d): the inheritance ForChild undoes", got, Own())
	}
	if got := slackOfChild(t, ForChild); got != Child() {
		t.Errorf("a child forked through ForChild has slack %d, want %d", got, Child())
	}
	// The forking thread is back at ours afterwards.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ForChild(func() {})
	if v, _ := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0); uint64(v) != Own() {
		t.Errorf("after ForChild the thread has slack %d, want %d", v, Own())
	}
}

// helper starts this test binary as a helper with the given environment
// additions, forked from a thread whose slack is parentSlack, and returns
// its Own and Child.
func helper(t *testing.T, parentSlack uint64, env ...string) (own, child uint64) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{"TIMERSLACK_HELPER=1"}, env...)...)
	var out []byte
	var err error
	if werr := With(parentSlack, func() { out, err = cmd.Output() }); werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Sscan(string(out), &own, &child); err != nil {
		t.Fatalf("helper printed %q: %v", out, err)
	}
	return own, child
}

func TestConstructorDecides(t *testing.T) {
	for _, tc := range []struct {
		name       string
		parent     uint64
		env        []string
		own, child uint64
	}{
		{"started by a shell", 50_000, nil, 2_000_000, 50_000},
		{"a user's own slack is what its tasks get", 123_456, nil, 2_000_000, 123_456},
		// A local pilot or the agent in a container: started by a
		// scalebox process, it inherits the raised slack, which its
		// tasks must not.
		{"started by scalebox", 2_000_000, nil, 2_000_000, 50_000},
		{"SCALEBOX_TIMERSLACK_NS", 50_000, []string{"SCALEBOX_TIMERSLACK_NS=10000000"}, 10_000_000, 50_000},
		{"SCALEBOX_TIMERSLACK_NS=0 leaves it", 50_000, []string{"SCALEBOX_TIMERSLACK_NS=0"}, 0, 0},
		{"a bad value means the default", 50_000, []string{"SCALEBOX_TIMERSLACK_NS=2ms"}, 2_000_000, 50_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			own, child := helper(t, tc.parent, tc.env...)
			if own != tc.own || child != tc.child {
				t.Errorf("Own, Child = %d, %d; want %d, %d", own, child, tc.own, tc.child)
			}
		})
	}
}
