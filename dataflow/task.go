package dataflow

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Headers are a task's flat string map. Encoded as JSON with sorted keys.
type Headers map[string]string

// JSON returns the compact encoding, "{}" for nil.
func (h Headers) JSON() string {
	if len(h) == 0 {
		return "{}"
	}
	b, _ := json.Marshal(map[string]string(h)) // cannot fail for map[string]string
	return string(b)
}

// ParseHeaders decodes a flat JSON object. Numbers and booleans are kept as
// their literal text because Scalebox scripts write them unquoted; nested
// values are refused so that a header is always a plain string.
func ParseHeaders(s string) (Headers, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Headers{}, nil
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("headers are not a JSON object: %w", err)
	}
	h := make(Headers, len(raw))
	for k, v := range raw {
		var str string
		if err := json.Unmarshal(v, &str); err == nil {
			h[k] = str
			continue
		}
		t := strings.TrimSpace(string(v))
		if t == "null" {
			h[k] = ""
			continue
		}
		if len(t) > 0 && (t[0] == '{' || t[0] == '[') {
			return nil, fmt.Errorf("header %q: value must be a string, got %s", k, t)
		}
		h[k] = t
	}
	return h, nil
}

// Well-known header names (Scalebox conventions).
const (
	HeaderFromModule     = "from_module"
	HeaderFromModuleLast = "from_module_last"
	HeaderFromHost       = "from_host"
	HeaderToHost         = "to_host"
	HeaderStageIn        = "stage_in"  // more stage_in entries for this task, ;-separated
	HeaderStageOut       = "stage_out" // more stage_out entries
	HeaderToSlot         = "to_slot"
	HeaderSortTag        = "sort_tag"
	HeaderConflictAction = "conflict_action"
	HeaderRepeatable     = "repeatable"
	HeaderSlotLastTask   = "slot_last_task"
)

// Message is one task as sent: the module it goes to, its body and headers.
type Message struct {
	Module  string  `json:"module,omitempty"`
	Body    string  `json:"body"`
	Headers Headers `json:"headers,omitempty"`
}

// TaskState is the state of a task in the broker.
//
//	initial ──▶ ready ──▶ leased ──▶ running ──▶ succeeded
//	              ▲         │  │        │
//	              │         │  └────────┼──────▶ failed
//	              └──── retrying ◀──────┘
//	any non-final state ──▶ cancelled
//
// docs/task-states.md draws it in full; the broker's migration enforces it
// with CHECK constraints and a transition trigger.
type TaskState string

const (
	// TaskInitial is held: not dispatched until the app or module is started.
	TaskInitial TaskState = "initial"
	// TaskReady can be leased by a slot.
	TaskReady TaskState = "ready"
	// TaskLeased has been handed to a pilot, which has not yet started it.
	TaskLeased TaskState = "leased"
	// TaskRunning has a run.sh process on a pilot.
	TaskRunning TaskState = "running"
	// TaskSucceeded finished with exit 0; its messages were emitted.
	TaskSucceeded TaskState = "succeeded"
	// TaskFailed finished non-zero and its retry rules are used up.
	TaskFailed TaskState = "failed"
	// TaskRetrying failed and waits for its backoff before becoming ready.
	TaskRetrying TaskState = "retrying"
	// TaskCancelled was withdrawn by the user or by the app's end.
	TaskCancelled TaskState = "cancelled"
)

// AllTaskStates lists every state in display order.
var AllTaskStates = []TaskState{TaskInitial, TaskReady, TaskLeased, TaskRunning, TaskRetrying, TaskSucceeded, TaskFailed, TaskCancelled}

// Final reports whether no further transition is expected.
func (s TaskState) Final() bool {
	return s == TaskSucceeded || s == TaskFailed || s == TaskCancelled
}

// AppStatus is the life-cycle state of an app.
type AppStatus string

const (
	AppInitial   AppStatus = "INITIAL"
	AppRunning   AppStatus = "RUNNING"
	AppPaused    AppStatus = "PAUSED"
	AppFinished  AppStatus = "FINISHED"
	AppFailed    AppStatus = "FAILED"
	AppCancelled AppStatus = "CANCELLED"
)

// Done reports whether the app has ended.
func (s AppStatus) Done() bool {
	return s == AppFinished || s == AppFailed || s == AppCancelled
}

// Exit codes with a meaning to the system (Scalebox conventions).
const (
	ExitOK           = 0
	ExitRetryable    = 100
	ExitNotRetryable = 101
	ExitLost         = 123
	ExitTimeout      = 124
	ExitRuntime      = 125
	ExitNotRunnable  = 126
	ExitNotFound     = 127
)
