package dataflow

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// App is a parsed and validated app definition.
type App struct {
	Name       string              `json:"name"`
	Label      string              `json:"label,omitempty"`
	Version    string              `json:"version,omitempty"`
	Cluster    string              `json:"cluster,omitempty"`
	Parameters AppParameters       `json:"parameters"`
	Modules    []*Module           `json:"modules"`
	Clusters   map[string]*Cluster `json:"clusters,omitempty"`
	// Dir is the directory app.yaml was read from; code paths are resolved against it.
	Dir  string `json:"dir,omitempty"`
	File string `json:"file,omitempty"`
}

// AppParameters are the app-wide parameters.
type AppParameters struct {
	MainRouter       string    `json:"main_router,omitempty"`
	InitialStatus    AppStatus `json:"initial_status"`
	DefaultIdlePolls int       `json:"default_idle_polls,omitempty"`
	SlotGroup        string    `json:"slot_group,omitempty"`
}

// Task distribution modes.
const (
	DistDefault   = "DEFAULT"
	DistHostBound = "HOST-BOUND"
	DistSlotBound = "SLOT-BOUND"
)

// HostImage is the base_image value that runs a module's scripts on the
// node without a container.
const HostImage = "host"

// Built-in modules: base_image builtin:NAME runs no user code; the pilot
// does the work itself (see docs/staging.md).
const (
	BuiltinPrefix   = "builtin:"
	BuiltinDirList  = "dir-list"  // body: a directory under source_url; emits each file in it
	BuiltinFileCopy = "file-copy" // body: a file; copies source_url/body to target_url/body
)

// Env is the value of name in the module's environments ("" if unset).
func (m *Module) Env(name string) string {
	for _, kv := range m.Environments {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// Builtin is the module's built-in name, or "" for user code.
func (m *Module) Builtin() string {
	if name, ok := strings.CutPrefix(m.BaseImage, BuiltinPrefix); ok {
		return name
	}
	return ""
}

// Module is one algorithm of an app.
type Module struct {
	Name      string `json:"name"`
	Label     string `json:"label,omitempty"`
	BaseImage string `json:"base_image"`
	Cluster   string `json:"cluster,omitempty"`
	// CodePath is the absolute host directory mounted as /app/bin.
	CodePath       string      `json:"code_path,omitempty"`
	TaskMaxSeconds int         `json:"task_max_seconds,omitempty"`
	TaskBatchSize  int         `json:"task_batch_size"`
	DistMode       string      `json:"task_dist_mode"`
	StartTasks     []Message   `json:"start_tasks,omitempty"`
	RetryRules     RetryRules  `json:"retry_rules,omitempty"`
	RetryBackoff   Duration    `json:"retry_backoff"`
	SlotMaxTasks   int         `json:"slot_max_tasks,omitempty"`
	SlotOnHead     bool        `json:"slot_on_head,omitempty"`
	Environments   []string    `json:"environments,omitempty"`
	Volumes        []Volume    `json:"volumes,omitempty"`
	StageIn        []StageSpec `json:"stage_in,omitempty"`
	StageOut       []StageSpec `json:"stage_out,omitempty"`
	// StageCache keeps stage_in copies of shared and remote files in the
	// node's cache for later tasks there (parameter stage_cache, default yes).
	StageCache bool `json:"stage_cache"`
	// FreeSpaceGB and DirQuotaGB hold a slot back from taking a task until
	// each directory has that much free space / uses less than that.
	FreeSpaceGB map[string]float64 `json:"free_space_gb,omitempty"`
	DirQuotaGB  map[string]float64 `json:"dir_quota_gb,omitempty"`
	Slots       []SlotSpec         `json:"slots,omitempty"`
	SinkModules []string           `json:"sink_modules,omitempty"`
	Arguments   map[string]string  `json:"arguments,omitempty"`
	Parameters  map[string]string  `json:"parameters,omitempty"`
}

// Duration marshals as a Go duration string.
type Duration time.Duration

func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// DefaultRetryBackoff is the base delay of the first retry.
const DefaultRetryBackoff = Duration(time.Second)

// Volume is a bind mount host:container[:ro].
type Volume struct {
	Host      string `json:"host"`
	Container string `json:"container"`
	ReadOnly  bool   `json:"ro,omitempty"`
}

// ParseVolume parses host:container[:ro|rw].
func ParseVolume(s string) (Volume, error) {
	parts := strings.Split(s, ":")
	switch {
	case len(parts) == 2 || len(parts) == 3:
	default:
		return Volume{}, fmt.Errorf("volume %q: want host:container[:ro]", s)
	}
	v := Volume{Host: parts[0], Container: parts[1]}
	if v.Host == "" || v.Container == "" || !strings.HasPrefix(v.Container, "/") {
		return Volume{}, fmt.Errorf("volume %q: host path and absolute container path required", s)
	}
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			v.ReadOnly = true
		case "rw":
		default:
			return Volume{}, fmt.Errorf("volume %q: option %q is not ro or rw", s, parts[2])
		}
	}
	return v, nil
}

// SlotSpec places slots: Count slots on every node whose host name matches
// Host (a regular expression matched against the whole name), or Count
// slots on each pilot of Pool.
type SlotSpec struct {
	Host  string `json:"host,omitempty"`
	Pool  string `json:"pool,omitempty"`
	Count int    `json:"count"`
}

