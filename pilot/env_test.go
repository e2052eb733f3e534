package pilot

import (
	"context"
	"slices"
	"testing"
)

func TestDedupEnv(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{nil, []string{}},
		{[]string{"A=1", "B=2"}, []string{"A=1", "B=2"}},
		{[]string{"A=1", "B=2", "A=3"}, []string{"B=2", "A=3"}},
		{[]string{"A=", "A=x=y", "AB=1"}, []string{"A=x=y", "AB=1"}},
		{[]string{"NOEQUALS", "NOEQUALS"}, []string{"NOEQUALS"}},
	} {
		if got := dedupEnv(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("dedupEnv(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWithEnv(t *testing.T) {
	base := []string{"TASK_ID=1", "TASK_IDX=7", "PATH=/bin", "TASK=x"}
	for _, tc := range []struct{ add, want []string }{
		{nil, base},
		{[]string{"TASK_ID=2"}, []string{"TASK_IDX=7", "PATH=/bin", "TASK=x", "TASK_ID=2"}},
		{[]string{"NEW=1", "TASK=y"}, []string{"TASK_ID=1", "TASK_IDX=7", "PATH=/bin", "NEW=1", "TASK=y"}},
	} {
		if got := withEnv(base, tc.add); !slices.Equal(got, tc.want) {
			t.Errorf("withEnv(%q) = %q, want %q", tc.add, got, tc.want)
		}
	}
	if base[0] != "TASK_ID=1" || len(base) != 4 {
		t.Errorf("withEnv changed its base: %q", base)
	}
}

// A script's environment holds each variable once, with the value of the
// last place that set it: the task's over the module's over the pilot's.
func TestScriptSeesOneValuePerVariable(t *testing.T) {
	dir := t.TempDir()
	s := script(t, dir, "env.sh", "#!/bin/sh\n# the environment execve gave: a shell's own variables would hide a duplicate\n"+
		"tr '\\0' '\\n' < /proc/$$/environ | grep -c '^SCALEBOX_TEST_V='\necho \"$SCALEBOX_TEST_V\"\n", 0o755)
	w := &workspace{env: dedupEnv([]string{"SCALEBOX_TEST_V=inherited", "PATH=/usr/bin:/bin", "SCALEBOX_TEST_V=module"}),
		d: slotDirs{Work: dir, Logs: dir}, scripts: map[string]string{RunScript: s}}
	resp := w.run(context.Background(), request{Script: RunScript, Env: []string{"SCALEBOX_TEST_V=task"}})
	if resp.Result.Stdout != "1\ntask\n" {
		t.Errorf("the script saw %q, want one SCALEBOX_TEST_V, the task's", resp.Result.Stdout)
	}
	resp = w.run(context.Background(), request{Script: RunScript})
	if resp.Result.Stdout != "1\nmodule\n" {
		t.Errorf("the script saw %q, want one SCALEBOX_TEST_V, the module's", resp.Result.Stdout)
	}
}
