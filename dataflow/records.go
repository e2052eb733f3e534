package dataflow

import "time"

// Records exchanged between broker, server and pilot. They are plain data
// with JSON tags so the api package can send them as they are.

// LeasedTask is a task handed to a pilot slot under a lease.
type LeasedTask struct {
	ID      int64   `json:"id"`
	Module  string  `json:"module"`
	Body    string  `json:"body"`
	Headers Headers `json:"headers"`
	// Gen is the fencing generation: a report must carry it to be accepted.
	Gen     int64 `json:"gen"`
	Attempt int   `json:"attempt"` // 1 for the first run
}

// Timestamp is one line of timestamps.txt.
type Timestamp struct {
	Label string    `json:"label"`
	Time  time.Time `json:"time"`
}

// StateOp is a semaphore or variable change. Inside a slot without
// --on-success it is applied at once; with it, it rides in the task's
// Completion and is applied in the completion transaction.
type StateOp struct {
	Kind      string `json:"kind"` // "semaphore" or "variable"
	Op        string `json:"op"`   // create, increment, decrement, add-value, set, delete
	Name      string `json:"name"`
	Value     string `json:"value,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// Completion is the outcome of one attempt of a leased task.
type Completion struct {
	TaskID      int64       `json:"task_id"`
	Gen         int64       `json:"gen"`
	Slot        string      `json:"slot"`
	Host        string      `json:"host"`
	ExitCode    int         `json:"exit_code"`
	StartedAt   time.Time   `json:"started_at"`
	EndedAt     time.Time   `json:"ended_at"`
	StdoutTail  string      `json:"stdout_tail,omitempty"`
	StderrTail  string      `json:"stderr_tail,omitempty"`
	Auxout      string      `json:"auxout,omitempty"`
	Note        string      `json:"note,omitempty"` // the system's reason, e.g. a bad sink-tasks line
	Timestamps  []Timestamp `json:"timestamps,omitempty"`
	InputBytes  int64       `json:"input_bytes,omitempty"`
	OutputBytes int64       `json:"output_bytes,omitempty"`
	Messages    []Message   `json:"messages,omitempty"`
	Deferred    []StateOp   `json:"deferred,omitempty"`
	// InputLost says a stage-in from this node's tier found its file
	// missing: the head may make it again (broker.lostInput).
	InputLost bool `json:"input_lost,omitempty"`
	// Image is the container image the attempt ran in ("" on the host).
	Image string `json:"image,omitempty"`
	Stage
	// DataOnNode: the attempt staged output to a tier of its node (local:,
	// mem:), which only that node can read; the next modules that stage
	// in from such a tier run there.
	DataOnNode bool `json:"data_on_node,omitempty"`
	// Cached and Uncached are data keys (Module.DataKey) of inputs the
	// attempt left in, or evicted from, its node's cache: the head's
	// record of what is where, for dispatch to prefer that node.
	Cached   []string `json:"cached,omitempty"`
	Uncached []string `json:"uncached,omitempty"`
}

// Stage is what an attempt moved through its module's stage_in and
// stage_out (Scalebox's task perspective: data time apart from compute).
type Stage struct {
	StageInBytes  int64 `json:"stage_in_bytes,omitempty"`
	StageInMS     int64 `json:"stage_in_ms,omitempty"`
	StageOutBytes int64 `json:"stage_out_bytes,omitempty"`
	StageOutMS    int64 `json:"stage_out_ms,omitempty"`
}

// SlotState is a slot a pilot reports in trouble: its container or
// setup.sh failed to start, or its agent died, Failures times in a row.
type SlotState struct {
	Slot     string `json:"slot"`
	Module   string `json:"module"`
	State    string `json:"state"` // SlotRestarting or SlotError
	Reason   string `json:"reason"`
	Failures int    `json:"failures"`
}

// Slot states in reports and in app status.
const (
	SlotRestarting = "RESTARTING"
	SlotError      = "ERROR"
)

// Outcome of a reported completion.
const (
	ReportAccepted = "accepted"
	// ReportStale: the lease was lost (expired and rescued, or already
	// reported); the report changed nothing.
	ReportStale = "stale"
)

// CompletionResult answers one Completion.
type CompletionResult struct {
	TaskID int64     `json:"task_id"`
	Status string    `json:"status"`
	State  TaskState `json:"state,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// Exec is the stored record of one attempt.
type Exec struct {
	ID          int64       `json:"id"`
	TaskID      int64       `json:"task_id"`
	Attempt     int         `json:"attempt"`
	Gen         int64       `json:"gen"`
	PilotID     int64       `json:"pilot_id,omitempty"`
	Slot        string      `json:"slot,omitempty"`
	Host        string      `json:"host,omitempty"`
	ExitCode    int         `json:"exit_code"`
	StartedAt   *time.Time  `json:"started_at,omitempty"`
	EndedAt     time.Time   `json:"ended_at"`
	StdoutTail  string      `json:"stdout_tail,omitempty"`
	StderrTail  string      `json:"stderr_tail,omitempty"`
	Auxout      string      `json:"auxout,omitempty"`
	Note        string      `json:"note,omitempty"`
	Timestamps  []Timestamp `json:"timestamps,omitempty"`
	InputBytes  int64       `json:"input_bytes"`
	OutputBytes int64       `json:"output_bytes"`
	Emitted     int         `json:"emitted"`
	Image       string      `json:"image,omitempty"`
	Stage
}

// TaskInfo is a task as listed.
type TaskInfo struct {
	ID        int64     `json:"id"`
	AppID     int64     `json:"app_id"`
	Module    string    `json:"module"`
	Body      string    `json:"body"`
	Headers   Headers   `json:"headers"`
	State     TaskState `json:"state"`
	Attempts  int       `json:"attempts"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// ParentID is the task whose success emitted this one (0: a start
	// task or `task add`).
	ParentID int64 `json:"parent_id,omitempty"`
	// LostHost is set while the task is held because its input was on
	// that lost node and is being made again.
	LostHost string `json:"lost_host,omitempty"`
	Execs    []Exec `json:"execs,omitempty"`
}

// ModuleCounts are a module's task counts by state.
type ModuleCounts map[TaskState]int

// AppInfo is an app's status.
type AppInfo struct {
	ID         int64                   `json:"app_id"`
	Name       string                  `json:"name"`
	Status     AppStatus               `json:"status"`
	Result     string                  `json:"result,omitempty"`
	Tasks      map[TaskState]int       `json:"tasks"`
	Modules    map[string]ModuleCounts `json:"modules"`
	Semaphores map[string]int64        `json:"semaphores"`
	Variables  map[string]string       `json:"variables"`
	Pilots     int                     `json:"pilots"`
	CreatedAt  time.Time               `json:"created_at"`
	StartedAt  *time.Time              `json:"started_at,omitempty"`
	FinishedAt *time.Time              `json:"finished_at,omitempty"`
	// Why says, when nothing is running, what the app waits for.
	Why []string `json:"why,omitempty"`
	// PilotPools is the state of the app's Slurm pools.
	PilotPools []PoolInfo `json:"pools,omitempty"`
	// Slots are the slots whose container or setup.sh does not start.
	Slots []SlotState `json:"slots,omitempty"`
}

// PoolInfo is what the pool manager knows of one pool.
type PoolInfo struct {
	Cluster     string     `json:"cluster"`
	Pool        string     `json:"pool"`
	ActiveJobs  int        `json:"active_jobs"`
	Submissions int        `json:"submissions"`
	Attempts    int        `json:"attempts"`
	Failures    int        `json:"failures"` // consecutive
	Paused      bool       `json:"paused"`
	LastError   string     `json:"last_error,omitempty"`
	RetryAt     *time.Time `json:"retry_at,omitempty"`
}

// PilotInfo describes a registered pilot.
type PilotInfo struct {
	ID       int64     `json:"id"`
	AppID    int64     `json:"app_id"`
	Host     string    `json:"host"`
	CPUs     int       `json:"cpus"`
	MemBytes int64     `json:"mem_bytes"`
	Head     bool      `json:"head"`
	JobID    string    `json:"job_id,omitempty"`
	State    string    `json:"state"`
	LastSeen time.Time `json:"last_seen"`
}

// Want asks for up to Max ready tasks of Module.
type Want struct {
	Module string `json:"module"`
	Max    int    `json:"max"`
}

// Started is a pilot's note that it began running a leased task in a slot.
type Started struct {
	TaskID int64  `json:"task_id"`
	Gen    int64  `json:"gen"`
	Slot   string `json:"slot"`
}

// PilotRequest asks a batch system for pilots of one app.
type PilotRequest struct {
	AppID     int64  `json:"app_id"`
	Server    string `json:"server"`     // address pilots connect to
	TokenFile string `json:"token_file"` // 0600 file with the bearer token, if TCP
	Head      bool   `json:"head,omitempty"`
	// HeadOnly: the head pilot runs only slot_on_head modules (the rest
	// run on Slurm pilots).
	HeadOnly bool `json:"head_only,omitempty"`
	// Name labels the job (Slurm job name, local log file).
	Name string `json:"name"`
	// CertSHA256 pins the head's TLS certificate for an https Server.
	CertSHA256 string `json:"cert_sha256,omitempty"`
	// For Slurm pilots: the app, and the pool the job belongs to.
	AppName string `json:"app_name,omitempty"`
	Cluster string `json:"cluster,omitempty"`
	Pool    string `json:"pool,omitempty"`
	Spec    *Pool  `json:"spec,omitempty"`
}

// JobState is what a batch system says of a pilot job.
type JobState string

const (
	JobPending JobState = "pending"
	JobRunning JobState = "running"
	JobDone    JobState = "done"
	JobFailed  JobState = "failed"
	JobUnknown JobState = "unknown"
)
