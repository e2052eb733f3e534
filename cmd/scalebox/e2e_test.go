package main

// End-to-end tests: they build the real binary and drive `scalebox run`,
// `server`, `pilot` and the CLI on the examples and on small apps written
// here, then check the SQLite database itself.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// binary is the plain build, used for CLI calls and inside slots;
// daemons is the build that runs run/server/pilot: with the race detector
// when the tests have it (a race build takes about a second to start, too
// slow for every `scalebox task add` inside a slot).
var binary, daemons string

var raceBuild bool

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "scalebox-e2e")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "scalebox")
	daemons = binary
	builds := [][]string{{"build", "-o", binary, "."}}
	if raceBuild {
		daemons = filepath.Join(dir, "scalebox-race")
		builds = append(builds, []string{"build", "-race", "-o", daemons, "."})
	}
	for _, args := range builds {
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build scalebox: %v\n%s", err, out)
			os.Exit(1)
		}
	}
	os.Setenv("SCALEBOX_SLOT_BINARY", binary)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// sb runs the binary with a deadline and returns its output and exit code.
func sb(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	return runBinary(t, binary, timeout, args...)
}

// sbd runs the daemon build (`run`, which starts a server and pilots).
func sbd(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	return runBinary(t, daemons, timeout, args...)
}

