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

	"github.com/scalebox-hpc/scalebox/slurm/slurmtest"
	"github.com/scalebox-hpc/scalebox/staging"
	"github.com/scalebox-hpc/scalebox/staging/stagingtest"
)

// `scalebox stage cp` between tiers, over the real sshd, and a refused
// URL.
func TestStageCopy(t *testing.T) {
	u, auth := stagingtest.SFTP(t)
	src := filepath.Join(t.TempDir(), "in.bin")
	data := stagingtest.Pattern(3<<20 + 17)
	os.WriteFile(src, data, 0o644)
	local := t.TempDir()
	t.Setenv("SCALEBOX_LOCAL_ROOT", local)
	remote := u.String() + "/" + strings.ReplaceAll(t.Name(), "/", "_") + "/in.bin"
	for _, hop := range [][2]string{{"file://" + src, remote}, {remote, "local:copies/in.bin"}} {
		r := sb(t, time.Minute, "stage", "cp", "--json", "--key", auth.KeyFile, "--host-key", auth.HostKey, hop[0], hop[1])
		var res struct {
			Size   int64  `json:"size"`
			SHA256 string `json:"sha256"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil {
			t.Fatalf("stage cp %s %s: exit %d\n%s%s", hop[0], hop[1], r.code, r.stdout, r.stderr)
		}
		if res.Size != int64(len(data)) || res.SHA256 != stagingtest.SHA256(data) {
			t.Fatalf("stage cp %s %s: %+v", hop[0], hop[1], res)
		}
	}
	got, err := os.ReadFile(filepath.Join(local, "copies", "in.bin"))
	if err != nil || stagingtest.SHA256(got) != stagingtest.SHA256(data) {
		t.Fatalf("the file that made the round trip differs: %v", err)
	}
	r := sb(t, time.Minute, "stage", "cp", "file://"+src, "local:a/../../escape")
	if r.code != exitUsage || !strings.Contains(r.stderr, `".." is not allowed`) {
		t.Errorf("a URL with .. : exit %d, %s", r.code, r.stderr)
	}
}

// examples/dir-copy over the real sshd: a tree (with subdirectories) is
// listed and copied by the built-in modules and digested on the node;
// every digest matches the source, and the exec records carry the bytes
// copied and staged. It runs as it is and with the source read
// compressed (?compress=zstd).
func TestDirCopyExample(t *testing.T) {
	for _, compress := range []string{"", staging.CompressZstd} {
		t.Run("compress="+compress, func(t *testing.T) { testDirCopyExample(t, compress) })
	}
}

func testDirCopyExample(t *testing.T, compress string) {
	site, dir := stagingtest.SFTPDir(t)
	u, auth := stagingtest.SFTP(t)
	sizes := map[string]int{"a.dat": 3<<20 + 5, "sub/b.dat": 1, "sub/deeper/c.dat": 70 << 10}
	sums := map[string]string{}
	for name, n := range sizes {
		data := stagingtest.Pattern(n)
		data[0] = name[0] // files differ
		stagingtest.Put(t, site, "tree/"+name, data)
		sums[name] = stagingtest.SHA256(data)
	}
	shared, out := t.TempDir(), t.TempDir()
	u.Path, u.Compress = dir+"/tree", compress
	t.Setenv("SOURCE_URL", u.String())
	t.Setenv("SHARED_DIR", shared)
	t.Setenv("OUT_DIR", out)
	t.Setenv("SCALEBOX_SFTP_KEY", auth.KeyFile)
	t.Setenv("SCALEBOX_SFTP_HOST_KEY", auth.HostKey)
	t.Setenv("SCALEBOX_LOCAL_ROOT", t.TempDir())
	state := stateDir(t)
	r := sbd(t, 2*time.Minute, "--state-dir", state, "run", "--pilots", "2", examples("dir-copy"))
	if r.code != 0 {
		t.Fatalf("run: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for name, sum := range sums {
		got, err := os.ReadFile(filepath.Join(out, name+".sha256"))
		if err != nil || strings.TrimSpace(string(got)) != sum {
			t.Errorf("%s: digest %q (%v), want the source's %s", name, got, err, sum)
		}
		if copied, err := os.ReadFile(filepath.Join(shared, name)); err != nil || stagingtest.SHA256(copied) != sum {
			t.Errorf("%s: the shared copy does not match the source (%v)", name, err)
		}
	}
	db := openDB(t, state)
	q := func(module, col string) string {
		return `SELECT e.` + col + ` FROM task_execs e JOIN tasks t ON t.id = e.task_id JOIN modules m ON m.id = t.module_id
			WHERE m.name = '` + module + `' AND t.body = ? AND e.exit_code = 0`
	}
	for name, n := range sizes {
		for _, c := range []struct{ module, col string }{{"copy", "input_bytes"}, {"digest", "stage_in_bytes"}} {
			if got := queryInt(t, db, q(c.module, c.col), name); got != n {
				t.Errorf("%s: %s %s = %d, want %d", name, c.module, c.col, got, n)
			}
		}
	}
	if n := queryInt(t, db, `SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'list' AND t.state = 'succeeded'`); n != 1 {
		t.Errorf("%d list tasks succeeded, want 1", n)
	}
}

// A built-in given a source that does not exist fails with 125 and a
// note that names it; nothing is emitted.
func TestBuiltinMissingSource(t *testing.T) {
	t.Setenv("SOURCE_URL", "file://"+filepath.Join(t.TempDir(), "nothing-here"))
	t.Setenv("SHARED_DIR", t.TempDir())
	t.Setenv("OUT_DIR", t.TempDir())
	t.Setenv("SCALEBOX_LOCAL_ROOT", t.TempDir())
	state := stateDir(t)
	r := sbd(t, 2*time.Minute, "--state-dir", state, "run", "--pilots", "1", examples("dir-copy"))
	if r.code == 0 {
		t.Fatalf("run of a missing source succeeded\n%s", r.stdout)
	}
	db := openDB(t, state)
	var code int
	var note string
	if err := db.QueryRow(`SELECT exit_code, note FROM task_execs ORDER BY id LIMIT 1`).Scan(&code, &note); err != nil {
		t.Fatal(err)
	}
	if code != 125 || !strings.Contains(note, "built-in dir-list") || !strings.Contains(note, "nothing-here") {
		t.Errorf("exit %d, note %q; want 125 and a note naming the built-in and the source", code, note)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM tasks"); n != 1 {
		t.Errorf("%d tasks, want only the list task", n)
	}
}

// tinyTier mounts a tmpfs of size bytes (a node tier too small for the
// data) and returns its path. It needs root: required under .ci/run.
func tinyTier(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	why := "mounting a tmpfs needs root"
	ok := os.Geteuid() == 0
	if ok {
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "sbtiny", dir).CombinedOutput(); err != nil {
			ok, why = false, fmt.Sprintf("mount tmpfs: %v: %s", err, out)
		}
	}
	slurmtest.Require(t, "root", ok, why)
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// A node tier too small for a task's output: the stage-out fails with 125
// and a note saying so, retry rules apply, no part file stays, nothing
// appears at the final name, and the run ends (FAILED) without a crash.
func TestStageOutTierTooSmall(t *testing.T) {
	tier := tinyTier(t, 1<<20)
	t.Setenv("SCALEBOX_LOCAL_ROOT", tier)
	app := writeFiles(t, map[string]string{
		"app.yaml": `name: tiny
modules:
  big:
    base_image: host
    arguments: {code_path: ./big}
    parameters: {start_task: "f1", retry_rules: "['125:1']"}
    stage_out: ["out.dat -> local:res/{body}.dat"]
`,
		"big/run.sh": "#!/bin/sh\nhead -c 2097152 /dev/zero > \"$WORK_DIR/out.dat\"\n",
	})
	state := stateDir(t)
	r := sbd(t, 2*time.Minute, "--state-dir", state, "run", "--pilots", "1", app)
	if r.code == 0 || strings.Contains(r.stderr, "panic") {
		t.Fatalf("run: exit %d, want a FAILED app and no panic\n%s%s", r.code, r.stdout, r.stderr)
	}
	db := openDB(t, state)
	rows, err := db.Query(`SELECT exit_code, note FROM task_execs ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var code int
		var note string
		rows.Scan(&code, &note)
		n++
		if code != 125 || !strings.Contains(note, "not enough space") || !strings.Contains(note, "stage_out") {
			t.Errorf("attempt %d: exit %d, note %q; want 125 and a note saying the stage_out had no space", n, code, note)
		}
	}
	rows.Close()
	if n != 2 {
		t.Errorf("%d attempts, want 2 (retry_rules ['125:1'])", n)
	}
	left := stagingtest.Files(t, tier)
	if len(left) != 0 {
		t.Errorf("files left on the tier: %v", left)
	}
}

// dir_quota_gb holds the slot back while the tier is over quota: the task
// stays unleased; once space is freed it runs.
func TestDirQuotaHoldsSlot(t *testing.T) {
	local := t.TempDir()
	t.Setenv("SCALEBOX_LOCAL_ROOT", local)
	os.MkdirAll(filepath.Join(local, "q"), 0o700)
	filler := filepath.Join(local, "q", "filler")
	os.WriteFile(filler, make([]byte, 4096), 0o600)
	app := writeFiles(t, map[string]string{
		"app.yaml": `name: quota
modules:
  m:
    base_image: host
    arguments: {code_path: ./m}
    parameters:
      start_task: "go"
      dir_quota_gb: {"local:q": 0.000001}
`,
		"m/run.sh": "#!/bin/sh\nexit 0\n",
	})
	state := stateDir(t)
	done := make(chan result, 1)
	go func() { done <- sbd(t, 2*time.Minute, "--state-dir", state, "run", "--pilots", "1", app) }()
	waitFile(t, filepath.Join(state, "scalebox.db"))
	db := openDB(t, state)
	waitCount(t, db, "SELECT count(*) FROM pilots WHERE state = 'active'", 1, time.Minute, "no pilot registered")
	// Over quota: for a few slot checks the task must stay ready.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n := queryInt(t, db, "SELECT count(*) FROM tasks WHERE state <> 'ready'"); n != 0 {
			t.Fatalf("a task was leased while local:q was over its quota")
		}
		time.Sleep(100 * time.Millisecond)
	}
	os.Remove(filler)
	r := <-done
	if r.code != 0 {
		t.Fatalf("run after freeing space: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// Two modules read the same shared file on one node: the first fetches it
// into the node's cache, the second gets its copy from there (0 bytes
// read from the source), and both copies are the file.
func TestStageInCacheHit(t *testing.T) {
	src := t.TempDir()
	data := stagingtest.Pattern(2<<20 + 3)
	os.WriteFile(filepath.Join(src, "ref.dat"), data, 0o644)
	t.Setenv("SCALEBOX_LOCAL_ROOT", t.TempDir())
	t.Setenv("REF_SHA", stagingtest.SHA256(data))
	check := "#!/bin/sh\nset -eu\n[ \"$(sha256sum \"$WORK_DIR/ref.dat\" | cut -d' ' -f1)\" = \"$REF_SHA\" ] || exit 3\n"
	app := writeFiles(t, map[string]string{
		"app.yaml": `name: cache
modules:
  first:
    base_image: host
    arguments: {code_path: ./first}
    parameters: {start_task: "x"}
    stage_in: ["file://` + src + `/ref.dat"]
    sink_modules: second
  second:
    base_image: host
    arguments: {code_path: ./second}
    stage_in: ["file://` + src + `/ref.dat"]
`,
		"first/run.sh":  check + "echo \"$1\" > \"$WORK_DIR/sink-tasks.txt\"\n",
		"second/run.sh": check,
	})
	state := stateDir(t)
	if r := sbd(t, 2*time.Minute, "--state-dir", state, "run", "--pilots", "1", app); r.code != 0 {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	db := openDB(t, state)
	q := `SELECT e.stage_in_bytes FROM task_execs e JOIN tasks t ON t.id = e.task_id JOIN modules m ON m.id = t.module_id WHERE m.name = ? AND e.exit_code = 0`
	if got := queryInt(t, db, q, "first"); got != len(data) {
		t.Errorf("first: %d bytes from the source, want %d (a fetch)", got, len(data))
	}
	if got := queryInt(t, db, q, "second"); got != 0 {
		t.Errorf("second: %d bytes from the source, want 0 (a cache hit)", got)
	}
	// The head knows this node caches the input, under the key both
	// modules' tasks carry.
	if n := queryInt(t, db, `SELECT count(*) FROM cached c JOIN tasks t ON t.data_key = c.data_key AND c.host = (SELECT host FROM pilots LIMIT 1)`); n != 2 {
		t.Errorf("%d tasks whose input the head records as cached on their node, want 2", n)
	}
}

// `stage cp` killed (SIGKILL) half-way through a download from the real
// sshd, then run again: it resumes from the chunks it had recorded, reads
// only the rest from the site, and the file verifies.
func TestStageCopyKilledResumes(t *testing.T) {
	site, _ := stagingtest.SFTPDir(t)
	u, auth := stagingtest.SFTP(t)
	data := stagingtest.Pattern(256 << 20)
	stagingtest.Put(t, site, "big.bin", data)
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + "/big.bin"
	dir := t.TempDir()
	dst := "file://" + dir + "/big.bin"
	args := []string{"stage", "cp", "--json", "--key", auth.KeyFile, "--host-key", auth.HostKey, u.String(), dst}
	cmd := exec.Command(binary, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, staging.PartName("big.bin")+".json")
	var recorded int
	deadline := time.Now().Add(time.Minute)
	for recorded < 4 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("no 4 chunks recorded within a minute")
		}
		var st struct {
			States []string `json:"sha256_states"`
		}
		if b, err := os.ReadFile(state); err == nil && json.Unmarshal(b, &st) == nil {
			recorded = len(st.States)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	if _, err := os.Stat(filepath.Join(dir, "big.bin")); err == nil {
		t.Fatal("the copy finished before it was killed (4 of 32 chunks were recorded when the kill was sent)")
	}
	r := sb(t, time.Minute, args...)
	var res struct {
		Size, Bytes, Resumed int64
		SHA256               string
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil {
		t.Fatalf("second run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if res.Resumed < int64(recorded)*staging.ChunkSize || res.Bytes != res.Size-res.Resumed {
		t.Errorf("resumed %d bytes and read %d of %d; want at least the %d chunks seen recorded kept, and only the rest read", res.Resumed, res.Bytes, res.Size, recorded)
	}
	got, err := os.ReadFile(filepath.Join(dir, "big.bin"))
	if err != nil || res.SHA256 != stagingtest.SHA256(data) || stagingtest.SHA256(got) != res.SHA256 {
		t.Errorf("the resumed file does not verify: %v", err)
	}
	t.Logf("killed after %d chunks; resumed %d MiB, read %d MiB", recorded, res.Resumed>>20, res.Bytes>>20)
}

// A body that would put a staged file outside WORK_DIR ("..") is
// refused (125, a note saying why) before anything is copied.
func TestStageBodyCannotLeaveWorkDir(t *testing.T) {
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "in.dat"), []byte("x"), 0o644)
	t.Setenv("SCALEBOX_LOCAL_ROOT", t.TempDir())
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	app := writeFiles(t, map[string]string{
		"app.yaml": `name: escape
modules:
  m:
    base_image: host
    arguments: {code_path: ./m}
    parameters: {start_task: "../../escaped.dat"}
    stage_in: ["file://` + src + `/in.dat -> {body}"]
`,
		"m/run.sh": "#!/bin/sh\nexit 0\n",
	})
	state := stateDir(t)
	r := sbd(t, 2*time.Minute, "--state-dir", state, "run", "--pilots", "1", app)
	if r.code == 0 {
		t.Fatalf("run succeeded with a body that leaves WORK_DIR\n%s", r.stdout)
	}
	db := openDB(t, state)
	var code int
	var note string
	if err := db.QueryRow(`SELECT exit_code, note FROM task_execs LIMIT 1`).Scan(&code, &note); err != nil {
		t.Fatal(err)
	}
	if code != 125 || !strings.Contains(note, "leaves WORK_DIR") {
		t.Errorf("exit %d, note %q; want 125 and a note that the path leaves WORK_DIR", code, note)
	}
	// The slots' work dirs are under $TMPDIR (set below): "../../" from
	// one is still inside it.
	for _, f := range stagingtest.Files(t, tmp) {
		if filepath.Base(f) == "escaped.dat" {
			t.Errorf("a staged file was written outside the work dir: %s", f)
		}
	}
}

// `stage ls` on the remote site: one level, and the whole tree with -r,
// as JSON; a missing directory is an error that names it.
func TestStageList(t *testing.T) {
	site, dir := stagingtest.SFTPDir(t)
	u, auth := stagingtest.SFTP(t)
	for _, name := range []string{"a.dat", "sub/b.dat", "sub/deeper/c.dat"} {
		stagingtest.Put(t, site, "tree/"+name, []byte(name))
	}
	u.Path = dir + "/tree"
	creds := []string{"--key", auth.KeyFile, "--host-key", auth.HostKey}
	list := func(args ...string) []string {
		t.Helper()
		r := sb(t, time.Minute, append(append([]string{"stage", "ls", "--json"}, creds...), args...)...)
		var ents []struct {
			Name string `json:"name"`
			Size int64  `json:"size"`
			Dir  bool   `json:"dir"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ents) != nil {
			t.Fatalf("stage ls %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
		var names []string
		for _, e := range ents {
			if e.Dir {
				e.Name += "/"
			} else if e.Size != int64(len(e.Name)) { // each file holds its own name
				t.Errorf("%s: size %d", e.Name, e.Size)
			}
			names = append(names, e.Name)
		}
		return names
	}
	if got := strings.Join(list(u.String()), " "); got != "a.dat sub/" {
		t.Errorf("one level: %s", got)
	}
	if got := strings.Join(list("-r", u.String()), " "); got != "a.dat sub/b.dat sub/deeper/c.dat" {
		t.Errorf("recursive: %s", got)
	}
	r := sb(t, time.Minute, append(append([]string{"stage", "ls"}, creds...), u.String()+"/nope")...)
	if r.code == 0 || !strings.Contains(r.stderr, "nope") {
		t.Errorf("missing directory: exit %d, %s", r.code, r.stderr)
	}
}
