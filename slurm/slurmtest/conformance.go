package slurmtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/slurm"
)

// Conformance checks a slurm.Client against a real cluster: what the pool
// manager relies on, the same for every backend.
func Conformance(t *testing.T, c slurm.Client, cl Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("ping", func(t *testing.T) {
		info, err := c.Ping(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Version == "" {
			t.Fatalf("ping gave no Slurm version: %+v", info)
		}
		if info.Cluster != "" && info.Cluster != cl.Name {
			t.Fatalf("ping says cluster %q, want %q", info.Cluster, cl.Name)
		}
	})

	t.Run("submit runs the script with its environment and output", func(t *testing.T) {
		dir := cl.TempDir(t)
		os.Chmod(dir, 0o755)
		job := &slurm.Job{
			Name: "sbtest-ok", WorkDir: dir, Output: filepath.Join(dir, "out-%j.txt"),
			Partition: cl.Partition, TimeLimit: 2 * time.Minute, Nodes: 1, CPUsPerNode: 1,
			Env:    map[string]string{"PATH": "/usr/bin:/bin", "SBTEST_VALUE": "forty two"},
			Script: "#!/bin/bash\necho \"value=$SBTEST_VALUE job=$SLURM_JOB_ID\"\n",
		}
		id, err := c.Submit(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		st := waitPhase(t, ctx, c, id, dataflow.JobDone, dataflow.JobFailed)
		if st.Phase() != dataflow.JobDone {
			t.Fatalf("job %s ended %s (%s)", id, st.State, st.Reason)
		}
		out, err := os.ReadFile(filepath.Join(dir, "out-"+id+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		if want := "value=forty two job=" + id; !strings.Contains(string(out), want) {
			t.Fatalf("job output %q does not contain %q", out, want)
		}
	})

	t.Run("cancel ends a running job and is idempotent", func(t *testing.T) {
		dir := cl.TempDir(t)
		job := &slurm.Job{Name: "sbtest-long", WorkDir: dir, Output: filepath.Join(dir, "out-%j.txt"),
			Partition: cl.Partition, TimeLimit: 5 * time.Minute, Nodes: 1,
			Script: "#!/bin/bash\nsleep 300\n"}
		id, err := c.Submit(ctx, job)
		if err != nil {
			t.Fatal(err)
		}
		waitPhase(t, ctx, c, id, dataflow.JobRunning)
		if err := c.Cancel(ctx, []string{id}); err != nil {
			t.Fatal(err)
		}
		st := waitPhase(t, ctx, c, id, dataflow.JobFailed, dataflow.JobDone)
		if st.State != "CANCELLED" {
			t.Fatalf("cancelled job %s is %s", id, st.State)
		}
		if err := c.Cancel(ctx, []string{id}); err != nil {
			t.Fatalf("second cancel: %v", err)
		}
	})

	t.Run("bad partition is refused with Slurm's message", func(t *testing.T) {
		_, err := c.Submit(ctx, &slurm.Job{Name: "sbtest-bad", WorkDir: cl.TempDir(t), Partition: "no-such-partition",
			Script: "#!/bin/bash\ntrue\n"})
		if err == nil {
			t.Fatal("submit to a missing partition succeeded")
		}
		if !strings.Contains(strings.ToLower(err.Error()), "partition") {
			t.Fatalf("error does not carry Slurm's reason: %v", err)
		}
	})

	t.Run("unknown ids are absent", func(t *testing.T) {
		got, err := c.Jobs(ctx, []string{"999999999"})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 0 {
			t.Fatalf("unknown job reported: %+v", got)
		}
	})
}

// waitPhase polls Jobs until the job reaches one of the phases.
func waitPhase(t *testing.T, ctx context.Context, c slurm.Client, id string, phases ...dataflow.JobState) slurm.JobStatus {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last slurm.JobStatus
	for time.Now().Before(deadline) {
		jobs, err := c.Jobs(ctx, []string{id})
		if err != nil {
			t.Fatal(err)
		}
		last = jobs[id]
		for _, p := range phases {
			if last.Phase() == p {
				return last
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	t.Fatalf("job %s still %q (%s) after 90 s, want %v", id, last.State, last.Reason, phases)
	return last
}
