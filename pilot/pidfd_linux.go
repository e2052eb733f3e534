package pilot

import (
	"os"

	"golang.org/x/sys/unix"
)

// waitExited returns once the process behind pidfd has exited, leaving it
// to be reaped by exec.Cmd.Wait. It waits in the network poller: a
// blocking wait would hold an OS thread per running task (128 on a full
// node), and each one that blocks longer than a scheduler tick makes the
// Go runtime hand its processor to another thread and wake it back, which
// on a node of short tasks costs more CPU than the pilot's own work
// (bench/e2e). It reports false if the fd cannot be polled; the caller
// then waits the ordinary way. It takes ownership of pidfd.
func waitExited(pidfd int) bool {
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return false
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	exited := false
	err = rc.Read(func(fd uintptr) bool {
		var info unix.Siginfo
		// WNOWAIT: look, do not reap; Signo stays 0 while it runs.
		if werr := unix.Waitid(unix.P_PIDFD, int(fd), &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); werr != nil {
			return werr != unix.EAGAIN && werr != unix.EINTR // give up on anything else
		}
		exited = info.Signo != 0
		return exited
	})
	return err == nil && exited
}