// ParseSlotSpec parses "<host-regex>[:n]". Whether the name is a pool is
// decided later against the app's pools.
func ParseSlotSpec(s string) (SlotSpec, error) {
	s = strings.TrimSpace(s)
	spec := SlotSpec{Host: s, Count: 1}
	if i := strings.LastIndex(s, ":"); i >= 0 {
		if n, err := strconv.Atoi(s[i+1:]); err == nil {
			if n < 0 {
				return SlotSpec{}, fmt.Errorf("slots %q: negative count", s)
			}
			spec.Host, spec.Count = s[:i], n
		}
	}
	if spec.Host == "" {
		return SlotSpec{}, fmt.Errorf("slots %q: empty host pattern", s)
	}
	if _, err := regexp.Compile("^(?:" + spec.Host + ")$"); err != nil {
		return SlotSpec{}, fmt.Errorf("slots %q: %v", s, err)
	}
	return spec, nil
}

// Matches reports whether host is selected by a host-pattern spec.
func (s SlotSpec) Matches(host string) bool {
	if s.Pool != "" {
		return false
	}
	re, err := regexp.Compile("^(?:" + s.Host + ")$")
	return err == nil && re.MatchString(host)
}

// Cluster says how to reach one Slurm cluster and which pilot pools it has.
type Cluster struct {
	Slurm map[string]string `json:"slurm,omitempty"`
	Pools map[string]*Pool  `json:"pools,omitempty"`
}

// Pool is a group of identical pilot jobs.
type Pool struct {
	Partition   string   `json:"partition,omitempty"`
	Account     string   `json:"account,omitempty"`
	QOS         string   `json:"qos,omitempty"`
	Time        string   `json:"time,omitempty"`
	Nodes       int      `json:"nodes,omitempty"`
	CPUs        int      `json:"cpus,omitempty"`
	Mem         string   `json:"mem,omitempty"`
	Gres        string   `json:"gres,omitempty"`
	Constraint  string   `json:"constraint,omitempty"`
	SbatchArgs  []string `json:"sbatch_args,omitempty"`
	Min         int      `json:"min,omitempty"`
	Max         int      `json:"max,omitempty"`
	IdleTimeout string   `json:"idle_timeout,omitempty"`
}

// ResolvePools turns slots entries that name a pool of any cluster into
// pool entries. Call it again after adding clusters (~/.scalebox/clusters.yaml).
func (a *App) ResolvePools() {
	pools := map[string]bool{}
	for _, c := range a.Clusters {
		for name := range c.Pools {
			pools[name] = true
		}
	}
	for _, m := range a.Modules {
		for i := range m.Slots {
			if pools[m.Slots[i].Host] {
				m.Slots[i].Pool, m.Slots[i].Host = m.Slots[i].Host, ""
			}
		}
	}
}

// Module returns the named module or nil.
func (a *App) Module(name string) *Module {
	for _, m := range a.Modules {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// DefaultSink is where a message from m without an explicit module goes:
// its first sink module, else the main router (unless m is the router).
func (a *App) DefaultSink(m *Module) string {
	if len(m.SinkModules) > 0 {
		return m.SinkModules[0]
	}
	if a.Parameters.MainRouter != "" && a.Parameters.MainRouter != m.Name {
		return a.Parameters.MainRouter
	}
	return ""
}

// EntryModule receives start tasks given on the command line: the main
// router, else the first module.
func (a *App) EntryModule() string {
	if a.Parameters.MainRouter != "" {
		return a.Parameters.MainRouter
	}
	if len(a.Modules) > 0 {
		return a.Modules[0].Name
	}
	return ""
}

// Validate checks the invariants a definition received over the API must
// hold (the file parser has checked them with positions already).
func (a *App) Validate() error {
	if a.Name == "" {
		return fmt.Errorf("app name is empty")
	}
	if len(a.Modules) == 0 {
		return fmt.Errorf("app %q has no modules", a.Name)
	}
	seen := map[string]bool{}
	for _, m := range a.Modules {
		if !validModuleName(m.Name) {
			return fmt.Errorf("module name %q is invalid", m.Name)
		}
		if seen[m.Name] {
			return fmt.Errorf("module %q defined twice", m.Name)
		}
		seen[m.Name] = true
		if m.TaskBatchSize < 1 {
			return fmt.Errorf("module %q: task_batch_size must be >= 1", m.Name)
		}
		switch m.DistMode {
		case DistDefault, DistHostBound, DistSlotBound:
		default:
			return fmt.Errorf("module %q: task_dist_mode %q invalid", m.Name, m.DistMode)
		}
	}
	for _, m := range a.Modules {
		for _, s := range m.SinkModules {
			if !seen[s] {
				return fmt.Errorf("module %q: sink module %q does not exist", m.Name, s)
			}
		}
	}
	if r := a.Parameters.MainRouter; r != "" && !seen[r] {
		return fmt.Errorf("main_router %q does not exist", r)
	}
	switch a.Parameters.InitialStatus {
	case AppRunning, AppInitial, AppPaused:
	default:
		return fmt.Errorf("initial_status %q invalid", a.Parameters.InitialStatus)
	}
	return nil
}

var moduleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func validModuleName(s string) bool { return moduleNameRE.MatchString(s) }
