//go:build linux && cgo

// Package timerslack gives scalebox's own threads a coarse timer slack and
// the programs it starts for modules the slack they would have had.
//
// A pilot of short tasks is a process whose goroutines are in a system call
// most of the time (fork, wait, file work). The Go runtime's sysmon thread
// then sleeps 20 µs at a time, and every idle thread parks with the next
// timer as its timeout; with Linux's default slack of 50 µs each of those
// sleeps is a wake-up of its own. A slack of 2 ms lets the kernel fold them
// together: 12–15 % more tasks/s end to end in alternating pairs
// (bench/e2e/ab.sh, docs/benchmarks.md), with nothing scalebox waits for
// needing better than 2 ms (its shortest timer is the 50 ms report flush).
//
// The slack has to be set before the runtime starts its threads, since a
// thread inherits it from the thread that creates it and prctl changes only
// the calling thread: so a C constructor sets it, as runc's nsexec does its
// work, before Go's runtime runs. A child inherits its slack from the
// thread that forks it, so ForChild forks from a thread set back to the
// slack the process was started with: a module's run.sh and what it starts
// never see ours. The pilot forks scripts, local pilots and container
// agents that way, so a user's slack reaches their tasks.
//
// SCALEBOX_TIMERSLACK_NS sets the slack (0: leave the inherited one, as
// before this package); the pilot does not pass SCALEBOX_* variables on
// to module scripts.
package timerslack

/*
#include <stdlib.h>
#include <sys/prctl.h>

#define SCALEBOX_SLACK_NS 2000000UL
// Linux's slack for an ordinary thread (init_task.timer_slack_ns).
#define KERNEL_DEFAULT_NS 50000UL

static unsigned long scalebox_own_ns;  // 0: not raised
static unsigned long scalebox_child_ns;

static void __attribute__((constructor)) scalebox_timerslack(void) {
	unsigned long want = SCALEBOX_SLACK_NS;
	const char *v = getenv("SCALEBOX_TIMERSLACK_NS");
	if (v != 0 && *v != 0) {
		char *end = 0;
		unsigned long n = strtoul(v, &end, 10);
		if (*end == 0 && n <= 1000000000UL) want = n;  // else the default
	}
	if (want == 0) return;
	int cur = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	if (cur <= 0) return;
	// A scalebox process started by another (a local pilot, the agent in a
	// container) inherits the raised slack; its children get Linux's.
	scalebox_child_ns = (unsigned long)cur == want ? KERNEL_DEFAULT_NS : (unsigned long)cur;
	if (prctl(PR_SET_TIMERSLACK, want, 0, 0, 0) == 0) scalebox_own_ns = want;
}

static unsigned long scalebox_slack_own(void) { return scalebox_own_ns; }
static unsigned long scalebox_slack_child(void) { return scalebox_child_ns; }
*/
import "C"

import (
	"runtime"

	"golang.org/x/sys/unix"
)

var own, child = uint64(C.scalebox_slack_own()), uint64(C.scalebox_slack_child())

// Own is the slack of this process's threads, 0 if it was left as inherited.
func Own() uint64 { return own }

// Child is the slack a program started through ForChild gets (0 when Own
// is 0: it then inherits whatever the forking thread has).
func Child() uint64 {
	if own == 0 {
		return 0
	}
	return child
}

// ForChild runs fork, which must start the child process on the calling
// goroutine's thread (syscall.ForkExec and exec.Cmd.Start do), with that
// thread's slack set to Child, so the child's slack and its default are
// Child. The thread is set back to ours after, not to what it read: every
// thread has ours, and a task start need not ask.
func ForChild(fork func()) {
	if own == 0 {
		fork()
		return
	}
	if onThread(child, own, fork) != nil {
		fork()
	}
}

// With runs fork with the calling thread's slack set to ns, then sets it
// back to what it was: to start a process with a slack of its own.
func With(ns uint64, fork func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return err
	}
	return onThread(ns, uint64(old), fork)
}

// onThread runs fork on one thread with its slack at ns, then restore. It
// does not run fork if the slack cannot be set.
func onThread(ns, restore uint64, fork func()) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(ns), 0, 0, 0); err != nil {
		return err
	}
	// Back after, or every thread that ever forked a task would drift to
	// the child's slack.
	defer unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(restore), 0, 0, 0)
	fork()
	return nil
}
