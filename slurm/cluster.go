package slurm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/templates"
)

// Cluster is a dataflow.BatchSystem on one Slurm cluster: it renders the
// pilot job script from templates/, keeps it and Slurm's output in Dir,
// and submits through the Client.
type Cluster struct {
	Name   string
	Client Client
	// Dir is on a filesystem the compute nodes share: rendered scripts,
	// Slurm output and the pilots' copy of the token (0600) go here.
	Dir string
	// Binary is the scalebox executable as the nodes see it.
	Binary   string
	LogLevel string
	// Directives renders sbatch options for a job; the CLI backend's
	// Args without --parsable and --export (so the script can be
	// resubmitted by hand with the same settings).
	Directives func(*Job) []string
}

var _ dataflow.BatchSystem = (*Cluster)(nil)

// JobFor turns a pool's settings into a Job.
func JobFor(name string, p *dataflow.Pool) (*Job, error) {
	job := &Job{Name: name}
	if p == nil {
		return job, nil
	}
	limit, err := dataflow.ParseTimeLimit(p.Time)
	if err != nil {
		return nil, err
	}
	mem, err := dataflow.ParseMemMB(p.Mem)
	if err != nil {
		return nil, err
	}
	job.Partition, job.Account, job.QOS = p.Partition, p.Account, p.QOS
	job.TimeLimit, job.MemMB = limit, mem
	job.Nodes, job.CPUsPerNode = p.Nodes, p.CPUs
	job.Gres, job.Constraint = p.Gres, p.Constraint
	job.ExtraArgs = p.SbatchArgs
	return job, nil
}

// Submit renders and submits one pilot job.
func (c *Cluster) Submit(ctx context.Context, req dataflow.PilotRequest) (string, error) {
	dir := filepath.Join(c.Dir, "app-"+strconv.FormatInt(req.AppID, 10))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("submit pilot: %w", err)
	}
	job, err := JobFor(req.Name, req.Spec)
	if err != nil {
		return "", fmt.Errorf("submit pilot: pool %s: %w", req.Pool, err)
	}
	job.WorkDir = dir
	job.Output = filepath.Join(dir, "slurm-%j.out")
	tokenFile := ""
	if req.TokenFile != "" {
		tokenFile = filepath.Join(dir, "token")
		if err := copyPrivate(req.TokenFile, tokenFile); err != nil {
			return "", fmt.Errorf("submit pilot: %w", err)
		}
	}
	var directives []string
	if c.Directives != nil {
		directives = c.Directives(job)
	}
	script, err := templates.PilotScript(templates.Pilot{AppID: req.AppID, AppName: req.AppName, Cluster: c.Name, Pool: req.Pool,
		Server: req.Server, CertSHA256: req.CertSHA256, TokenFile: tokenFile, Binary: c.Binary, LogLevel: c.LogLevel,
		Output: job.Output, Directives: directives, TimeLimitSeconds: int64(job.TimeLimit / time.Second)})
	if err != nil {
		return "", fmt.Errorf("submit pilot: %w", err)
	}
	job.Script = script
	pending := filepath.Join(dir, fmt.Sprintf("pilot-submitting-%d.sh", time.Now().UnixNano()))
	if err := os.WriteFile(pending, []byte(script), 0o600); err != nil {
		return "", fmt.Errorf("submit pilot: %w", err)
	}
	id, err := c.Client.Submit(ctx, job)
	if err != nil {
		os.Rename(pending, filepath.Join(dir, fmt.Sprintf("pilot-failed-%d.sh", time.Now().UnixNano())))
		return "", err
	}
	os.Rename(pending, c.ScriptPath(req.AppID, id))
	return id, nil
}

// ScriptPath is where the script of a submitted job is kept.
func (c *Cluster) ScriptPath(appID int64, jobID string) string {
	return filepath.Join(c.Dir, "app-"+strconv.FormatInt(appID, 10), "pilot-"+jobID+".sh")
}

// copyPrivate copies a file to a 0600 file, atomically.
func copyPrivate(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

// Status asks Slurm about many jobs in one call.
func (c *Cluster) Status(ctx context.Context, ids []string) (map[string]dataflow.JobState, error) {
	jobs, err := c.Client.Jobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]dataflow.JobState, len(ids))
	for _, id := range ids {
		if j, ok := jobs[id]; ok {
			out[id] = j.Phase()
		} else {
			out[id] = dataflow.JobUnknown
		}
	}
	return out, nil
}

// Cancel cancels jobs.
func (c *Cluster) Cancel(ctx context.Context, ids []string) error { return c.Client.Cancel(ctx, ids) }

// Ping checks the controller answers.
func (c *Cluster) Ping(ctx context.Context) error {
	_, err := c.Client.Ping(ctx)
	return err
}

// DirectivesFrom filters sbatch arguments down to those that belong in
// #SBATCH lines.
func DirectivesFrom(args []string) []string {
	var out []string
	for _, a := range args {
		if a == "--parsable" || strings.HasPrefix(a, "--export") {
			continue
		}
		out = append(out, a)
	}
	return out
}
