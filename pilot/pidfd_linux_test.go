package pilot

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// waitExited must return only after the child has exited and must leave
// it to Wait, which still sees its exit status.
func TestWaitExitedLeavesChildToReap(t *testing.T) {
	for _, tc := range []struct {
		script string
		code   int
	}{{"exit 0", 0}, {"exit 3", 3}, {"sleep 0.2; exit 7", 7}} {
		pidfd := -1
		cmd := exec.Command("/bin/sh", "-c", tc.script)
		cmd.SysProcAttr = &syscall.SysProcAttr{PidFD: &pidfd}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if pidfd < 0 {
			t.Skip("this kernel gives no pidfd; the pilot waits the ordinary way")
		}
		if !waitExited(pidfd) {
			t.Fatalf("%q: waitExited gave up", tc.script)
		}
		// The child has exited but is not reaped: a zombie.
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
		if err != nil {
			t.Fatalf("%q: child gone (reaped?) after waitExited: %v", tc.script, err)
		}
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) == 0 || f[0] != "Z" {
			t.Fatalf("%q: child state %q after waitExited, want Z (exited, not reaped)", tc.script, f[:min(len(f), 1)])
		}
		err = cmd.Wait()
		if got := cmd.ProcessState.ExitCode(); got != tc.code {
			t.Fatalf("%q: exit code %d (%v), want %d", tc.script, got, err, tc.code)
		}
	}
}
