package dataflow

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestRetryRules(t *testing.T) {
	rules, err := ParseRetryRules(SplitRuleList("['1:3','2:2','*']"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		code, allowed int
		key           string
	}{
		{1, 3, "1"}, {2, 2, "2"}, {7, 1, "*"}, {101, 0, "*"}, {100, 3, "100"}, {123, 3, "123"},
	}
	for _, tt := range tests {
		if got := rules.Allowed(tt.code); got != tt.allowed {
			t.Errorf("Allowed(%d) = %d, want %d", tt.code, got, tt.allowed)
		}
		if got := rules.Key(tt.code); got != tt.key {
			t.Errorf("Key(%d) = %q, want %q", tt.code, got, tt.key)
		}
	}
	none, _ := ParseRetryRules(nil)
	if none.Allowed(5) != 0 {
		t.Error("no rules should mean no retries for an ordinary code")
	}
	for _, bad := range []string{"x:1", "3:-1", "0:1", "300:1"} {
		if _, err := ParseRetryRules([]string{bad}); err == nil {
			t.Errorf("rule %q accepted", bad)
		}
	}
}

func TestBackoffIsBoundedAndJittered(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	prev := time.Duration(0)
	for n := 1; n <= 6; n++ {
		d := Backoff(n, time.Second, 20*time.Second, rnd)
		nominal := time.Second << (n - 1)
		if nominal > 20*time.Second {
			nominal = 20 * time.Second
		}
		if d < nominal*9/10 || d > nominal*11/10 {
			t.Fatalf("attempt %d: %s outside ±10%% of %s", n, d, nominal)
		}
		if n <= 4 && d <= prev {
			t.Fatalf("attempt %d: %s not above %s", n, d, prev)
		}
		prev = d
	}
	if Backoff(3, 0, time.Minute, rnd) != 0 {
		t.Fatal("zero base must mean no delay")
	}
}
