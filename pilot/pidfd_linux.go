package pilot

import (
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// waitExited returns once the process behind pidfd has exited, leaving it
// to be reaped by runProcess. It waits in the network poller: a
// blocking wait would hold an OS thread per running task (128 on a full
// node), and each one that blocks longer than a scheduler tick makes the
// Go runtime hand its processor to another thread and wake it back, which
// on a node of short tasks costs more CPU than the pilot's own work
// (bench/e2e). It reports false if the fd cannot be polled; the caller
// then waits the ordinary way. It takes ownership of pidfd.
func waitExited(pidfd int) bool {
	// F_SETFL alone (not unix.SetNonblock's read-modify-write): a pidfd
	// has no other status flag to keep.
	if _, err := unix.FcntlInt(uintptr(pidfd), unix.F_SETFL, unix.O_NONBLOCK); err != nil {
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
		// Asked before the first wait too: the poller forgets a readiness
		// edge that came before Read, so an exit that came first would
		// never be seen.
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

// pidfdWorks is whether clone can hand out a pidfd that waitid accepts
// (Linux 5.4): RHEL 8's kernel cannot, and there the pilot waits with a
// blocking waitid instead.
var pidfdWorks = sync.OnceValue(func() bool {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	var info unix.Siginfo
	// Our own process is not our child: ECHILD means P_PIDFD is known.
	err = unix.Waitid(unix.P_PIDFD, fd, &info, unix.WEXITED|unix.WNOHANG, nil)
	return err == unix.ECHILD
})

// waitExitedBlocking returns once pid has exited, leaving it to be reaped:
// while it is a zombie its pid, and so its process group id, stay ours.
func waitExitedBlocking(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if err != unix.EINTR {
			return
		}
	}
}
