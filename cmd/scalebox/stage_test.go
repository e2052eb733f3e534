package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// examples/dir-copy over the real sshd: every file arrives and its digest
// matches the source; exec records carry the staged bytes; each digest
// task is bound to the node holding its input; a missing source file
// fails its task with 125 and a note naming the URL, and sends nothing on.
func TestDirCopyExample(t *testing.T) {
	site, dir := stagingtest.SFTPDir(t)
	u, auth := stagingtest.SFTP(t)
	sizes := map[string]int{"a.dat": 3<<20 + 5, "b.dat": 1, "c.dat": 70 << 10}
	sums := map[string]string{}
	var names []string
	for name, n := range sizes {
		data := stagingtest.Pattern(n)
		data[0] = name[0] // files differ
		stagingtest.Put(t, site, name, data)
		sums[name] = stagingtest.SHA256(data)
		names = append(names, name)
	}
	list := filepath.Join(t.TempDir(), "files.txt")
	os.WriteFile(list, []byte(strings.Join(names, "\n")+"\nmissing.dat\n"), 0o644)
	out := t.TempDir()
	u.Path = dir
	t.Setenv("SOURCE_URL", u.String())
	t.Setenv("OUT_DIR", out)
	t.Setenv("FILES", list)
	t.Setenv("SCALEBOX_SFTP_KEY", auth.KeyFile)
	t.Setenv("SCALEBOX_SFTP_HOST_KEY", auth.HostKey)
	t.Setenv("SCALEBOX_LOCAL_ROOT", t.TempDir())
	state := stateDir(t)
	r := sbd(t, 2*time.Minute, "--state-dir", state, "run", "--pilots", "2", examples("dir-copy"))
	if r.code == 0 || !strings.Contains(r.stdout+r.stderr, "FAILED") {
		t.Fatalf("run: exit %d, want FAILED for the missing file\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	for name, sum := range sums {
		got, err := os.ReadFile(filepath.Join(out, name+".sha256"))
		if err != nil || strings.TrimSpace(string(got)) != sum {
			t.Errorf("%s: digest %q (%v), want the source's %s", name, got, err, sum)
		}
	}
	db := openDB(t, state)
	for name, n := range sizes {
		for _, q := range []string{
			`SELECT e.stage_in_bytes FROM task_execs e JOIN tasks t ON t.id = e.task_id JOIN modules m ON m.id = t.module_id WHERE m.name = 'fetch' AND t.body = ? AND e.exit_code = 0`,
			`SELECT e.stage_out_bytes FROM task_execs e JOIN tasks t ON t.id = e.task_id JOIN modules m ON m.id = t.module_id WHERE m.name = 'fetch' AND t.body = ? AND e.exit_code = 0`,
			`SELECT e.stage_in_bytes FROM task_execs e JOIN tasks t ON t.id = e.task_id JOIN modules m ON m.id = t.module_id WHERE m.name = 'digest' AND t.body = ? AND e.exit_code = 0`,
		} {
			if got := queryInt(t, db, q, name); got != n {
				t.Errorf("%s: %d bytes staged, want %d (%s)", name, got, n, q)
			}
		}
	}
	if n := queryInt(t, db, `SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id
		WHERE m.name = 'digest' AND t.state = 'succeeded' AND json_extract(t.headers, '$.to_host') = json_extract(t.headers, '$.from_host')
		AND json_extract(t.headers, '$.to_host') <> ''`); n != len(sizes) {
		t.Errorf("%d digest tasks bound to the node holding their input, want %d", n, len(sizes))
	}
	if n := queryInt(t, db, `SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'digest'`); n != len(sizes) {
		t.Errorf("%d digest tasks, want %d (none for the missing file)", n, len(sizes))
	}
	var note string
	var code int
	err := db.QueryRow(`SELECT e.exit_code, e.note FROM task_execs e JOIN tasks t ON t.id = e.task_id WHERE t.body = 'missing.dat' ORDER BY e.id DESC LIMIT 1`).Scan(&code, &note)
	if err != nil || code != 125 || !strings.Contains(note, "missing.dat") || !strings.Contains(note, "stage_in") {
		t.Errorf("missing source: exit %d, note %q (%v); want 125 and a note naming stage_in and the file", code, note, err)
	}
	if n := queryInt(t, db, `SELECT count(*) FROM task_execs e JOIN tasks t ON t.id = e.task_id WHERE t.body = 'missing.dat'`); n != 3 {
		t.Errorf("missing source ran %d times, want 3 (retry_rules ['125:2'])", n)
	}
}
