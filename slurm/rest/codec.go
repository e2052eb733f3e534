package rest

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/slurm"
)

// codec is what differs between API versions: paths and JSON shapes. The
// shapes follow the served OpenAPI specs (../shared/notes/slurmrestd),
// loosened where the servers are known to disagree with their own specs
// (22.05 declares version numbers as strings and sends integers).
type codec interface {
	pingPath(v string) string
	jobsPath(v string) string
	submitBody(job *slurm.Job) any
	submitID(data []byte) (string, error)
	jobs(data []byte) ([]slurm.JobStatus, error)
	ping(data []byte) (slurm.Info, error)
}

func codecFor(v string) (codec, bool) {
	switch v {
	case "v0.0.38":
		return v38{}, true
	case "v0.0.40", "v0.0.41", "v0.0.42":
		return v40{}, true
	}
	return nil, false
}

// flexString accepts a JSON string or number.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*f = flexString(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return err
	}
	*f = flexString(n.String())
	return nil
}

type version struct {
	Major flexString `json:"major"`
	Minor flexString `json:"minor"`
	Micro flexString `json:"micro"`
}

type slurmMeta struct {
	Version version `json:"version"`
	Release string  `json:"release"`
	Cluster string  `json:"cluster"`
}

func (m slurmMeta) info() slurm.Info {
	info := slurm.Info{Version: m.Release, Cluster: m.Cluster}
	if info.Version == "" && m.Version.Major != "" {
		info.Version = fmt.Sprintf("%s.%s.%s", m.Version.Major, m.Version.Minor, m.Version.Micro)
	}
	return info
}

func envList(env map[string]string) []string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// baseEnv is what a job gets when the caller gives none: slurmrestd
// requires an environment and starts from nothing.
func baseEnv(env map[string]string) map[string]string {
	if len(env) > 0 {
		return env
	}
	return map[string]string{"PATH": "/usr/local/bin:/usr/bin:/bin"}
}

func parseID(n json.Number) (string, error) {
	if _, err := strconv.ParseUint(n.String(), 10, 64); err != nil || n == "" {
		return "", fmt.Errorf("slurmrestd answered job id %q", n)
	}
	return n.String(), nil
}

