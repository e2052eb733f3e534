package dataflow

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func writeApp(t *testing.T, yaml string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func load(t *testing.T, dir string, environ ...string) (*App, Diagnostics) {
	t.Helper()
	return LoadApp(dir, LoadOptions{Environ: environ, Files: []string{filepath.Join(dir, "scalebox.env")}})
}

func TestLoadFullApp(t *testing.T) {
	dir := writeApp(t, `
name: demo
parameters:
  main_router: router
  initial_status: paused
modules:
  router:
    base_image: host
    arguments: {code_path: ./r}
    parameters:
      start_task: ${N}
  calc:
    base_image: host
    arguments:
      code_path: ./c
      task_max_seconds: 30
      task_batch_size: 4
    parameters:
      retry_rules: "['3:2','*']"
      task_dist_mode: host-bound
      start_task: FILE:tasks.txt
      retry_backoff: 250ms
    environments:
      - A=1
      - B=${B}
    volumes:
      - /data:/data:ro
    slots:
      - n[0-9]+:2
      - head
    sink_modules: sink
  sink:
    base_image: host
`, map[string]string{"r/run.sh": "", "c/run.sh": "", "tasks.txt": "# comment\nx1\ncalc,x2,{\"k\":\"v\"}\n", "scalebox.env": "N=1000\nB=from-file\n"})
	app, diags := load(t, dir, "B=from-env")
	if len(diags.Errors()) > 0 {
		t.Fatalf("unexpected errors:\n%s", diags.Error())
	}
	if app.Parameters.InitialStatus != AppPaused || app.Parameters.MainRouter != "router" {
		t.Fatalf("parameters: %+v", app.Parameters)
	}
	r, c := app.Module("router"), app.Module("calc")
	if !r.SlotOnHead || len(r.StartTasks) != 1 || r.StartTasks[0].Body != "1000" {
		t.Fatalf("router: %+v", r)
	}
	if c.TaskMaxSeconds != 30 || c.TaskBatchSize != 4 || c.DistMode != DistHostBound || time.Duration(c.RetryBackoff) != 250*time.Millisecond {
		t.Fatalf("calc settings: %+v", c)
	}
	if got := c.RetryRules.Allowed(3); got != 2 {
		t.Fatalf("code 3 allowed %d retries", got)
	}
	if got := c.RetryRules.Allowed(9); got != 1 {
		t.Fatalf("code 9 allowed %d retries", got)
	}
	if strings.Join(c.Environments, " ") != "A=1 B=from-env" {
		t.Fatalf("environment precedence: %v", c.Environments)
	}
	if len(c.Volumes) != 1 || !c.Volumes[0].ReadOnly || c.Volumes[0].Container != "/data" {
		t.Fatalf("volumes: %+v", c.Volumes)
	}
	if len(c.Slots) != 2 || c.Slots[0].Count != 2 || !c.Slots[0].Matches("n12") || c.Slots[0].Matches("x12") {
		t.Fatalf("slots: %+v", c.Slots)
	}
	if len(c.StartTasks) != 2 || c.StartTasks[1].Headers["k"] != "v" || c.StartTasks[0].Module != "calc" {
		t.Fatalf("start tasks from file: %+v", c.StartTasks)
	}
	if app.DefaultSink(c) != "sink" || app.DefaultSink(app.Module("sink")) != "router" || app.DefaultSink(r) != "" {
		t.Fatalf("default sinks wrong")
	}
}

var posRE = regexp.MustCompile(`^(.+):(\d+):(\d+): error: `)

func TestValidateReportsEveryErrorWithPosition(t *testing.T) {
	dir := writeApp(t, `name: three
modules:
  a:
    base_image: host
    argments:
      code_path: .
  b:
    base_image: host
    parameters:
      retry_rules: "['x:1']"
    sink_modules: nowhere
`, nil)
	_, diags := load(t, dir)
	errs := diags.Errors()
	if len(errs) != 3 {
		t.Fatalf("want 3 errors, got %d:\n%s", len(errs), diags.Error())
	}
	lines := strings.Split(errs.Error(), "\n")
	want := []struct {
		line int
		text string
	}{{5, `did you mean "arguments"`}, {10, "retry rule"}, {11, `sink module "nowhere"`}}
	for i, w := range want {
		m := posRE.FindStringSubmatch(lines[i])
		if m == nil || m[2] != itoa(w.line) || !strings.Contains(lines[i], w.text) {
			t.Errorf("error %d = %q; want line %d containing %q", i, lines[i], w.line, w.text)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestParseDiagnostics(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       string // substring of the errors; "" = no error
		warn       string // substring of the warnings
	}{
		{"undefined variable names it", "name: x\nmodules:\n  m:\n    base_image: ${IMAGE}\n", "4:17: error: undefined variable ${IMAGE}", ""},
		{"default value", "name: x\nmodules:\n  m:\n    base_image: ${IMAGE:-host}\n", "", ""},
		{"legacy aliases warn", "name: x\njobs:\n  m:\n    base_image: host\n    variables: {task_timeout_seconds: 5}\n", "", `"jobs" is the legacy Scalebox name of "modules"`},
		{"unknown top key suggests", "name: x\nmodule:\n  m: {base_image: host}\n", `unknown key "module" (did you mean "modules"?)`, ""},
		{"missing base_image", "name: x\nmodules:\n  m: {}\n", `missing required key "base_image"`, ""},
		{"bad router", "name: x\nparameters: {main_router: rooter}\nmodules:\n  router: {base_image: host}\n", `main_router "rooter" does not exist (did you mean "router"?)`, ""},
		{"yaml syntax", "name: x\nmodules: [\n", "YAML syntax", ""},
		{"bad dist mode", "name: x\nmodules:\n  m:\n    base_image: host\n    parameters: {task_dist_mode: RANDOM}\n", "task_dist_mode", ""},
		{"negative batch", "name: x\nmodules:\n  m:\n    base_image: host\n    arguments: {task_batch_size: 0}\n", "task_batch_size must be >= 1", ""},
		{"bad volume", "name: x\nmodules:\n  m:\n    base_image: host\n    volumes: [/a]\n", "want host:container", ""},
		{"bad env entry", "name: x\nmodules:\n  m:\n    base_image: host\n    environments: [NOEQUALS]\n", "not KEY=VALUE", ""},
		{"missing image", "name: x\nmodules:\n  m: {base_image: /img/x.sif}\n", "", "base_image /img/x.sif: no such image here"},
		{"empty", "", "empty app definition", ""},
		{"not a mapping", "- a\n- b\n", "app must be a mapping", ""},
		{"duplicate key", "name: x\nname: y\nmodules:\n  m: {base_image: host}\n", "given twice", ""},
		{"missing start file", "name: x\nmodules:\n  m:\n    base_image: host\n    parameters: {start_task: 'FILE:nope.txt'}\n", "start_task", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeApp(t, tt.yaml, nil)
			_, diags := load(t, dir)
			errs := diags.Errors().Error()
			if tt.want == "" && errs != "" {
				t.Fatalf("unexpected errors: %s", errs)
			}
			if tt.want != "" && !strings.Contains(errs, tt.want) {
				t.Fatalf("errors %q do not contain %q", errs, tt.want)
			}
			var warns []string
			for _, w := range diags.Warnings() {
				warns = append(warns, w.String())
			}
			if tt.warn != "" && !strings.Contains(strings.Join(warns, "\n"), tt.warn) {
				t.Fatalf("warnings %q do not contain %q", warns, tt.warn)
			}
		})
	}
}

func TestEnvPrecedence(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	user := filepath.Join(dir, "user")
	app := filepath.Join(dir, "scalebox.env")
	os.WriteFile(sys, []byte("A=sys\nB=sys\nC=sys\nD=sys\n"), 0o644)
	os.WriteFile(user, []byte("export B=user\nC='user'\nD=user\n"), 0o644)
	os.WriteFile(app, []byte("# app\nC=\"app\"\nD=app\n"), 0o644)
	env, diags := LoadEnv([]string{sys, user, app}, []string{"D=process"})
	if len(diags) > 0 {
		t.Fatal(diags.Error())
	}
	for k, want := range map[string]string{"A": "sys", "B": "user", "C": "app", "D": "process"} {
		if env[k].Value != want {
			t.Errorf("%s = %q, want %q", k, env[k].Value, want)
		}
	}
	bad := ParseEnvFile("f.env", "OK=1\nnot a pair\n", Env{})
	if len(bad) != 1 || bad[0].Line != 2 {
		t.Fatalf("bad line not reported at line 2: %v", bad)
	}
}
