// Package slurm submits, watches and cancels Slurm pilot jobs. One Client
// interface has two backends: the command line (slurm/sbatch) and
// slurmrestd (slurm/rest). Cluster adapts a Client to the
// dataflow.BatchSystem the server's pool manager drives.
package slurm

import (
	"context"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Client is one way of talking to one Slurm cluster.
type Client interface {
	// Submit queues a batch job and returns its id.
	Submit(ctx context.Context, job *Job) (string, error)
	// Jobs reports the given jobs in one call to Slurm. Jobs Slurm no
	// longer knows (purged after MinJobAge) are absent from the map.
	Jobs(ctx context.Context, ids []string) (map[string]JobStatus, error)
	// Cancel cancels jobs; a job that already ended is not an error.
	Cancel(ctx context.Context, ids []string) error
	// Ping checks the controller answers and says who it is.
	Ping(ctx context.Context) (Info, error)
}

// Job is one batch job to submit. Zero fields are left to Slurm's
// defaults. The script carries the same settings as #SBATCH lines so it
// can be resubmitted by hand; backends pass them explicitly as well,
// because slurmrestd does not read #SBATCH lines.
type Job struct {
	Name      string
	Script    string
	WorkDir   string
	Output    string // stdout and stderr; %j is the job id
	Partition string
	Account   string
	QOS       string
	// TimeLimit is rounded up to whole minutes, Slurm's unit.
	TimeLimit   time.Duration
	Nodes       int
	CPUsPerNode int // one task per node, this many CPUs for it
	MemMB       int // per node
	Gres        string
	Constraint  string
	// Env is the job's environment. Never put a secret here: slurmrestd
	// and `scontrol show job` can show it.
	Env map[string]string
	// ExtraArgs are raw sbatch options; only the CLI backend accepts them.
	ExtraArgs []string
}

// JobStatus is what Slurm says of one job.
type JobStatus struct {
	ID     string
	Name   string
	State  string // Slurm's base state: PENDING, RUNNING, COMPLETED, ...
	Reason string // why it is pending or why it failed
	Nodes  string
	Start  time.Time
	End    time.Time // actual, or expected while running
}

// Phase maps a Slurm state to the batch-system view of the pool manager.
func (s JobStatus) Phase() dataflow.JobState {
	switch strings.ToUpper(s.State) {
	case "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED":
		return dataflow.JobPending
	case "RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT":
		return dataflow.JobRunning
	case "COMPLETED":
		return dataflow.JobDone
	case "":
		return dataflow.JobUnknown
	default: // FAILED, CANCELLED, TIMEOUT, NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE, OUT_OF_MEMORY
		return dataflow.JobFailed
	}
}

// Info identifies a cluster.
type Info struct {
	Cluster string `json:"cluster,omitempty"`
	Version string `json:"version,omitempty"` // Slurm release, e.g. 22.05.8
	API     string `json:"api,omitempty"`     // REST API version in use, e.g. v0.0.38
}

// Minutes rounds a time limit up to whole minutes; 0 stays 0.
func Minutes(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Minute - 1) / time.Minute)
}

// Pick keeps the jobs asked for: backends list all of the user's jobs in
// one call (squeue -j fails as a whole when one id was purged) and filter.
func Pick(all []JobStatus, ids []string) map[string]JobStatus {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	out := make(map[string]JobStatus, len(ids))
	for _, j := range all {
		if want[j.ID] {
			out[j.ID] = j
		}
	}
	return out
}
