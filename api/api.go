// Package api holds the HTTP/JSON wire types of the scalebox server and a
// Go client for them. The server serves these types; pilots and the CLI use
// the client, so head and node code never import each other.
package api

import (
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Version is the API path prefix.
const Version = "v1"

// MaxBodyBytes bounds any request body the server reads.
const MaxBodyBytes = 64 << 20

// Error is the body of every non-2xx answer.
type Error struct {
	Error string `json:"error"`
}

// CreateApp creates an app with extra start tasks (for the entry module
// when Module is empty).
type CreateApp struct {
	App   *dataflow.App      `json:"app"`
	Tasks []dataflow.Message `json:"tasks,omitempty"`
}

// Created answers CreateApp.
type Created struct {
	AppID int64 `json:"app_id"`
}

// SetStatus changes an app's status (start, pause, cancel, set-finished).
type SetStatus struct {
	Status dataflow.AppStatus `json:"status"`
	Result string             `json:"result,omitempty"`
}

// AddTasks adds messages to an app.
type AddTasks struct {
	Messages []dataflow.Message `json:"messages"`
}

// Added answers AddTasks.
type Added struct {
	Added int `json:"added"`
}

// StateResult answers a semaphore or variable change.
type StateResult struct {
	Value string `json:"value"`
}

// Register is a pilot's first call.
type Register struct {
	AppID    int64  `json:"app_id"`
	Host     string `json:"host"`
	CPUs     int    `json:"cpus"`
	MemBytes int64  `json:"mem_bytes"`
	// Head marks a pilot on the head node; it hosts slot_on_head modules
	// (the main router).
	Head  bool   `json:"head,omitempty"`
	JobID string `json:"job_id,omitempty"`
	// HeadOnly limits a head pilot to slot_on_head modules.
	HeadOnly bool `json:"head_only,omitempty"`
	// Cluster and Pool of a Slurm pilot job.
	Cluster string `json:"cluster,omitempty"`
	Pool    string `json:"pool,omitempty"`
}

// PlannedModule is one module a pilot runs, with how many slots.
type PlannedModule struct {
	Module     *dataflow.Module `json:"module"`
	Slots      int              `json:"slots"`
	SinkModule string           `json:"sink_module,omitempty"`
}

// Registered answers Register with the pilot's slot plan.
type Registered struct {
	PilotID   int64           `json:"pilot_id"`
	AppID     int64           `json:"app_id"`
	AppName   string          `json:"app_name"`
	Cluster   string          `json:"cluster,omitempty"`
	Plan      []PlannedModule `json:"plan"`
	LeaseTTL  time.Duration   `json:"lease_ttl"`
	Heartbeat time.Duration   `json:"heartbeat"`
}

// Lease asks for work, waiting up to Wait for some to become ready.
type Lease struct {
	Wants []dataflow.Want `json:"wants"`
	Wait  time.Duration   `json:"wait"`
}

// Leased answers Lease. AppStatus tells a pilot when to stop.
type Leased struct {
	Tasks     []dataflow.LeasedTask `json:"tasks"`
	AppStatus dataflow.AppStatus    `json:"app_status"`
	// Drain tells an idle pilot to leave: its pool has more jobs than it needs.
	Drain bool `json:"drain,omitempty"`
}

// Report carries started tasks and finished attempts.
type Report struct {
	Started     []dataflow.Started    `json:"started,omitempty"`
	Completions []dataflow.Completion `json:"completions,omitempty"`
}

// Reported answers Report, one result per completion.
type Reported struct {
	Results   []dataflow.CompletionResult `json:"results"`
	AppStatus dataflow.AppStatus          `json:"app_status"`
}

// Heartbeat keeps alive the leases a pilot holds: only the tasks listed,
// so a lease whose answer never reached the pilot (the head died after
// committing it) expires and is rescued instead of living forever.
type Heartbeat struct {
	Held []int64 `json:"held,omitempty"`
	// Slots are the pilot's slots in trouble now (all of them; a slot
	// not listed is fine).
	Slots []dataflow.SlotState `json:"slots,omitempty"`
}

// Beat answers Heartbeat.
type Beat struct {
	AppStatus dataflow.AppStatus `json:"app_status"`
}

// Leave ends a pilot; Release lists leased tasks it never started.
type Leave struct {
	Release []dataflow.LeasedTask `json:"release,omitempty"`
}

// VersionInfo answers GET /v1/version.
type VersionInfo struct {
	Version string `json:"version"`
	API     string `json:"api"`
}