func runBinary(t *testing.T, bin string, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("scalebox %v: timed out after %s\nstderr:\n%s", args, timeout, errb.String())
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("scalebox %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// stateDir returns a short private directory (the unix socket path inside
// it must stay under about 100 bytes).
func stateDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sbx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func examples(name string) string { return filepath.Join("..", "..", "examples", name) }

func openDB(t *testing.T, state string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(state, "scalebox.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func queryInt(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// waitCount polls a count query until it reaches atLeast, failing with
// why after within. A query error counts as not yet: the database file
// appears before its schema does.
func waitCount(t *testing.T, db *sql.DB, q string, atLeast int, within time.Duration, why string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var n int
		err := db.QueryRow(q).Scan(&n)
		if err == nil && n >= atLeast {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (last: %d, %v)", why, n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestPrimesRunJSON(t *testing.T) {
	state := stateDir(t)
	r := sbd(t, 3*time.Minute, "--log-level", "warn", "--state-dir", state, "run", "--json", examples("primes"))
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	var info dataflow.AppInfo
	if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, r.stdout)
	}
	if info.Status != dataflow.AppFinished || info.Semaphores["primes"] != 78498 || info.Result != "78498" {
		t.Fatalf("status %s, primes %d, result %q", info.Status, info.Semaphores["primes"], info.Result)
	}
	if info.Tasks[dataflow.TaskSucceeded] != 101 || info.Tasks[dataflow.TaskFailed] != 0 || info.Modules["calc"][dataflow.TaskSucceeded] != 50 {
		t.Fatalf("task counts %v %v", info.Tasks, info.Modules)
	}
	if info.StartedAt == nil || info.FinishedAt == nil || info.ID != 1 || info.Name != "primes" {
		t.Fatalf("summary fields missing: %+v", info)
	}
	// The finished run's database is readable without a server.
	r = sb(t, time.Minute, "--state-dir", state, "semaphore", "get", "primes")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "78498" {
		t.Fatalf("semaphore get after the run: %d %q %s", r.code, r.stdout, r.stderr)
	}
	r = sb(t, time.Minute, "--state-dir", state, "semaphore", "get", "nope")
	if r.code != 2 {
		t.Fatalf("absent semaphore: exit %d, want 2", r.code)
	}
	r = sb(t, time.Minute, "--state-dir", state, "semaphore", "list")
	if !regexp.MustCompile(`(?m)^primes\s+78498$`).MatchString(r.stdout) {
		t.Fatalf("semaphore list:\n%s", r.stdout)
	}
	r = sb(t, time.Minute, "--state-dir", state, "semaphore", "get", "p.*")
	var m map[string]int64
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil || m["primes"] != 78498 || m["pending"] != 0 {
		t.Fatalf("regex get: %q %v", r.stdout, err)
	}
}

func TestHelloSetFinished(t *testing.T) {
	state := stateDir(t)
	r := sbd(t, time.Minute, "--log-level", "warn", "--state-dir", state, "run", examples("hello"))
	if r.code != 0 || !strings.Contains(r.stdout, "result: Hello, world") {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	db := openDB(t, state)
	// The task that called set-finished is recorded as succeeded, not cancelled.
	if n := queryInt(t, db, "SELECT count(*) FROM tasks WHERE state = 'succeeded'"); n != 1 {
		t.Fatalf("%d succeeded tasks, want 1", n)
	}
}

func TestRetryExample(t *testing.T) {
	state := stateDir(t)
	r := sbd(t, 2*time.Minute, "--log-level", "warn", "--state-dir", state, "run", examples("retry"))
	if r.code != 1 || !strings.Contains(r.stdout, "FAILED") {
		t.Fatalf("retry example: exit %d, want 1 (FAILED)\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	r = sb(t, time.Minute, "--state-dir", state, "task", "list", "--json")
	var tasks []dataflow.TaskInfo
	if err := json.Unmarshal([]byte(r.stdout), &tasks); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	byModule := map[string]dataflow.TaskInfo{}
	for _, tk := range tasks {
		byModule[tk.Module] = tk
	}
	if len(tasks) != 3 {
		t.Fatalf("%d tasks, want 3 (sink must get none): %+v", len(tasks), tasks)
	}
	flaky := byModule["flaky"]
	if flaky.State != dataflow.TaskFailed || flaky.Attempts != 3 || *flaky.ExitCode != 3 {
		t.Fatalf("flaky: %+v", flaky)
	}
	r = sb(t, time.Minute, "--state-dir", state, "task", "show", "--json", fmt.Sprint(flaky.ID))
	var shown dataflow.TaskInfo
	json.Unmarshal([]byte(r.stdout), &shown)
	if len(shown.Execs) != 3 {
		t.Fatalf("exit 3 under ['3:2'] ran %d times, want 3", len(shown.Execs))
	}
	for _, e := range shown.Execs {
		if e.ExitCode != 3 {
			t.Fatalf("attempt %d exit %d", e.Attempt, e.ExitCode)
		}
	}
	if slow := byModule["slow"]; slow.State != dataflow.TaskFailed || *slow.ExitCode != dataflow.ExitTimeout {
		t.Fatalf("slow: %+v, want failed with 124", slow)
	}
	if em := byModule["emitter"]; em.State != dataflow.TaskFailed || *em.ExitCode != 7 {
		t.Fatalf("emitter: %+v", em)
	}
	db := openDB(t, state)
	if n := queryInt(t, db, "SELECT count(*) FROM tasks WHERE body = 'should-not-arrive'"); n != 0 {
		t.Fatal("a failed task's message was emitted")
	}
}

func TestBodyReachesRunShUnchanged(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"app.yaml":    "name: argv\nmodules:\n  echo:\n    base_image: host\n    arguments: {code_path: ./echo}\n",
		"echo/run.sh": "#!/bin/sh\nprintf '%s' \"$1\" > \"$OUT/$TASK_ID\"\n",
	})
	out := t.TempDir()
	marker := filepath.Join(out, "pwned")
	bodies := []string{"$(touch " + marker + ")", `with spaces "double" 'single' ; touch ` + marker, "`touch " + marker + "`"}
	state := stateDir(t)
	args := append([]string{"--log-level", "warn", "--state-dir", state, "run", dir}, bodies...)
	os.Setenv("OUT", out)
	defer os.Unsetenv("OUT")
	if r := sbd(t, time.Minute, args...); r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a task body was evaluated by a shell")
	}
	db := openDB(t, state)
	rows, err := db.Query("SELECT id, body FROM tasks")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var id int64
		var body string
		rows.Scan(&id, &body)
		got, err := os.ReadFile(filepath.Join(out, fmt.Sprint(id)))
		if err != nil || string(got) != body {
			t.Fatalf("task %d: run.sh got %q, want %q (%v)", id, got, body, err)
		}
		n++
	}
	if n != len(bodies) {
		t.Fatalf("%d tasks, want %d", n, len(bodies))
	}
}

var diagRE = regexp.MustCompile(`(?m)^.+app\.yaml:\d+:\d+: error: `)

func TestValidateThreeMistakes(t *testing.T) {
	dir := writeFiles(t, map[string]string{"app.yaml": `name: broken
modules:
  a:
    base_image: host
    sink_modules: b
  b:
    base_imag: host
    parameters:
      task_dist_mode: SIDEWAYS
`})
	r := sb(t, time.Minute, "validate", dir)
	if r.code != 2 {
		t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
	}
	if got := len(diagRE.FindAllString(r.stderr, -1)); got != 3 {
		t.Fatalf("%d file:line:col errors, want 3:\n%s", got, r.stderr)
	}
	if r := sb(t, time.Minute, "validate", examples("primes")); r.code != 0 {
		t.Fatalf("primes does not validate: %s", r.stderr)
	}
}

// startServer runs `scalebox server` and waits for its socket.
// startServer starts `scalebox server` on state with args (default: no
// TCP listener) and waits until it answers.
func startServer(t *testing.T, state string, args ...string) *exec.Cmd {
	t.Helper()
	if len(args) == 0 {
		args = []string{"--listen", ""}
	}
	logf, err := os.OpenFile(filepath.Join(state, "server-test.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(daemons, append([]string{"--state-dir", state, "server"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r := sb(t, 10*time.Second, "--server", "unix://"+filepath.Join(state, "scalebox.sock"), "app", "list"); r.code == 0 {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatal("server did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestDuplicateBodyCreatesOneTask(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"app.yaml": "name: dup\nparameters: {initial_status: PAUSED}\nmodules:\n  m: {base_image: host}\n",
	})
	state := stateDir(t)
	startServer(t, state)
	if r := sb(t, time.Minute, "--state-dir", state, "app", "create", dir); r.code != 0 || strings.TrimSpace(r.stdout) != "1" {
		t.Fatalf("app create: %d %q %s", r.code, r.stdout, r.stderr)
	}
	for i := 0; i < 2; i++ {
		if r := sb(t, time.Minute, "--state-dir", state, "task", "add", "-H", "k=v", "same-body"); r.code != 0 {
			t.Fatalf("task add: %s", r.stderr)
		}
	}
	sb(t, time.Minute, "--state-dir", state, "task", "add", "-H", "repeatable=yes", "same-body")
	r := sb(t, time.Minute, "--state-dir", state, "task", "list", "--json")
	var tasks []dataflow.TaskInfo
	if err := json.Unmarshal([]byte(r.stdout), &tasks); err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 2 {
		t.Fatalf("%d tasks, want 1 for the duplicate plus 1 for repeatable=yes: %+v", len(tasks), tasks)
	}
	r = sb(t, time.Minute, "--state-dir", state, "app", "status", "--json")
	var info dataflow.AppInfo
	json.Unmarshal([]byte(r.stdout), &info)
	if info.Status != dataflow.AppPaused || len(info.Why) == 0 {
		t.Fatalf("status %s why %v", info.Status, info.Why)
	}
}

// On-success changes are applied once per success; immediate changes from
// a slot are applied once per task even when the task is retried.
func TestStateChangesExactlyOnce(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"app.yaml": `name: once
modules:
  setup:
    base_image: host
    arguments: {code_path: ./setup}
    parameters: {start_task: go}
    sink_modules: work
  work:
    base_image: host
    arguments: {code_path: ./work}
    parameters: {retry_rules: "['3:1']", retry_backoff: 10ms}
`,
		"setup/run.sh": "#!/bin/sh\nscalebox semaphore create now 0 >/dev/null\nscalebox semaphore create later 0 >/dev/null\nfor i in 1 2 3 4 5 6 7 8; do scalebox task add w$i; done\n",
		"work/run.sh": `#!/bin/sh
scalebox semaphore increment now >/dev/null
scalebox semaphore increment --on-success later
scalebox variable set --on-success "seen_$1" "$TASK_ATTEMPT"
# every task fails its first attempt after changing state
[ "$TASK_ATTEMPT" = 1 ] && exit 3
exit 0
`,
	})
	state := stateDir(t)
	r := sbd(t, 2*time.Minute, "--log-level", "warn", "--state-dir", state, "run", "--json", dir)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var info dataflow.AppInfo
	json.Unmarshal([]byte(r.stdout), &info)
	if info.Semaphores["later"] != 8 || info.Semaphores["now"] != 8 {
		t.Fatalf("semaphores %v: want later=8 (on success only) and now=8 (once per task across retries)", info.Semaphores)
	}
	if len(info.Variables) != 8 || info.Variables["seen_w1"] != "2" {
		t.Fatalf("variables %v", info.Variables)
	}
}

