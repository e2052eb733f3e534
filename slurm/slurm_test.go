package slurm

import (
	"testing"
	"time"
)

func TestMinutes(t *testing.T) {
	if Minutes(90*time.Second) != 2 || Minutes(0) != 0 || Minutes(time.Minute) != 1 {
		t.Error("Minutes does not round up")
	}
}

func TestPhase(t *testing.T) {
	for state, want := range map[string]string{"PENDING": "pending", "RUNNING": "running", "COMPLETING": "running",
		"COMPLETED": "done", "CANCELLED": "failed", "TIMEOUT": "failed", "NODE_FAIL": "failed", "": "unknown"} {
		if got := (JobStatus{State: state}).Phase(); string(got) != want {
			t.Errorf("%s: %s, want %s", state, got, want)
		}
	}
}
