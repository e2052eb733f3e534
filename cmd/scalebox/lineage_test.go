package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A node that held the node-local input of waiting tasks is lost (its
// pilot killed, no pilot comes back there): after --reproduce-after the
// head runs the producers again on the node that is left, and each
// waiting task then runs there on the copy that node made. Real server,
// real pilot processes as two nodes (each its own local: tier), real
// files.
func TestLostNodeDataProducedAgain(t *testing.T) {
	const n = 12
	// use has slots only on n2: while n1 lives, its data waits there.
	files := lineageApp(n, "    slots: \"n2:1\"\n")
	// The input must be the copy this node made for this body.
	files["make/run.sh"] = "#!/bin/sh\nset -eu\necho \"$1 $HOST_NAME\" > \"$WORK_DIR/out.dat\"\necho \"$1\" > \"$WORK_DIR/sink-tasks.txt\"\n"
	files["use/run.sh"] = "#!/bin/sh\nset -eu\n[ \"$(cat \"$WORK_DIR/in.dat\")\" = \"$1 $HOST_NAME\" ] || { echo \"in.dat: $(cat \"$WORK_DIR/in.dat\") on $HOST_NAME\" >&2; exit 3; }\n"
	dir := writeFiles(t, files)
	state := stateDir(t)
	startServer(t, state, "--listen", "", "--no-slurm", "--lease-ttl", "3s", "--reproduce-after", "2s")
	if r := sb(t, time.Minute, "--state-dir", state, "app", "create", dir); r.code != 0 {
		t.Fatalf("app create: %s", r.stderr)
	}
	tmp := t.TempDir() // both nodes' local: tiers, under their names
	pilot := func(host string) *exec.Cmd { return nodePilot(t, state, tmp, host) }
	db := openDB(t, state)
	logs := func() {
		for _, name := range []string{"pilot-n1.log", "pilot-n2.log", "server-test.log"} {
			b, _ := os.ReadFile(filepath.Join(state, name))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s (tail):\n%s", name, b)
		}
	}
	n1 := pilot("n1")
	waitCount(t, db, "SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'make' AND t.state = 'succeeded'",
		n, time.Minute, "n1 did not make every input")
	if got := queryInt(t, db, "SELECT count(*) FROM tasks WHERE to_host = 'n1' AND bound_to_data = 1 AND state = 'ready'"); got != n {
		t.Fatalf("%d use tasks wait for n1, want %d", got, n)
	}
	n1.Process.Signal(syscall.SIGKILL)
	n1.Wait()
	pilot("n2")
	if r := sb(t, 2*time.Minute, "--state-dir", state, "app", "wait", "1", "--timeout", "90s"); r.code != 0 {
		logs()
		t.Fatalf("app wait: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	checks := []struct {
		what string
		q    string
		want int
	}{
		{"app finished", "SELECT count(*) FROM apps WHERE status = 'FINISHED'", 1},
		{"tasks (every message once)", "SELECT count(*) FROM tasks", 2 * n},
		{"use tasks with exactly one successful exec, on n2", `SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'use'
			AND (SELECT count(*) FROM task_execs e WHERE e.task_id = t.id AND e.exit_code = 0 AND e.host = 'n2') = 1
			AND (SELECT count(*) FROM task_execs e WHERE e.task_id = t.id AND e.exit_code = 0) = 1`, n},
		{"make tasks run again on n2 after n1's", `SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'make'
			AND (SELECT count(*) FROM task_execs e WHERE e.task_id = t.id AND e.exit_code = 0 AND e.host = 'n1') = 1
			AND (SELECT count(*) FROM task_execs e WHERE e.task_id = t.id AND e.exit_code = 0 AND e.host = 'n2') = 1`, n},
		{"failed attempts", "SELECT count(*) FROM task_execs WHERE exit_code <> 0", 0},
		{"tasks still held", "SELECT count(*) FROM tasks WHERE lost_host <> ''", 0},
	}
	for _, c := range checks {
		if got := queryInt(t, db, c.q); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
	// task show names the producer.
	use := queryInt(t, db, "SELECT t.id FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'use' AND t.body = 'd03'")
	producer := queryInt(t, db, "SELECT t.id FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'make' AND t.body = 'd03'")
	r := sb(t, time.Minute, "--state-dir", state, "task", "show", fmt.Sprint(use), "--json")
	var shown struct {
		ParentID int64 `json:"parent_id"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || shown.ParentID != int64(producer) {
		t.Errorf("task show --json of use(d03): parent %d (%v), want make(d03) = %d\n%s", shown.ParentID, err, producer, r.stdout)
	}
	if t.Failed() {
		logs()
	}
}

// A node that is still there but lost one input (its tier emptied, a file
// removed): the attempt that finds it missing holds its task and the
// producer makes the input again on that node, without using a retry.
func TestMissingNodeInputProducedAgain(t *testing.T) {
	const n = 6
	gate := filepath.Join(t.TempDir(), "gate")
	// No retries: a missing input must not be charged to the rules; use
	// waits (check.sh) until the test has removed one input.
	files := lineageApp(n, "    parameters: {retry_rules: \"['*:0']\"}\n")
	files["make/run.sh"] = "#!/bin/sh\nset -eu\necho \"$1 $(date +%s%N)\" > \"$WORK_DIR/out.dat\"\necho \"$1\" > \"$WORK_DIR/sink-tasks.txt\"\n"
	files["use/check.sh"] = "#!/bin/sh\n[ -e " + gate + " ]\n"
	files["use/run.sh"] = "#!/bin/sh\nset -eu\ncase \"$(cat \"$WORK_DIR/in.dat\")\" in \"$1 \"*) ;; *) exit 3 ;; esac\n"
	dir := writeFiles(t, files)
	state := stateDir(t)
	startServer(t, state, "--listen", "", "--no-slurm")
	if r := sb(t, time.Minute, "--state-dir", state, "app", "create", dir); r.code != 0 {
		t.Fatalf("app create: %s", r.stderr)
	}
	tmp := t.TempDir()
	nodePilot(t, state, tmp, "n1")
	db := openDB(t, state)
	waitCount(t, db, "SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'make' AND t.state = 'succeeded'",
		n, time.Minute, "n1 did not make every input")
	lost := filepath.Join(tmp, fmt.Sprintf("scalebox-local-%d", os.Getuid()), "n1", "lin", "d03")
	if err := os.Remove(lost); err != nil {
		t.Fatalf("remove one input: %v", err)
	}
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := sb(t, 2*time.Minute, "--state-dir", state, "app", "wait", "1", "--timeout", "90s"); r.code != 0 {
		b, _ := os.ReadFile(filepath.Join(state, "pilot-n1.log"))
		t.Fatalf("app wait: exit %d\n%s\n%s\npilot log:\n%s", r.code, r.stdout, r.stderr, b)
	}
	execs := func(module, body, cond string) int {
		return queryInt(t, db, `SELECT count(*) FROM task_execs e JOIN tasks t ON t.id = e.task_id JOIN modules m ON m.id = t.module_id
			WHERE m.name = ? AND t.body = ? AND `+cond, module, body)
	}
	for _, c := range []struct {
		what string
		got  int
		want int
	}{
		{"app finished", queryInt(t, db, "SELECT count(*) FROM apps WHERE status = 'FINISHED'"), 1},
		{"tasks", queryInt(t, db, "SELECT count(*) FROM tasks"), 2 * n},
		{"succeeded tasks", queryInt(t, db, "SELECT count(*) FROM tasks WHERE state = 'succeeded'"), 2 * n},
		{"make(d03) successes", execs("make", "d03", "e.exit_code = 0"), 2},
		{"make(d02) successes", execs("make", "d02", "e.exit_code = 0"), 1},
		{"use(d03) attempts that found the input missing", execs("use", "d03", "e.exit_code <> 0 AND e.note LIKE '%producer runs again%'"), 1},
		{"use(d03) successes", execs("use", "d03", "e.exit_code = 0"), 1},
		{"failed attempts of other tasks", queryInt(t, db, "SELECT count(*) FROM task_execs e JOIN tasks t ON t.id = e.task_id WHERE e.exit_code <> 0 AND t.body <> 'd03'"), 0},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.what, c.got, c.want)
		}
	}
}

// lineageApp is a pipeline make → use over local:, n start tasks, with
// useExtra appended to use's definition; the scripts are the caller's.
func lineageApp(n int, useExtra string) map[string]string {
	starts := make([]string, n)
	for i := range starts {
		starts[i] = fmt.Sprintf("d%02d", i)
	}
	return map[string]string{
		"start.txt": strings.Join(starts, "\n") + "\n",
		"app.yaml": `name: lineage
modules:
  make:
    base_image: host
    arguments: {code_path: ./make}
    parameters: {start_task: "FILE:start.txt"}
    stage_out: ["out.dat -> local:lin/{body}"]
    sink_modules: use
  use:
    base_image: host
    arguments: {code_path: ./use}
    stage_in: ["local:lin/{body} -> in.dat"]
` + useExtra,
	}
}

// nodePilot starts a pilot of app 1 as node host, its local: tier under
// tmp, logging to STATE/pilot-HOST.log.
func nodePilot(t *testing.T, state, tmp, host string) *exec.Cmd {
	t.Helper()
	logf, err := os.Create(filepath.Join(state, "pilot-"+host+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	p := exec.Command(daemons, "--server", "unix://"+filepath.Join(state, "scalebox.sock"), "pilot", "--app", "1",
		"--host-name", host, "--work-root", filepath.Join(state, "w-"+host))
	p.Env = append(os.Environ(), "TMPDIR="+tmp)
	p.Stdout, p.Stderr = logf, logf
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Process.Kill(); p.Wait() })
	return p
}