// Kill -9 the server while thousands of tasks of a two-module pipeline are
// in flight, start it again: the app finishes, every task has exactly one
// successful exec record, every emitted message exists exactly once.
func TestServerKilledMidRun(t *testing.T) {
	const starts = 3000
	var tasks strings.Builder
	for i := 1; i <= starts; i++ {
		fmt.Fprintf(&tasks, "t%d\n", i)
	}
	dir := writeFiles(t, map[string]string{
		"app.yaml": `name: crash
modules:
  first:
    base_image: host
    arguments: {code_path: ./first}
    parameters: {start_task: "FILE:tasks.txt"}
    sink_modules: second
  second:
    base_image: host
    arguments: {code_path: ./second}
`,
		"tasks.txt":     tasks.String(),
		"first/run.sh":  "#!/bin/sh\necho \"$1-next\" > \"$WORK_DIR/sink-tasks.txt\"\n",
		"second/run.sh": "#!/bin/sh\nexit 0\n",
	})
	state := stateDir(t)
	srv := startServer(t, state)
	if r := sb(t, time.Minute, "--state-dir", state, "app", "create", dir); r.code != 0 {
		t.Fatalf("app create: %s", r.stderr)
	}
	sock := "unix://" + filepath.Join(state, "scalebox.sock")
	var pilots []*exec.Cmd
	for i := 0; i < 2; i++ {
		logf, _ := os.Create(filepath.Join(state, fmt.Sprintf("pilot-%d.log", i)))
		defer logf.Close()
		args := []string{"--server", sock, "pilot", "--app", "1", "--work-root", filepath.Join(state, fmt.Sprintf("w%d", i))}
		p := exec.Command(daemons, args...)
		p.Stdout, p.Stderr = logf, logf
		if err := p.Start(); err != nil {
			t.Fatal(err)
		}
		pilots = append(pilots, p)
		t.Cleanup(func() { p.Process.Kill(); p.Wait() })
	}
	db := openDB(t, state)
	waitCount(t, db, "SELECT count(*) FROM task_execs", 300, time.Minute, "no progress before the kill")
	srv.Process.Signal(syscall.SIGKILL)
	srv.Wait()
	inFlight := queryInt(t, db, "SELECT ? * 2 - count(*) FROM tasks WHERE state = 'succeeded'", starts)
	if inFlight < 2000 {
		t.Fatalf("only %d tasks in flight at the kill; the test needs >= 2000", inFlight)
	}
	t.Logf("server killed with %d of %d tasks not yet succeeded", inFlight, 2*starts)
	startServer(t, state)
	if r := sb(t, 3*time.Minute, "--state-dir", state, "app", "wait", "1", "--timeout", "100s"); r.code != 0 {
		st := sb(t, time.Minute, "--state-dir", state, "app", "status")
		for _, name := range []string{"pilot-0.log", "pilot-1.log", "server-test.log"} {
			b, _ := os.ReadFile(filepath.Join(state, name))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("%s (tail):\n%s", name, b)
		}
		t.Fatalf("app wait: exit %d\n%s\n%s\nstatus:\n%s", r.code, r.stdout, r.stderr, st.stdout)
	}
	for i, p := range pilots {
		done := make(chan error, 1)
		go func() { done <- p.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				b, _ := os.ReadFile(filepath.Join(state, fmt.Sprintf("pilot-%d.log", i)))
				if len(b) > 6000 {
					b = b[:6000]
				}
				t.Errorf("pilot exited with %v:\n%s", err, b)
			}
		case <-time.After(60 * time.Second):
			t.Error("pilot did not leave after the app finished")
		}
	}
	checks := []struct {
		what string
		q    string
		want int
	}{
		{"tasks", "SELECT count(*) FROM tasks", 2 * starts},
		{"succeeded tasks", "SELECT count(*) FROM tasks WHERE state = 'succeeded'", 2 * starts},
		{"tasks without exactly one successful exec", `SELECT count(*) FROM tasks t
			WHERE (SELECT count(*) FROM task_execs e WHERE e.task_id = t.id AND e.exit_code = 0) <> 1`, 0},
		{"messages emitted by successful first-module execs", `SELECT sum(emitted) FROM task_execs e JOIN modules m ON m.id = e.module_id
			WHERE m.name = 'first' AND e.exit_code = 0`, starts},
		{"second-module tasks", "SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'second'", starts},
		{"distinct second-module bodies", "SELECT count(DISTINCT body) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'second'", starts},
		{"app finished", "SELECT count(*) FROM apps WHERE status = 'FINISHED'", 1},
		{"task_counts rows that disagree with the tasks", `SELECT count(*) FROM (SELECT module_id, state, count(*) AS n FROM tasks GROUP BY module_id, state) g
			WHERE g.n <> coalesce((SELECT n FROM task_counts c WHERE c.module_id = g.module_id AND c.state = g.state), 0)`, 0},
	}
	for _, c := range checks {
		if got := queryInt(t, db, c.q); got != c.want {
			t.Errorf("%s: %d, want %d", c.what, got, c.want)
		}
	}
	lost := queryInt(t, db, "SELECT count(*) FROM task_execs WHERE exit_code <> 0")
	t.Logf("non-zero exec records (lost attempts): %d", lost)
}

