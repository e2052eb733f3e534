package slurm

import (
	"testing"
	"time"
)

func TestParseTimeLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", 0, false},
		{"2", 2 * time.Minute, false},
		{"2:30", 2*time.Minute + 30*time.Second, false},
		{"1:00:00", time.Hour, false},
		{"1-12", 36 * time.Hour, false},
		{"1-00:30", 24*time.Hour + 30*time.Minute, false},
		{"2-01:02:03", 49*time.Hour + 2*time.Minute + 3*time.Second, false},
		{"1:2:3:4", 0, true},
		{"abc", 0, true},
		{"-5", 0, true},
		{"1-2-3", 0, true},
	} {
		got, err := ParseTimeLimit(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseTimeLimit(%q) = %v, %v", tc.in, got, err)
		}
	}
	if Minutes(90*time.Second) != 2 || Minutes(0) != 0 || Minutes(time.Minute) != 1 {
		t.Error("Minutes does not round up")
	}
}

func TestParseMemMB(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		bad  bool
	}{
		{"", 0, false}, {"4000", 4000, false}, {"4000M", 4000, false}, {"16G", 16384, false},
		{"1.5g", 1536, false}, {"1T", 1 << 20, false}, {"512K", 1, false}, {"lots", 0, true}, {"-1G", 0, true},
	} {
		got, err := ParseMemMB(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseMemMB(%q) = %v, %v", tc.in, got, err)
		}
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