func unixTime(n int64) time.Time {
	if n <= 0 {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

// ---- v0.0.38 (Slurm 22.05) ----

type v38 struct{}

func (v38) pingPath(v string) string { return "/slurm/" + v + "/ping" }
func (v38) jobsPath(v string) string { return "/slurm/" + v + "/jobs" }

type v38Job struct {
	Name        string            `json:"name,omitempty"`
	Partition   string            `json:"partition,omitempty"`
	Account     string            `json:"account,omitempty"`
	QOS         string            `json:"qos,omitempty"`
	TimeLimit   int64             `json:"time_limit,omitempty"`
	Nodes       []int             `json:"nodes,omitempty"`
	TasksPer    int               `json:"tasks_per_node,omitempty"`
	CPUsPerTask int               `json:"cpus_per_task,omitempty"`
	MemPerNode  int               `json:"memory_per_node,omitempty"`
	Gres        string            `json:"gres,omitempty"`
	Constraints string            `json:"constraints,omitempty"`
	Cwd         string            `json:"current_working_directory,omitempty"`
	Stdout      string            `json:"standard_output,omitempty"`
	Stderr      string            `json:"standard_error,omitempty"`
	Env         map[string]string `json:"environment"`
}

func (v38) submitBody(job *slurm.Job) any {
	j := v38Job{Name: job.Name, Partition: job.Partition, Account: job.Account, QOS: job.QOS,
		TimeLimit: slurm.Minutes(job.TimeLimit), TasksPer: 1, CPUsPerTask: job.CPUsPerNode,
		MemPerNode: job.MemMB, Gres: job.Gres, Constraints: job.Constraint, Cwd: job.WorkDir,
		Stdout: job.Output, Stderr: job.Output, Env: baseEnv(job.Env)}
	if job.Nodes > 0 {
		j.Nodes = []int{job.Nodes, job.Nodes}
	}
	return map[string]any{"script": job.Script, "job": j}
}

func (v38) submitID(data []byte) (string, error) {
	var r struct {
		JobID json.Number `json:"job_id"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return "", fmt.Errorf("decode submit answer: %w", err)
	}
	return parseID(r.JobID)
}

func (v38) jobs(data []byte) ([]slurm.JobStatus, error) {
	var r struct {
		Jobs []struct {
			JobID     json.Number `json:"job_id"`
			Name      string      `json:"name"`
			State     string      `json:"job_state"`
			Reason    string      `json:"state_reason"`
			Nodes     string      `json:"nodes"`
			StartTime int64       `json:"start_time"`
			EndTime   int64       `json:"end_time"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode jobs: %w", err)
	}
	out := make([]slurm.JobStatus, 0, len(r.Jobs))
	for _, j := range r.Jobs {
		out = append(out, slurm.JobStatus{ID: j.JobID.String(), Name: j.Name, State: j.State,
			Reason: noneToEmpty(j.Reason), Nodes: j.Nodes, Start: unixTime(j.StartTime), End: unixTime(j.EndTime)})
	}
	return out, nil
}

func (v38) ping(data []byte) (slurm.Info, error) {
	var r struct {
		Meta struct {
			Slurm slurmMeta `json:"Slurm"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return slurm.Info{}, fmt.Errorf("decode ping: %w", err)
	}
	return r.Meta.Slurm.info(), nil
}

// ---- v0.0.40 to v0.0.42 (Slurm 23.11 to 24.11) ----

type v40 struct{}

func (v40) pingPath(v string) string { return "/slurm/" + v + "/ping/" }
func (v40) jobsPath(v string) string { return "/slurm/" + v + "/jobs/" }

// noVal is Slurm's "number with flags" (uint32_no_val, uint64_no_val).
type noVal struct {
	Set      bool  `json:"set"`
	Infinite bool  `json:"infinite"`
	Number   int64 `json:"number"`
}

func setNum(n int64) *noVal {
	if n <= 0 {
		return nil
	}
	return &noVal{Set: true, Number: n}
}

type v40Job struct {
	Name        string   `json:"name,omitempty"`
	Partition   string   `json:"partition,omitempty"`
	Account     string   `json:"account,omitempty"`
	QOS         string   `json:"qos,omitempty"`
	TimeLimit   *noVal   `json:"time_limit,omitempty"`
	Nodes       string   `json:"nodes,omitempty"`
	TasksPer    int      `json:"tasks_per_node,omitempty"`
	CPUsPerTask int      `json:"cpus_per_task,omitempty"`
	MemPerNode  *noVal   `json:"memory_per_node,omitempty"`
	TresPerNode string   `json:"tres_per_node,omitempty"`
	Constraints string   `json:"constraints,omitempty"`
	Cwd         string   `json:"current_working_directory,omitempty"`
	Stdout      string   `json:"standard_output,omitempty"`
	Stderr      string   `json:"standard_error,omitempty"`
	Env         []string `json:"environment"`
}

// tresPerNode turns sbatch's --gres form ("gpu:2", "gpu:a100:1") into a
// TRES list ("gres/gpu:2").
func tresPerNode(gres string) string {
	if gres == "" {
		return ""
	}
	parts := strings.Split(gres, ",")
	for i, p := range parts {
		if p = strings.TrimSpace(p); !strings.HasPrefix(p, "gres/") {
			parts[i] = "gres/" + p
		}
	}
	return strings.Join(parts, ",")
}

func (v40) submitBody(job *slurm.Job) any {
	j := v40Job{Name: job.Name, Partition: job.Partition, Account: job.Account, QOS: job.QOS,
		TimeLimit: setNum(slurm.Minutes(job.TimeLimit)), TasksPer: 1, CPUsPerTask: job.CPUsPerNode,
		MemPerNode: setNum(int64(job.MemMB)), TresPerNode: tresPerNode(job.Gres), Constraints: job.Constraint,
		Cwd: job.WorkDir, Stdout: job.Output, Stderr: job.Output, Env: envList(baseEnv(job.Env))}
	if job.Nodes > 0 {
		j.Nodes = strconv.Itoa(job.Nodes)
	}
	return map[string]any{"script": job.Script, "job": j}
}

func (v40) submitID(data []byte) (string, error) { return v38{}.submitID(data) }

func (v40) jobs(data []byte) ([]slurm.JobStatus, error) {
	var r struct {
		Jobs []struct {
			JobID     json.Number `json:"job_id"`
			Name      string      `json:"name"`
			State     []string    `json:"job_state"`
			Reason    string      `json:"state_reason"`
			Nodes     string      `json:"nodes"`
			StartTime noVal       `json:"start_time"`
			EndTime   noVal       `json:"end_time"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode jobs: %w", err)
	}
	out := make([]slurm.JobStatus, 0, len(r.Jobs))
	for _, j := range r.Jobs {
		st := slurm.JobStatus{ID: j.JobID.String(), Name: j.Name, Reason: noneToEmpty(j.Reason), Nodes: j.Nodes}
		// The first element is the base state; the rest are flags
		// (COMPLETING, CONFIGURING, ...).
		if len(j.State) > 0 {
			st.State = j.State[0]
		}
		if j.StartTime.Set {
			st.Start = unixTime(j.StartTime.Number)
		}
		if j.EndTime.Set {
			st.End = unixTime(j.EndTime.Number)
		}
		out = append(out, st)
	}
	return out, nil
}

func (v40) ping(data []byte) (slurm.Info, error) {
	var r struct {
		Meta struct {
			Slurm slurmMeta `json:"slurm"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return slurm.Info{}, fmt.Errorf("decode ping: %w", err)
	}
	return r.Meta.Slurm.info(), nil
}

func noneToEmpty(s string) string {
	if s == "None" {
		return ""
	}
	return s
}
