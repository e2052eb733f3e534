// Package slurmtest finds the local test clusters that scripts/cluster.sh
// starts and runs the conformance suite every slurm.Client backend must
// pass against them.
package slurmtest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Require skips the test when component is unavailable, or fails it when
// SCALEBOX_TEST_REQUIRE names the component (or "all"), as .ci/run does.
func Require(t testing.TB, component string, available bool, why string) {
	t.Helper()
	if available {
		return
	}
	for _, c := range strings.FieldsFunc(os.Getenv("SCALEBOX_TEST_REQUIRE"), func(r rune) bool { return r == ',' || r == ' ' }) {
		if c == "all" || c == component {
			t.Fatalf("%s is required (SCALEBOX_TEST_REQUIRE=%s) but unavailable: %s", component, os.Getenv("SCALEBOX_TEST_REQUIRE"), why)
		}
	}
	t.Skipf("%s unavailable (%s); start it with `make cluster-up` or set SCALEBOX_TEST_REQUIRE=%s to make this a failure", component, why, component)
}

// Cluster describes one local test cluster.
type Cluster struct {
	Name      string
	Partition string
	Nodes     int
	// Prefix runs Slurm commands for this cluster (a chroot for trixie).
	Prefix []string
	// RestURL is its slurmrestd.
	RestURL string
	// SharedDir is a directory the cluster's jobs see at the same path
	// ("" when they share the host's filesystem).
	SharedDir string
}

// CI is the 22.05 cluster "ci" of scripts/cluster.sh.
var CI = Cluster{Name: "ci", Partition: "debug", Nodes: 3, RestURL: "http://127.0.0.1:6820"}

// Trixie is the 24.11 cluster "trixie" of scripts/cluster.sh, in a chroot.
var Trixie = Cluster{Name: "trixie", Partition: "debug", Nodes: 2, RestURL: "http://127.0.0.1:6821",
	Prefix: []string{"chroot", trixieRoot()}, SharedDir: clusterRoot() + "/shared"}

func clusterRoot() string {
	if r := os.Getenv("SCALEBOX_CLUSTER_ROOT"); r != "" {
		return r
	}
	return "/var/lib/scalebox-cluster"
}

func trixieRoot() string { return clusterRoot() + "/trixie/root" }

// TempDir is a fresh directory the cluster's jobs can use, removed when
// the test ends.
func (c Cluster) TempDir(t testing.TB) string {
	t.Helper()
	if c.SharedDir == "" {
		return t.TempDir()
	}
	dir, err := os.MkdirTemp(c.SharedDir, "test-")
	if err != nil {
		t.Fatalf("temp dir on %s's shared dir: %v", c.Name, err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// NeedCLI skips (or fails under CI) unless the cluster's controller
// answers `scontrol ping`.
func NeedCLI(t testing.TB, c Cluster) {
	t.Helper()
	ok, why := true, ""
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	argv := append(append([]string{}, c.Prefix...), "scontrol", "ping")
	if _, err := exec.LookPath(argv[0]); err != nil {
		ok, why = false, argv[0]+" not installed"
	} else if out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput(); err != nil || !strings.Contains(string(out), "UP") {
		ok, why = false, "scontrol ping: "+strings.TrimSpace(string(out))
	}
	Require(t, "slurm-"+c.Name, ok, why)
}

// NeedREST skips (or fails under CI) unless the cluster's slurmrestd
// accepts connections.
func NeedREST(t testing.TB, c Cluster) {
	t.Helper()
	NeedCLI(t, c)
	host := strings.TrimPrefix(strings.TrimPrefix(c.RestURL, "http://"), "https://")
	conn, err := net.DialTimeout("tcp", host, 2*time.Second)
	why := ""
	if err != nil {
		why = err.Error()
	} else {
		conn.Close()
	}
	Require(t, "slurmrestd-"+c.Name, err == nil, why)
}
