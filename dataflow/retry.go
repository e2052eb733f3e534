package dataflow

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// RetryRule allows Count more attempts after a failure with Code.
// Any is true for the '*' rule, which matches every code not named.
type RetryRule struct {
	Code  int  `json:"code"`
	Any   bool `json:"any,omitempty"`
	Count int  `json:"count"`
}

// RetryRules are a module's retry rules in the order written.
type RetryRules []RetryRule

// ParseRetryRules accepts Scalebox's string form "['1:3','2:2','*']" as
// well as the already-split list. A count defaults to 1.
func ParseRetryRules(items []string) (RetryRules, error) {
	var rules RetryRules
	for _, it := range items {
		it = strings.Trim(strings.TrimSpace(it), `'"`)
		if it == "" {
			continue
		}
		code, count, hasCount := strings.Cut(it, ":")
		r := RetryRule{Count: 1}
		if hasCount {
			n, err := strconv.Atoi(strings.TrimSpace(count))
			if err != nil || n < 0 {
				return nil, fmt.Errorf("retry rule %q: count %q is not a non-negative integer", it, count)
			}
			r.Count = n
		}
		code = strings.TrimSpace(code)
		if code == "*" {
			r.Any = true
		} else {
			c, err := strconv.Atoi(code)
			if err != nil || c <= 0 || c > 255 {
				return nil, fmt.Errorf("retry rule %q: code %q is not '*' or an exit code 1-255", it, code)
			}
			r.Code = c
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// SplitRuleList turns "['1:3','*']" or "1:3,*" into its items.
func SplitRuleList(s string) []string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "[")
	s = strings.TrimSuffix(s, "]")
	if strings.TrimSpace(s) == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// DefaultRetryableCount is how often exit 100 ("retryable") is retried
// when no rule names it.
const DefaultRetryableCount = 3

// Allowed returns how many retries a failure with code permits in total.
// Exit 101 is never retried; 100 (retryable) and 123 (lost with its pilot)
// are retried DefaultRetryableCount times unless a rule names them, so
// that a lost node does not fail work whose module set no rules.
func (rs RetryRules) Allowed(code int) int {
	if code == ExitNotRetryable || code == 0 {
		return 0
	}
	for _, r := range rs {
		if !r.Any && r.Code == code {
			return r.Count
		}
	}
	if code == ExitRetryable || code == ExitLost {
		return DefaultRetryableCount
	}
	for _, r := range rs {
		if r.Any {
			return r.Count
		}
	}
	return 0
}

// Key names the counter a failure with code is charged to: the code itself
// for a named rule, "*" for the catch-all.
func (rs RetryRules) Key(code int) string {
	for _, r := range rs {
		if !r.Any && r.Code == code {
			return strconv.Itoa(code)
		}
	}
	if code == ExitRetryable || code == ExitLost {
		return strconv.Itoa(code)
	}
	return "*"
}

// Backoff is the delay before retry number attempt (1-based): base·2^(n-1)
// capped at max, with ±10% jitter from rnd so that retries of many tasks
// failing together spread out. It is a pure function: pass a seeded rnd in
// tests.
func Backoff(attempt int, base, max time.Duration, rnd *rand.Rand) time.Duration {
	if base <= 0 || attempt <= 0 {
		return 0
	}
	d := float64(base) * math.Pow(2, float64(attempt-1))
	if d > float64(max) {
		d = float64(max)
	}
	if rnd != nil {
		d *= 0.9 + 0.2*rnd.Float64()
	}
	return time.Duration(d)
}
