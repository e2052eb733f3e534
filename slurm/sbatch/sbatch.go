// Package sbatch is the command-line backend of slurm.Client: sbatch,
// squeue, scancel and scontrol, run locally (or through a prefix such as
// ssh or chroot).
package sbatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/slurm"
)

// Client runs Slurm's commands.
type Client struct {
	// Prefix runs before every command, e.g. ["ssh", "login1"]. Empty runs
	// the commands directly.
	Prefix []string
	// Cluster is passed as --clusters when set (multi-cluster Slurm).
	Cluster string
	// User whose jobs squeue lists; default the current user.
	User string
	// Timeout bounds each command; default 60 s (a busy slurmctld can be slow).
	Timeout time.Duration
}

var _ slurm.Client = (*Client)(nil)

// CommandError is a Slurm command that failed.
type CommandError struct {
	Command  string
	ExitCode int
	Stderr   string
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = "(no output)"
	}
	return fmt.Sprintf("%s exited %d: %s", e.Command, e.ExitCode, msg)
}

func (c *Client) run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if c.Cluster != "" {
		args = append([]string{"--clusters=" + c.Cluster}, args...)
	}
	argv := append(append(append([]string{}, c.Prefix...), name), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		code := -1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		stderr := errb.String()
		if ctx.Err() != nil {
			stderr = fmt.Sprintf("no answer within %s. %s", timeout, stderr)
		} else if code == -1 {
			stderr = err.Error()
		}
		return out.String(), &CommandError{Command: name, ExitCode: code, Stderr: stderr}
	}
	return out.String(), nil
}

// Args returns the sbatch options for a job, in a stable order.
func Args(job *slurm.Job) []string {
	args := []string{"--parsable"}
	add := func(flag, v string) {
		if v != "" {
			args = append(args, flag+"="+v)
		}
	}
	add("--job-name", job.Name)
	add("--chdir", job.WorkDir)
	add("--output", job.Output)
	add("--partition", job.Partition)
	add("--account", job.Account)
	add("--qos", job.QOS)
	if m := slurm.Minutes(job.TimeLimit); m > 0 {
		add("--time", strconv.FormatInt(m, 10))
	}
	if job.Nodes > 0 {
		add("--nodes", strconv.Itoa(job.Nodes))
	}
	args = append(args, "--ntasks-per-node=1")
	if job.CPUsPerNode > 0 {
		add("--cpus-per-task", strconv.Itoa(job.CPUsPerNode))
	}
	if job.MemMB > 0 {
		add("--mem", strconv.Itoa(job.MemMB))
	}
	add("--gres", job.Gres)
	add("--constraint", job.Constraint)
	if len(job.Env) > 0 {
		// NIL: only what is listed (plus SLURM_*), so the head's own
		// environment never leaks into the job record.
		keys := make([]string, 0, len(job.Env))
		for k := range job.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		exp := "NIL"
		for _, k := range keys {
			exp += "," + k + "=" + job.Env[k]
		}
		args = append(args, "--export="+exp)
	}
	return append(args, job.ExtraArgs...)
}

// Submit pipes the script to sbatch --parsable.
func (c *Client) Submit(ctx context.Context, job *slurm.Job) (string, error) {
	for _, v := range job.Env {
		if strings.Contains(v, ",") {
			return "", fmt.Errorf("sbatch: environment value %q has a comma, which --export cannot carry", v)
		}
	}
	out, err := c.run(ctx, job.Script, "sbatch", Args(job)...)
	if err != nil {
		return "", fmt.Errorf("submit %s: %w", job.Name, err)
	}
	// "jobid" or "jobid;cluster"
	id, _, _ := strings.Cut(strings.TrimSpace(out), ";")
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", fmt.Errorf("submit %s: sbatch printed %q, not a job id", job.Name, strings.TrimSpace(out))
	}
	return id, nil
}

// squeueFormat is one line per job; | cannot occur in the fields we ask for
// except the reason, which comes last.
const squeueFormat = "%i|%j|%T|%N|%S|%e|%r"

// Jobs lists all of the user's jobs with one squeue call and keeps the
// ones asked for: squeue -j fails as a whole when one id was purged.
func (c *Client) Jobs(ctx context.Context, ids []string) (map[string]slurm.JobStatus, error) {
	out := make(map[string]slurm.JobStatus, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	u := c.User
	if u == "" {
		cur, err := user.Current()
		if err != nil {
			return nil, fmt.Errorf("squeue: %w", err)
		}
		u = cur.Username
	}
	text, err := c.run(ctx, "", "squeue", "--noheader", "--all", "--states=all", "--user="+u, "--format="+squeueFormat)
	if err != nil {
		return nil, fmt.Errorf("job status: %w", err)
	}
	all, err := ParseSqueue(text)
	if err != nil {
		return nil, fmt.Errorf("job status: %w", err)
	}
	return slurm.Pick(all, ids), nil
}

// ParseSqueue reads squeue output in squeueFormat.
func ParseSqueue(text string) ([]slurm.JobStatus, error) {
	var jobs []slurm.JobStatus
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "CLUSTER:") {
			continue
		}
		f := strings.SplitN(line, "|", 7)
		if len(f) != 7 {
			return nil, fmt.Errorf("squeue line %d: %q has %d fields, want 7", i+1, line, len(f))
		}
		j := slurm.JobStatus{ID: f[0], Name: f[1], State: f[2], Nodes: f[3], Reason: f[6]}
		if j.Reason == "None" {
			j.Reason = ""
		}
		if j.Nodes == "" || j.Nodes == "(null)" {
			j.Nodes = ""
		}
		j.Start = parseTime(f[4])
		j.End = parseTime(f[5])
		jobs = append(jobs, j)
	}
	return jobs, nil
}

func parseTime(s string) time.Time {
	t, err := time.ParseInLocation("2006-01-02T15:04:05", s, time.Local)
	if err != nil {
		return time.Time{}
	}
	return t
}

// Cancel runs one scancel for all ids.
func (c *Client) Cancel(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := c.run(ctx, "", "scancel", ids...)
	var ce *CommandError
	if errors.As(err, &ce) && alreadyEnded(ce.Stderr) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cancel %s: %w", strings.Join(ids, ","), err)
	}
	return nil
}

// alreadyEnded is true when every complaint of scancel is about jobs that
// are gone or finishing, which is what cancelling wanted.
func alreadyEnded(stderr string) bool {
	lines := 0
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l = strings.TrimSpace(l); l == "" {
			continue
		}
		lines++
		if !strings.Contains(l, "already completing or completed") && !strings.Contains(l, "Invalid job id") {
			return false
		}
	}
	return lines > 0
}

// Ping runs scontrol ping and reads the cluster name and version.
func (c *Client) Ping(ctx context.Context) (slurm.Info, error) {
	if _, err := c.run(ctx, "", "scontrol", "ping"); err != nil {
		return slurm.Info{}, fmt.Errorf("ping: %w", err)
	}
	text, err := c.run(ctx, "", "scontrol", "show", "config")
	if err != nil {
		return slurm.Info{}, fmt.Errorf("ping: %w", err)
	}
	var info slurm.Info
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "ClusterName":
			info.Cluster = strings.TrimSpace(v)
		case "SLURM_VERSION":
			info.Version = strings.TrimSpace(v)
		}
	}
	return info, nil
}
