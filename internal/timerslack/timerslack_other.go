//go:build !linux || !cgo

package timerslack

import "errors"

// Without cgo no constructor runs before the Go runtime's threads start,
// so the slack is left as inherited.

// Own is the slack of this process's threads, 0 if it was left as inherited.
func Own() uint64 { return 0 }

// Child is the slack a program started through ForChild gets (0: inherited).
func Child() uint64 { return 0 }

// ForChild runs fork.
func ForChild(fork func()) { fork() }

// With cannot set a thread's slack here; it does not run fork.
func With(ns uint64, fork func()) error { return errors.ErrUnsupported }
