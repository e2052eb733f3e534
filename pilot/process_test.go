package pilot

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/internal/timerslack"
)

func script(t *testing.T, dir, name, body string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRunProcessExitCodes(t *testing.T) {
	dir := t.TempDir()
	ok := script(t, dir, "ok.sh", "#!/bin/sh\necho out; echo err >&2; exit 0\n", 0o755)
	seven := script(t, dir, "seven.sh", "#!/bin/sh\nexit 7\n", 0o755)
	noexec := script(t, dir, "noexec.sh", "#!/bin/sh\nexit 0\n", 0o644)
	killed := script(t, dir, "killed.sh", "#!/bin/sh\nkill -9 $$\n", 0o755)
	tests := []struct {
		argv []string
		code int
	}{
		{[]string{ok}, 0},
		{[]string{seven}, 7},
		{[]string{noexec}, dataflow.ExitNotRunnable},
		{[]string{filepath.Join(dir, "missing.sh")}, dataflow.ExitNotFound},
		{[]string{killed}, 128 + 9},
	}
	for _, tt := range tests {
		res := runProcess(context.Background(), Command{Argv: tt.argv, Dir: dir,
			Stdout: filepath.Join(dir, "o"), Stderr: filepath.Join(dir, "e")})
		if res.ExitCode != tt.code {
			t.Errorf("%s: exit %d, want %d (%s)", filepath.Base(tt.argv[0]), res.ExitCode, tt.code, res.SystemErr)
		}
	}
	res := runProcess(context.Background(), Command{Argv: []string{ok}, Dir: dir, Stdout: filepath.Join(dir, "o"), Stderr: filepath.Join(dir, "e")})
	if res.Stdout != "out\n" || res.Stderr != "err\n" {
		t.Fatalf("tails %q %q", res.Stdout, res.Stderr)
	}
}

// A timed-out task's whole process group dies, grandchildren included.
func TestTimeoutKillsProcessGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "child.pid")
	s := script(t, dir, "slow.sh", "#!/bin/sh\nsleep 60 &\necho $! > "+pidFile+"\nwait\n", 0o755)
	start := time.Now()
	res := runProcess(context.Background(), Command{Argv: []string{s}, Dir: dir, Timeout: 300 * time.Millisecond})
	if res.ExitCode != dataflow.ExitTimeout || !res.TimedOut {
		t.Fatalf("exit %d, want %d", res.ExitCode, dataflow.ExitTimeout)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatalf("timeout took %s", time.Since(start))
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid := strings.TrimSpace(string(b))
	deadline := time.Now().Add(5 * time.Second)
	for {
		data, err := os.ReadFile("/proc/" + pid + "/stat")
		// Gone, or a zombie waiting for init to reap it: either way not running.
		if err != nil || strings.Contains(string(data), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("grandchild %s still running after the timeout", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestArgvIsNeverEvaluated(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "got")
	s := script(t, dir, "run.sh", "#!/bin/sh\nprintf '%s' \"$1\" > "+out+"\n", 0o755)
	marker := filepath.Join(dir, "pwned")
	for _, body := range []string{"$(touch " + marker + ")", "a b \"c\" 'd' `touch " + marker + "` ; touch " + marker} {
		res := runProcess(context.Background(), Command{Argv: []string{s, body, "{}"}, Dir: dir})
		if res.ExitCode != 0 {
			t.Fatalf("exit %d", res.ExitCode)
		}
		got, _ := os.ReadFile(out)
		if string(got) != body {
			t.Fatalf("run.sh got %q, want %q", got, body)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("body %q was evaluated by a shell", body)
		}
	}
}

func TestReadOutputs(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, SinkTasksFile), []byte("a\nm,b,{\"k\":\"v\"}\n"), 0o600)
	os.WriteFile(filepath.Join(dir, TimestampsFile), []byte("start,2024-01-02T03:04:05Z\n2024-01-02 03:04:06.5,end\n# c\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "in.dat"), make([]byte, 100), 0o600)
	os.MkdirAll(filepath.Join(dir, "outdir"), 0o700)
	os.WriteFile(filepath.Join(dir, "outdir", "x"), make([]byte, 30), 0o600)
	os.WriteFile(filepath.Join(dir, InputFilesFile), []byte("in.dat\nremote,5\n"), 0o600)
	os.WriteFile(filepath.Join(dir, OutputFilesFile), []byte("outdir\n"), 0o600)
	os.WriteFile(filepath.Join(dir, RemovedFilesFile), []byte("in.dat\n"), 0o600)
	os.WriteFile(filepath.Join(dir, AuxoutFile), []byte("note"), 0o600)
	os.WriteFile(filepath.Join(dir, TaskExecFile), []byte("statusCode: 0\noutputBytes: 77\n"), 0o600)
	out := readOutputs(dir)
	if len(out.Problems) > 0 {
		t.Fatal(out.Problems)
	}
	if len(out.Messages) != 2 || out.Messages[1].Module != "m" {
		t.Fatalf("messages %+v", out.Messages)
	}
	if len(out.Timestamps) != 2 || out.Timestamps[0].Label != "start" || out.Timestamps[1].Label != "end" {
		t.Fatalf("timestamps %+v", out.Timestamps)
	}
	if out.InputBytes != 105 || out.OutputBytes != 77 || out.Auxout != "note" {
		t.Fatalf("bytes in %d out %d aux %q", out.InputBytes, out.OutputBytes, out.Auxout)
	}
	if _, err := os.Stat(filepath.Join(dir, "in.dat")); err == nil {
		t.Fatal("removed-files.txt entry still exists")
	}
	if _, err := os.Stat(filepath.Join(dir, SinkTasksFile)); err == nil {
		t.Fatal("interface files must be cleared after reading")
	}
	os.WriteFile(filepath.Join(dir, SinkTasksFile), []byte("ok\n{broken\n"), 0o600)
	if out := readOutputs(dir); len(out.Problems) != 1 || !strings.Contains(out.Problems[0], "sink-tasks.txt:2") {
		t.Fatalf("bad sink line not reported: %v", out.Problems)
	}
}

// FuzzReadOutputs writes arbitrary bytes into every interface file a module
// can leave: reading them must never panic, only report problems.
func FuzzReadOutputs(f *testing.F) {
	f.Add([]byte("a\nm,b,{\"k\":\"v\"}\n"))
	f.Add([]byte("statusCode: x\n"))
	f.Add([]byte("2024-01-02T03:04:05Z,start\nx,y\n"))
	f.Add([]byte("{\"kind\":\"semaphore\"}\n{bad\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		for name := range interfaceFiles {
			if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		readOutputs(dir)
	})
}

func TestRemovedFilesSparesTheWorkDir(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "work")
	os.MkdirAll(dir, 0o700)
	victim := filepath.Join(dir, "out.dat")
	os.WriteFile(victim, []byte("x"), 0o600)
	outside := filepath.Join(root, "keep.dat")
	os.WriteFile(outside, []byte("x"), 0o600)
	vol := filepath.Join(root, "vol")
	os.MkdirAll(vol, 0o700)
	inVol := filepath.Join(vol, "done.dat")
	os.WriteFile(inVol, []byte("x"), 0o600)
	os.WriteFile(filepath.Join(dir, RemovedFilesFile), []byte(".\n..\n"+root+"\nout.dat\n"+outside+"\n"+inVol+"\n"+vol+"\n"), 0o600)
	out := readOutputs(dir, vol)
	if _, err := os.Stat(outside); err != nil {
		t.Fatal("removed-files.txt deleted a file outside the work dir and the volumes")
	}
	if _, err := os.Stat(inVol); err == nil {
		t.Fatal("a listed file in a writable volume was not removed")
	}
	if _, err := os.Stat(vol); err != nil {
		t.Fatal("removed-files.txt deleted a volume root")
	}
	if len(out.Warnings) != 2 || !strings.Contains(strings.Join(out.Warnings, "\n"), outside) {
		t.Fatalf("refused removals not reported: %q", out.Warnings)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatal("removed-files.txt deleted the work dir")
	}
	if _, err := os.Stat(victim); err == nil {
		t.Fatal("a listed file was not removed")
	}
}

// Kept-open log files hold only the last run's output, from offset 0,
// however much the run before wrote; a log removed between runs is
// created again.
func TestScriptLogsHoldOnlyTheLastRun(t *testing.T) {
	dir := t.TempDir()
	long := script(t, dir, "long.sh", "#!/bin/sh\nseq 1 2000\n", 0o755)
	short := script(t, dir, "short.sh", "#!/bin/sh\necho short; echo e >&2\n", 0o755)
	var logs scriptLogs
	defer logs.close()
	out, errf := filepath.Join(dir, "o"), filepath.Join(dir, "e")
	for i, argv := range []string{long, short, long, short} {
		if i == 3 {
			if err := os.Remove(out); err != nil {
				t.Fatal(err)
			}
		}
		res := runProcess(context.Background(), Command{Argv: []string{argv}, Dir: dir, Stdout: out, Stderr: errf, Logs: &logs})
		if res.ExitCode != 0 {
			t.Fatalf("run %d: exit %d (%s)", i, res.ExitCode, res.SystemErr)
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != "short\n" {
		t.Errorf("stdout file after the last run: %d bytes starting %q, want %q", len(data), data[:min(len(data), 16)], "short\n")
	}
	if data, _ := os.ReadFile(errf); string(data) != "e\n" {
		t.Errorf("stderr file: %q, want %q", data, "e\n")
	}
}

// A script runs with the timer slack the pilot was started with, not the
// coarse one of the pilot's own threads (internal/timerslack).
func TestScriptsDoNotInheritThePilotsTimerSlack(t *testing.T) {
	if timerslack.Own() == 0 {
		t.Skip("the pilot's timer slack is left as inherited here (no cgo, or SCALEBOX_TIMERSLACK_NS=0)")
	}
	dir := t.TempDir()
	s := script(t, dir, "slack.sh", "#!/bin/sh\ncat /proc/self/timerslack_ns\n", 0o755)
	for i := range 20 { // from whichever thread the goroutine is on
		res := runProcess(context.Background(), Command{Argv: []string{s}, Dir: dir, Stdout: filepath.Join(dir, "o")})
		if got, want := strings.TrimSpace(res.Stdout), strconv.FormatUint(timerslack.Child(), 10); got != want {
			t.Fatalf("run %d: the script's timer slack is %q, want %s (the pilot's own is %d)", i, got, want, timerslack.Own())
		}
	}
}

// Each run closes what it opened (its pidfd, the work dir and interface
// files read outside os.File): a pilot runs millions of tasks.
func TestRunsLeaveNoFileDescriptors(t *testing.T) {
	dir := t.TempDir()
	s := script(t, dir, "emit.sh", "#!/bin/sh\necho \"$1\" > \"$WORK_DIR/sink-tasks.txt\"\necho out\n", 0o755)
	w := &workspace{env: []string{"WORK_DIR=" + dir, "PATH=/usr/bin:/bin"}, d: slotDirs{Work: dir, Logs: dir},
		scripts: map[string]string{RunScript: s}}
	defer w.close(context.Background())
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd")
		}
		return len(ents)
	}
	w.run(context.Background(), request{Script: RunScript, Args: []string{"warm", "{}"}, Task: true}) // opens the kept log files
	before := fds()
	for i := range 50 {
		resp := w.run(context.Background(), request{Script: RunScript, Args: []string{strconv.Itoa(i), "{}"}, Task: true})
		if resp.Result.ExitCode != 0 || len(resp.Outputs.Messages) != 1 {
			t.Fatalf("run %d: exit %d, %d messages (%s)", i, resp.Result.ExitCode, len(resp.Outputs.Messages), resp.Result.SystemErr)
		}
	}
	if after := fds(); after > before {
		t.Errorf("%d open file descriptors after 50 runs, %d before", after, before)
	}
}
