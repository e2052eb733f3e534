package main

// Module containers end to end: images built with `scalebox module build`
// from a local busybox base, run by `scalebox run` locally and on the
// Slurm cluster, and `scalebox module test`.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/apptainer"
	"github.com/scalebox-hpc/scalebox/apptainer/apptainertest"
	"github.com/scalebox-hpc/scalebox/slurm/slurmtest"
)

// needApptainer returns a busybox base image, or skips without Apptainer.
func needApptainer(t *testing.T) string { return apptainertest.BaseImage(t) }

// calcImage builds examples/primes/calc into a SIF and checks what
// `module inspect` finds in it.
func calcImage(t *testing.T, base, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "calc.sif")
	r := sb(t, 5*time.Minute, "module", "build", examples("primes")+"/calc", "--base", base, "-o", out,
		"--label", "org.scalebox.description=count primes")
	if r.code != 0 || strings.TrimSpace(r.stdout) != out {
		t.Fatalf("module build exited %d, printed %q\n%s", r.code, r.stdout, r.stderr)
	}
	r = sb(t, time.Minute, "module", "inspect", "--json", out)
	var md apptainer.Metadata
	if err := json.Unmarshal([]byte(r.stdout), &md); err != nil || r.code != 0 {
		t.Fatalf("module inspect: %v %s\n%s", err, r.stdout, r.stderr)
	}
	if md.Module != "calc" || md.Scripts["run.sh"] != "/app/bin/run.sh" || md.Description != "count primes" {
		t.Fatalf("module inspect found %+v", md)
	}
	return out
}

// examples/primes with its calc module in a SIF: the answer is right and
// every calc exec record names the image.
func TestPrimesInApptainer(t *testing.T) {
	base := needApptainer(t)
	static := releaseBinary(t)
	img := calcImage(t, base, t.TempDir())
	state := stateDir(t)
	t.Setenv("CALC_IMAGE", img)
	t.Setenv("SCALEBOX_AGENT_BINARY", static)
	r := sbd(t, 3*time.Minute, "--log-level", "warn", "--state-dir", state, "run", "--json", "--pilots", "2", examples("primes"))
	if r.code != 0 {
		t.Fatalf("run exited %d\n%s", r.code, r.stderr)
	}
	s := decodeSummary(t, r)
	if s.Status != "FINISHED" || s.Result != "78498" {
		t.Fatalf("status %s result %q, want FINISHED 78498", s.Status, s.Result)
	}
	checkImages(t, state, img)
}

func checkImages(t *testing.T, state, img string) {
	t.Helper()
	db := openDB(t, state)
	calc := "(SELECT id FROM modules WHERE name = 'calc')"
	router := "(SELECT id FROM modules WHERE name = 'router')"
	if n, bad := queryInt(t, db, "SELECT count(*) FROM task_execs WHERE module_id = "+calc),
		queryInt(t, db, "SELECT count(*) FROM task_execs WHERE module_id = "+calc+" AND image IS NOT ?", img); n == 0 || bad != 0 {
		t.Errorf("%d of %d calc exec records do not name the image %s", bad, n, img)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM task_execs WHERE module_id = "+router+" AND image IS NOT NULL"); n != 0 {
		t.Errorf("%d router (host) exec records name an image", n)
	}
}

// The same, with the calc slots in pilot jobs on the Slurm cluster.
func TestPrimesApptainerOnSlurm(t *testing.T) {
	slurmtest.NeedCLI(t, slurmtest.CI)
	base := needApptainer(t)
	static := releaseBinary(t)
	img := calcImage(t, base, slurmtest.CI.TempDir(t))
	state := stateDir(t)
	t.Setenv("CALC_IMAGE", img)
	r := runOnSlurm(t, 4*time.Minute, clustersFile(t, "mode: cli\nbinary: "+static, ciPool), state, examples("primes"))
	checkPrimesOnSlurm(t, r, state, 3)
	checkImages(t, state, img)
}

