package dataflow

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Pool settings use Slurm's own formats; the parsers live here so an app
// file is checked (file:line) before anything is submitted.

// ParseTimeLimit parses Slurm's time formats: "minutes", "minutes:seconds",
// "hours:minutes:seconds", "days-hours", "days-hours:minutes" and
// "days-hours:minutes:seconds". "" is zero (the partition's default).
func ParseTimeLimit(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	bad := fmt.Errorf("time %q: want minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS", s)
	num := func(p string) (int64, bool) {
		n, err := strconv.ParseInt(p, 10, 32)
		return n, err == nil && n >= 0
	}
	var days int64
	rest := s
	hasDays := false
	if d, r, ok := strings.Cut(s, "-"); ok {
		n, ok := num(d)
		if !ok {
			return 0, bad
		}
		days, rest, hasDays = n, r, true
	}
	parts := strings.Split(rest, ":")
	vals := make([]int64, len(parts))
	for i, p := range parts {
		n, ok := num(p)
		if !ok {
			return 0, bad
		}
		vals[i] = n
	}
	var h, m, sec int64
	switch {
	case hasDays && len(vals) == 1:
		h = vals[0]
	case hasDays && len(vals) == 2:
		h, m = vals[0], vals[1]
	case len(vals) == 3:
		h, m, sec = vals[0], vals[1], vals[2]
	case !hasDays && len(vals) == 1:
		m = vals[0]
	case !hasDays && len(vals) == 2:
		m, sec = vals[0], vals[1]
	default:
		return 0, bad
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second
	return d, nil
}

// ParseMemMB parses a memory size as sbatch --mem does: a number with an
// optional K, M, G or T suffix, megabytes by default.
func ParseMemMB(s string) (int, error) {
	orig := s
	s = strings.TrimSpace(strings.ToUpper(s))
	if s == "" {
		return 0, nil
	}
	mult := 1.0
	switch s[len(s)-1] {
	case 'K':
		mult, s = 1.0/1024, s[:len(s)-1]
	case 'M':
		s = s[:len(s)-1]
	case 'G':
		mult, s = 1024, s[:len(s)-1]
	case 'T':
		mult, s = 1024*1024, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v*mult > 1<<40 {
		return 0, fmt.Errorf("mem %q: want a size like 4000, 4000M, 16G", orig)
	}
	mb := int(v * mult)
	if float64(mb) < v*mult {
		mb++
	}
	return mb, nil
}

// ParseIdleTimeout reads a pool's idle_timeout: a Go duration ("90s",
// "5m") or a number of seconds. "" is the default, 5 minutes.
func ParseIdleTimeout(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 5 * time.Minute, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 {
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("idle_timeout %q: want seconds or a duration like 90s or 5m", s)
	}
	return d, nil
}

// TimeLimit is the pool's walltime (0: the partition's default, unknown here).
func (p *Pool) TimeLimit() time.Duration {
	d, _ := ParseTimeLimit(p.Time)
	return d
}
