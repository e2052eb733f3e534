package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalebox-hpc/scalebox/internal/timerslack"
)

// A user's timer slack reaches the tasks of `scalebox run` unchanged,
// through the local pilot processes, while scalebox's own processes run
// with the coarse one (internal/timerslack).
func TestTasksKeepTheCallersTimerSlack(t *testing.T) {
	if os.Getenv("SCALEBOX_TIMERSLACK_NS") != "" {
		t.Skip("SCALEBOX_TIMERSLACK_NS is set")
	}
	out := t.TempDir()
	dir := writeFiles(t, map[string]string{
		"app.yaml": "name: slack\nmodules:\n  m:\n    base_image: host\n    arguments: {code_path: ./m}\n    parameters: {start_task: x}\n",
		"m/run.sh": "#!/bin/sh\ncat /proc/$$/timerslack_ns > " + filepath.Join(out, "task") +
			"\ncat /proc/$PPID/timerslack_ns > " + filepath.Join(out, "pilot") + "\n",
	})
	cmd := exec.Command(daemons, "--log-level", "warn", "--state-dir", stateDir(t), "run", "--pilots", "1", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// Started from a thread with a slack of the user's own: the child
	// inherits the forking thread's.
	var err error
	if werr := timerslack.With(123456, func() { err = cmd.Start() }); werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr.String())
	}
	for file, want := range map[string]string{"task": "123456", "pilot": "2000000"} {
		got, err := os.ReadFile(filepath.Join(out, file))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(got)) != want {
			t.Errorf("the %s's timer slack is %q, want %s", file, strings.TrimSpace(string(got)), want)
		}
	}
}