// `scalebox module test` runs calc on a test message without a server.
func TestModuleTestCalc(t *testing.T) {
	r := sb(t, time.Minute, "module", "test", examples("primes")+"/calc", "--body", "1_100")
	if r.code != 0 || !strings.Contains(r.stdout, `"count":"25"`) || !strings.Contains(r.stdout, "exit_code: 0") {
		t.Fatalf("module test exited %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
	msgs := filepath.Join(t.TempDir(), "msgs.txt")
	os.WriteFile(msgs, []byte("1_10\n1_1000\n"), 0o600)
	r = sb(t, time.Minute, "module", "test", "--json", "--messages", msgs, examples("primes")+"/calc")
	var recs []struct {
		Body    string `json:"body"`
		Emitted []struct {
			Headers map[string]string `json:"headers"`
		} `json:"emitted"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &recs); err != nil || r.code != 0 {
		t.Fatalf("module test --json: %v\n%s%s", err, r.stdout, r.stderr)
	}
	if len(recs) != 2 || recs[0].Emitted[0].Headers["count"] != "4" || recs[1].Emitted[0].Headers["count"] != "168" {
		t.Fatalf("records %+v, want counts 4 and 168", recs)
	}
}

// The same module test inside the calc image.
func TestModuleTestCalcInImage(t *testing.T) {
	base := needApptainer(t)
	img := calcImage(t, base, t.TempDir())
	r := sb(t, 2*time.Minute, "module", "test", examples("primes")+"/calc", "--image", img, "--agent-binary", releaseBinary(t), "--body", "1_100")
	if r.code != 0 || !strings.Contains(r.stdout, `"count":"25"`) || !strings.Contains(r.stdout, "runtime: "+img) {
		t.Fatalf("module test --image exited %d:\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// A module whose image does not exist: validate warns; the run fails that
// module's tasks with 125 and a message naming the image; the other
// modules finish; no pilot crashes.
func TestMissingImage(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"app.yaml": `name: missing-image
modules:
  first:
    base_image: host
    arguments: {code_path: ./first}
    parameters: {start_task: "FILE:start.txt"}
    sink_modules: [second, third]
  second:
    base_image: ./no-such.sif
  third:
    base_image: host
    arguments: {code_path: ./third}
`,
		"first/run.sh": "#!/bin/sh\nscalebox task add --sink-module second \"$1\"\nscalebox task add --sink-module third \"$1\"\n",
		"third/run.sh": "#!/bin/sh\nexit 0\n",
		"start.txt":    "a\nb\nc\nd\ne\nf\n",
	})
	os.Chmod(filepath.Join(dir, "first", "run.sh"), 0o755)
	os.Chmod(filepath.Join(dir, "third", "run.sh"), 0o755)
	v := sb(t, time.Minute, "validate", dir)
	if v.code != 0 || !strings.Contains(v.stdout+v.stderr, "no-such.sif: no such image here") {
		t.Fatalf("validate exited %d, want 0 with a warning about the image:\n%s%s", v.code, v.stdout, v.stderr)
	}
	state := stateDir(t)
	r := sbd(t, 3*time.Minute, "--log-level", "warn", "--state-dir", state, "run", "--json", "--pilots", "2", dir)
	s := decodeSummary(t, r)
	if r.code == 0 || s.Status != "FAILED" {
		t.Fatalf("run exited %d with status %s; want a failed run\n%s", r.code, s.Status, r.stderr)
	}
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "pilot stops") {
		t.Errorf("a pilot crashed or left:\n%s", r.stderr)
	}
	db := openDB(t, state)
	count := func(module, where string) int {
		return queryInt(t, db, "SELECT count(*) FROM tasks WHERE module_id = (SELECT id FROM modules WHERE name = ?) AND "+where, module)
	}
	for _, m := range []string{"first", "third"} {
		if n := count(m, "state = 'succeeded'"); n != 6 {
			t.Errorf("module %s: %d of 6 tasks succeeded", m, n)
		}
	}
	if n := count("second", "state = 'failed' AND exit_code = 125"); n != 6 {
		t.Errorf("module second: %d of 6 tasks failed with 125", n)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM task_execs WHERE module_id = (SELECT id FROM modules WHERE name = 'second')
		AND exit_code = 125 AND note LIKE '%no-such.sif%no such file%'`); n < 6 {
		t.Errorf("%d exec records of module second say the image is missing, want one per task at least", n)
	}
}

// Repeated start failures put the slot in ERROR, with the reason, in
// `scalebox app status` while the app runs on.
func TestSlotErrorInAppStatus(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"app.yaml": `name: slot-error
modules:
  busy:
    base_image: host
    arguments: {code_path: ./busy}
    parameters: {start_task: "x"}
  broken:
    base_image: /no/such/image.sif
    parameters: {start_task: "FILE:many.txt"}
`,
		"busy/run.sh": "#!/bin/sh\nsleep 60\n",
		"many.txt":    "1\n2\n3\n4\n5\n6\n",
	})
	os.Chmod(filepath.Join(dir, "busy", "run.sh"), 0o755)
	state := stateDir(t)
	cmd := exec.Command(daemons, "--log-level", "warn", "--state-dir", state, "run", "--pilots", "1", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var st struct {
		Slots []struct {
			Module, State, Reason string
			Failures              int
		} `json:"slots"`
		Why []string `json:"why"`
	}
	deadline := time.Now().Add(time.Minute)
	for {
		r := sb(t, 30*time.Second, "--state-dir", state, "app", "status", "--json", "1")
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && len(st.Slots) > 0 && st.Slots[0].State == "ERROR" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot in ERROR after a minute: %s", r.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s := st.Slots[0]
	if s.Module != "broken" || s.Failures < 3 || !strings.Contains(s.Reason, "/no/such/image.sif") {
		t.Errorf("slot state %+v", s)
	}
	text := sb(t, 30*time.Second, "--state-dir", state, "app", "status", "1")
	if !strings.Contains(text.stdout+text.stderr, "is ERROR after") {
		t.Errorf("app status does not explain the slot:\n%s%s", text.stdout, text.stderr)
	}
	if r := sb(t, 30*time.Second, "--state-dir", state, "app", "cancel", "1"); r.code != 0 {
		t.Fatalf("cancel: %s", r.stderr)
	}
	cmd.Wait()
}

// The agent dying mid-task: that task ends with 125 and a note naming the
// death; the slot starts a new container and runs the rest.
func TestAgentDeathRestartsSlot(t *testing.T) {
	base := needApptainer(t)
	static := releaseBinary(t)
	dir := writeFiles(t, map[string]string{
		"app.yaml": `name: agent-death
modules:
  m:
    base_image: ` + base + `
    arguments: {code_path: ./m}
    parameters: {start_task: "FILE:start.txt"}
`,
		// The agent is run.sh's parent: "die" kills it.
		"m/run.sh":  "#!/bin/sh\nif [ \"$1\" = die ]; then kill -9 $PPID; sleep 5; fi\nexit 0\n",
		"start.txt": "die\na\nb\nc\n",
	})
	os.Chmod(filepath.Join(dir, "m", "run.sh"), 0o755)
	state := stateDir(t)
	t.Setenv("SCALEBOX_AGENT_BINARY", static)
	s := decodeSummary(t, sbd(t, 3*time.Minute, "--log-level", "warn", "--state-dir", state, "run", "--json", "--pilots", "1", dir))
	if s.Status != "FAILED" {
		t.Fatalf("status %s, want FAILED (the task whose agent died has no retries)", s.Status)
	}
	db := openDB(t, state)
	if n := queryInt(t, db, "SELECT count(*) FROM tasks WHERE state = 'succeeded'"); n != 3 {
		t.Errorf("%d of the 3 other tasks succeeded after the restart", n)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM task_execs e JOIN tasks t ON t.id = e.task_id
		WHERE t.body = 'die' AND e.exit_code = 125 AND e.note LIKE '%agent%died%'`); n != 1 {
		t.Errorf("the task whose agent died has %d exec records with 125 and a note saying so, want 1", n)
	}
}
