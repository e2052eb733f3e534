package sbatch

import (
	"reflect"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/slurm"
	"github.com/scalebox-hpc/scalebox/slurm/slurmtest"
)

func TestArgs(t *testing.T) {
	job := &slurm.Job{Name: "p", WorkDir: "/w", Output: "/w/%j.out", Partition: "debug", Account: "a", QOS: "q",
		TimeLimit: 90 * time.Second, Nodes: 2, CPUsPerNode: 4, MemMB: 1000, Gres: "gpu:1", Constraint: "ssd",
		Env: map[string]string{"B": "2", "A": "1"}, ExtraArgs: []string{"--exclusive"}}
	want := []string{"--parsable", "--job-name=p", "--chdir=/w", "--output=/w/%j.out", "--partition=debug",
		"--account=a", "--qos=q", "--time=2", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=4",
		"--mem=1000", "--gres=gpu:1", "--constraint=ssd", "--export=NIL,A=1,B=2", "--exclusive"}
	if got := Args(job); !reflect.DeepEqual(got, want) {
		t.Fatalf("Args:\n got %q\nwant %q", got, want)
	}
	if got := Args(&slurm.Job{}); !reflect.DeepEqual(got, []string{"--parsable", "--ntasks-per-node=1"}) {
		t.Fatalf("empty job: %q", got)
	}
}

func TestParseSqueue(t *testing.T) {
	text := "12|scalebox-primes|RUNNING|n[1-2]|2026-12-03T17:30:11|2026-12-03T18:30:11|None\n" +
		"13|scalebox-primes|PENDING||N/A|N/A|Resources\n" +
		"14|x|FAILED|n3|2026-12-03T17:00:00|2026-12-03T17:00:01|NonZeroExitCode\n"
	jobs, err := ParseSqueue(text)
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 3 {
		t.Fatalf("got %d jobs", len(jobs))
	}
	if j := jobs[0]; j.ID != "12" || j.State != "RUNNING" || j.Nodes != "n[1-2]" || j.Reason != "" || j.Start.IsZero() {
		t.Fatalf("running job: %+v", j)
	}
	if j := jobs[1]; j.Reason != "Resources" || !j.Start.IsZero() {
		t.Fatalf("pending job: %+v", j)
	}
	if jobs[2].Phase() != "failed" {
		t.Fatalf("failed job phase %s", jobs[2].Phase())
	}
	if _, err := ParseSqueue("12|only|three\n"); err == nil {
		t.Fatal("short line accepted")
	}
}

func TestAlreadyEnded(t *testing.T) {
	for _, tc := range []struct {
		stderr string
		want   bool
	}{
		{"scancel: error: Kill job error on job id 5: Job/step already completing or completed\n", true},
		{"scancel: error: Invalid job id 99999\n", true},
		{"scancel: error: Kill job error on job id 5: Access/permission denied\n", false},
		{"", false},
	} {
		if got := alreadyEnded(tc.stderr); got != tc.want {
			t.Errorf("alreadyEnded(%q) = %v", tc.stderr, got)
		}
	}
}

func TestConformanceCI(t *testing.T) {
	slurmtest.NeedCLI(t, slurmtest.CI)
	slurmtest.Conformance(t, &Client{}, slurmtest.CI)
}

func TestConformanceTrixie(t *testing.T) {
	slurmtest.NeedCLI(t, slurmtest.Trixie)
	slurmtest.Conformance(t, &Client{Prefix: slurmtest.Trixie.Prefix}, slurmtest.Trixie)
}
