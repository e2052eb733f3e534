package dataflow

import (
	"path/filepath"
	"strings"
	"testing"
)

func FuzzParseApp(f *testing.F) {
	f.Add("name: x\nmodules:\n  m:\n    base_image: host\n    parameters: {start_task: a, retry_rules: \"['1:2','*']\"}\n")
	f.Add("name: ${X:-y}\njobs:\n  a: {base_image: host, sink_jobs: b}\n  b: {base_image: host, hosts: ['n.*:2']}\n")
	f.Add("a: &x {b: *x}\n")
	f.Add("name: x\nmodules: {m: {base_image: host, volumes: [a:b:c:d], environments: {K: v}}}\nclusters: {c: {pools: {p: {nodes: 2}}}}\n")
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, text string) {
		app, diags := ParseApp(filepath.Join(dir, "app.yaml"), []byte(text), Env{"X": {Value: "1"}})
		if app == nil && len(diags.Errors()) == 0 {
			t.Fatal("no app and no error")
		}
		for _, d := range diags {
			if strings.Contains(d.Msg, "internal error") {
				t.Fatalf("parser panicked: %s", d.Msg)
			}
		}
		if app != nil {
			if err := app.Validate(); err != nil {
				t.Fatalf("parsed app does not validate: %v", err)
			}
		}
	})
}

func FuzzParseMessageLine(f *testing.F) {
	for _, s := range []string{"a", "a,{}", `{"x":1},{"k":"v"}`, "m,b,{\"k\":1}", `m,{"x":[]},{}`, "m,,", "{", ",{"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		m, err := ParseMessageLine(line)
		if err != nil {
			return
		}
		if m.Body == "" {
			t.Fatalf("%q parsed to an empty body", line)
		}
		if out, err := FormatMessageLine(m); err == nil {
			again, err := ParseMessageLine(out)
			if err != nil || again.Body != m.Body || again.Module != m.Module {
				t.Fatalf("%q -> %+v -> %q -> %+v (%v)", line, m, out, again, err)
			}
		}
	})
}

func FuzzParseEnvFile(f *testing.F) {
	f.Add("A=1\nexport B='x'\n# c\nbad line\n")
	f.Fuzz(func(t *testing.T, data string) {
		env := Env{}
		ParseEnvFile("f", data, env)
		Expand("f", "${A} ${B:-d} $${C}", env)
	})
}
