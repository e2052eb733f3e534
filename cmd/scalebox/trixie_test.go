package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/slurm/slurmtest"
)

// The 24.11 cluster runs in a Debian trixie chroot: its jobs see the host
// only through the shared dir (bind-mounted at the same path), so the
// statically linked release binary and the app's code go there.

var (
	releaseOnce sync.Once
	releasePath string
	releaseErr  string
)

// releaseBinary builds `make release` once into the trixie shared dir.
func releaseBinary(t *testing.T) string {
	t.Helper()
	releaseOnce.Do(func() {
		dir := filepath.Join(slurmtest.Trixie.SharedDir, "bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			releaseErr = err.Error()
			return
		}
		releasePath = filepath.Join(dir, "scalebox")
		out, err := exec.Command("make", "-C", filepath.Join("..", ".."), "release", "RELEASE_BIN="+releasePath).CombinedOutput()
		if err != nil {
			releaseErr = err.Error() + "\n" + string(out)
		}
	})
	if releaseErr != "" {
		t.Fatalf("make release: %s", releaseErr)
	}
	return releasePath
}

// copyDir copies a directory tree (an example app) keeping file modes.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The release binary is static (cgo SQLite included) and runs the demo
// unchanged inside the trixie chroot.
func TestReleaseRunsInTrixie(t *testing.T) {
	slurmtest.NeedCLI(t, slurmtest.Trixie)
	bin := releaseBinary(t)
	if out, _ := exec.Command("file", bin).Output(); len(out) > 0 && !strings.Contains(string(out), "statically linked") {
		t.Errorf("release binary is not static: %s", out)
	}
	dir := slurmtest.Trixie.TempDir(t)
	copyDir(t, examples("primes"), filepath.Join(dir, "primes"))
	argv := append(append([]string{}, slurmtest.Trixie.Prefix...), bin, "--log-level", "warn", "--state-dir", "/tmp/sb-release-test", "run", "--json", filepath.Join(dir, "primes"))
	exec.Command(slurmtest.Trixie.Prefix[0], append(slurmtest.Trixie.Prefix[1:], "rm", "-rf", "/tmp/sb-release-test")...).Run()
	cmd := exec.Command(argv[0], argv[1:]...)
	// The slots must call the chroot's scalebox, not the test build's.
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("static scalebox in the trixie chroot: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `"result": "78498"`) {
		t.Fatalf("no result 78498:\n%s", out)
	}
}

func trixieClusterYAML(t *testing.T, jobs string) string {
	return "  trixie:\n    slurm:\n" + indentLines(fmtTrixie(t, jobs), 6) + "    pools:\n      default:\n" +
		indentLines("partition: debug\nnodes: 1\ncpus: 4\ntime: \"10\"\nmax: 2", 8)
}

func fmtTrixie(t *testing.T, jobs string) string {
	return "mode: rest\nrest_url: " + slurmtest.Trixie.RestURL + "\ncommand_prefix: chroot " + slurmtest.Trixie.Prefix[1] +
		"\nbinary: " + releaseBinary(t) + "\nshared_dir: " + jobs
}

// examples/primes with its pilots on the 24.11 cluster, through slurmrestd.
func TestPrimesOnTrixieREST(t *testing.T) {
	slurmtest.NeedREST(t, slurmtest.Trixie)
	dir := slurmtest.Trixie.TempDir(t)
	copyDir(t, examples("primes"), filepath.Join(dir, "primes"))
	clusters := filepath.Join(t.TempDir(), "clusters.yaml")
	if err := os.WriteFile(clusters, []byte("clusters:\n"+trixieClusterYAML(t, filepath.Join(dir, "jobs"))), 0o600); err != nil {
		t.Fatal(err)
	}
	state := stateDir(t)
	r, err := startOnSlurmCluster(t, "trixie", 3*time.Minute, clusters, state, filepath.Join(dir, "primes")).wait()
	if err != nil {
		t.Fatal(err)
	}
	if r.code != 0 {
		t.Fatalf("run exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	s := decodeSummary(t, r)
	if s.Result != "78498" {
		t.Fatalf("result %q", s.Result)
	}
	db := openDB(t, state)
	if n := queryInt(t, db, "SELECT count(DISTINCT host) FROM task_execs WHERE host IN ('t1','t2')"); n < 1 {
		t.Errorf("no exec on the trixie nodes")
	}
	if n := queryInt(t, db, "SELECT count(*) FROM task_execs e JOIN modules m ON m.id = e.module_id WHERE m.name = 'calc' AND e.host NOT IN ('t1','t2')"); n != 0 {
		t.Errorf("%d calc execs outside the trixie nodes", n)
	}
	if n := queryInt(t, db, "SELECT count(*) FROM pilot_jobs WHERE cluster = 'trixie'"); n < 1 || n > 2 {
		t.Errorf("%d pilot jobs on trixie, want 1..2", n)
	}
}

// One app, one counting module on each cluster: calc on 22.05 through
// sbatch, calc24 on 24.11 through slurmrestd, the router on the head.
func TestCrossClusterApp(t *testing.T) {
	slurmtest.NeedCLI(t, slurmtest.CI)
	slurmtest.NeedREST(t, slurmtest.Trixie)
	dir := slurmtest.Trixie.TempDir(t)
	app := filepath.Join(dir, "primes2")
	copyDir(t, examples("primes"), app)
	b, _ := os.ReadFile(filepath.Join(app, "app.yaml"))
	yaml := strings.Replace(string(b), "${CALC_MODULES:-calc}", "calc calc24", 1) + `  calc24:
    label: count the primes of one range, on the 24.11 cluster
    base_image: host
    cluster: trixie
    arguments:
      code_path: ./calc
      task_max_seconds: 300
`
	if err := os.WriteFile(filepath.Join(app, "app.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	clusters := filepath.Join(t.TempDir(), "clusters.yaml")
	body := "clusters:\n  ci:\n    slurm:\n      mode: cli\n    pools:\n      default:\n" + indentLines(ciPool, 8) + trixieClusterYAML(t, filepath.Join(dir, "jobs"))
	if err := os.WriteFile(clusters, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	state := stateDir(t)
	r := runOnSlurm(t, 4*time.Minute, clusters, state, app)
	if r.code != 0 {
		t.Fatalf("run exited %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if s := decodeSummary(t, r); s.Result != "78498" {
		t.Fatalf("result %q, want 78498", s.Result)
	}
	db := openDB(t, state)
	for _, c := range []struct{ module, hosts string }{{"calc", "'n1','n2','n3'"}, {"calc24", "'t1','t2'"}} {
		q := "SELECT count(*) FROM task_execs e JOIN modules m ON m.id = e.module_id WHERE m.name = '" + c.module + "'"
		all, on := queryInt(t, db, q), queryInt(t, db, q+" AND e.host IN ("+c.hosts+")")
		if all == 0 || on != all {
			t.Errorf("%s: %d execs, %d of them on its cluster's nodes (%s)", c.module, all, on, c.hosts)
		}
	}
	for _, cl := range []string{"ci", "trixie"} {
		if n := queryInt(t, db, "SELECT count(*) FROM pilot_jobs WHERE cluster = ?", cl); n < 1 {
			t.Errorf("no pilot job on cluster %s", cl)
		}
	}
}