// A pilot whose head is gone for longer than --head-timeout stops and says
// why, instead of holding its allocation.
func TestPilotGivesUpWithoutHead(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"app.yaml": "name: lonely\nmodules:\n  m:\n    base_image: host\n    arguments: {code_path: ./m}\n    parameters: {start_task: x}\n",
		"m/run.sh": "#!/bin/sh\nsleep 60\n",
	})
	state := stateDir(t)
	srv := startServer(t, state)
	if r := sb(t, time.Minute, "--state-dir", state, "app", "create", dir); r.code != 0 {
		t.Fatalf("app create: %s", r.stderr)
	}
	var out bytes.Buffer
	p := exec.Command(daemons, "--server", "unix://"+filepath.Join(state, "scalebox.sock"), "pilot", "--app", "1", "--head-timeout", "2s")
	p.Stdout, p.Stderr = &out, &out
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Process.Kill()
	db := openDB(t, state)
	waitCount(t, db, "SELECT count(*) FROM tasks WHERE state IN ('leased','running')", 1, 30*time.Second, "task never leased")
	srv.Process.Kill()
	srv.Wait()
	done := make(chan error, 1)
	go func() { done <- p.Wait() }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(out.String(), "head unreachable") {
			t.Fatalf("pilot exit %v, output:\n%s", err, out.String())
		}
	case <-time.After(40 * time.Second):
		t.Fatalf("pilot still running 40 s after its head died:\n%s", out.String())
	}
}

// A task that runs longer than the lease TTL keeps its lease through
// heartbeats: one attempt, no "lost" record.
func TestHeartbeatsKeepLongTasks(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"app.yaml": "name: long\nmodules:\n  m:\n    base_image: host\n    arguments: {code_path: ./m}\n    parameters: {start_task: x}\n",
		"m/run.sh": "#!/bin/sh\nsleep 7\n",
	})
	state := stateDir(t)
	r := sbd(t, time.Minute, "--log-level", "warn", "--state-dir", state, "run", "--lease-ttl", "3s", "--pilots", "1", dir)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	db := openDB(t, state)
	if n := queryInt(t, db, "SELECT count(*) FROM task_execs"); n != 1 {
		t.Fatalf("%d exec records for a task longer than its lease TTL, want 1 (heartbeats must keep it)", n)
	}
}
