package pilot

import "strings"

// Scripts are started with execve directly, which passes an environment
// as given: a key twice reaches the program twice, and getenv returns the
// first. A module's environments must override what the pilot inherited,
// and a task's TASK_ID what a slot's environment may carry, so the slot's
// environment is made unique once (dedupEnv) and each task's additions
// replace their keys (withEnv).

// envKey is the name of a KEY=VALUE entry.
func envKey(kv string) string {
	k, _, _ := strings.Cut(kv, "=")
	return k
}

// dedupEnv keeps the last entry of each key, in the order of those entries.
func dedupEnv(env []string) []string {
	last := make(map[string]int, len(env))
	for i, kv := range env {
		last[envKey(kv)] = i
	}
	out := make([]string, 0, len(last))
	for i, kv := range env {
		if last[envKey(kv)] == i {
			out = append(out, kv)
		}
	}
	return out
}

// withEnv is base, without the keys add sets, followed by add. base is not
// changed; add is short (a task's few variables), so this is a scan, not a
// map.
func withEnv(base, add []string) []string {
	if len(add) == 0 {
		return base
	}
	out := make([]string, 0, len(base)+len(add))
	for _, kv := range base {
		k := envKey(kv)
		replaced := false
		for _, a := range add {
			if len(a) > len(k) && a[len(k)] == '=' && a[:len(k)] == k {
				replaced = true
				break
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return append(out, add...)
}
