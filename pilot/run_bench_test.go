package pilot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// BenchmarkTaskRun runs one no-op task through the slot's workspace (exec,
// output files, interface files read and removed) next to a bare
// exec.Command of the same script, as xargs would run it: the difference
// of the two is what the pilot adds per task on the node.
func BenchmarkTaskRun(b *testing.B) {
	dir := b.TempDir()
	script := filepath.Join(dir, "run.sh")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho \"$1\" > \"$WORK_DIR/sink-tasks.txt\"\n"), 0o755); err != nil {
		b.Fatal(err)
	}
	wantMessages := 1
	if p := os.Getenv("SCALEBOX_BENCH_RUN"); p != "" {
		// A program that does next to nothing (a static binary making one
		// exit syscall) leaves the pilot's own cost visible.
		script, wantMessages = p, 0
	}
	d := slotDirs{Work: filepath.Join(dir, "work"), Tmp: dir, Shm: dir, Logs: filepath.Join(dir, "logs")}
	for _, p := range []string{d.Work, d.Logs} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			b.Fatal(err)
		}
	}
	env := append(os.Environ(), "WORK_DIR="+d.Work)
	b.Run("workspace", func(b *testing.B) {
		w := &workspace{env: env, d: d, scripts: map[string]string{RunScript: script}}
		defer w.close(context.Background())
		for i := 0; b.Loop(); i++ {
			resp := w.run(context.Background(), request{Script: RunScript, Args: []string{strconv.Itoa(i), "{}"}, Task: true})
			if resp.Result.ExitCode != 0 || len(resp.Outputs.Messages) != wantMessages {
				b.Fatalf("exit %d, %d messages: %+v", resp.Result.ExitCode, len(resp.Outputs.Messages), resp)
			}
		}
	})
	b.Run("exec", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			cmd := exec.Command(script, strconv.Itoa(i), "{}")
			cmd.Env, cmd.Dir = env, d.Work
			if err := cmd.Run(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
