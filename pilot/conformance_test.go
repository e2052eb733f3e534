package pilot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/apptainer/apptainertest"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// runtimeCase is one runtime the module contract must hold on.
type runtimeCase struct {
	name  string
	image string // "" = host
	agent string
}

var (
	agentOnce sync.Once
	agentPath string
	agentErr  string
)

// containerRuntime is the Apptainer runtime with a busybox image and a
// static scalebox (CGO_ENABLED=0: the agent needs no SQLite), built once;
// it skips when Apptainer is not here.
func containerRuntime(t *testing.T) runtimeCase {
	t.Helper()
	image := apptainertest.BaseImage(t)
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "scalebox-agent-")
		if err != nil {
			agentErr = err.Error()
			return
		}
		agentPath = filepath.Join(dir, "scalebox")
		build := exec.Command("go", "build", "-o", agentPath, "../cmd/scalebox")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			agentErr = "static scalebox: " + err.Error() + "\n" + string(out)
		}
	})
	if agentErr != "" {
		t.Fatal(agentErr)
	}
	return runtimeCase{name: "apptainer", image: image, agent: agentPath}
}

func runtimes(t *testing.T) []runtimeCase {
	return []runtimeCase{{name: "host"}, containerRuntime(t)}
}

// moduleRun runs messages through a module whose scripts are files.
func moduleRun(t *testing.T, rt runtimeCase, scripts map[string]string, env []string, maxSeconds int, msgs ...dataflow.Message) []dataflow.Completion {
	t.Helper()
	code := t.TempDir()
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(code, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	m := &dataflow.Module{Name: "m", BaseImage: dataflow.HostImage, CodePath: code, TaskBatchSize: 1, TaskMaxSeconds: maxSeconds, Environments: env}
	if rt.image != "" {
		m.BaseImage = rt.image
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out []dataflow.Completion
	err := RunModuleTest(ctx, ModuleTest{Module: m, Messages: msgs, WorkRoot: t.TempDir(), AgentBinary: rt.agent}, func(r TestRun) {
		out = append(out, r.Exec)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRuntimeConformance is the module contract (DESIGN §6) on every
// runtime: the same scripts give the same records on the host and inside
// a container.
func TestRuntimeConformance(t *testing.T) {
	for _, rt := range runtimes(t) {
		t.Run(rt.name, func(t *testing.T) {
			t.Run("body is argv and never a shell string", func(t *testing.T) {
				marker := filepath.Join(t.TempDir(), "evaluated")
				body := `$(touch ` + marker + `) 'single' "double" two  spaces;ls`
				got := moduleRun(t, rt, map[string]string{"run.sh": "#!/bin/sh\nprintf '%s' \"$1\" > \"$WORK_DIR/auxout.txt\"\nprintf '%s' \"$2\" >> \"$WORK_DIR/auxout.txt\"\n"},
					nil, 0, dataflow.Message{Body: body, Headers: dataflow.Headers{"k": "v"}})
				if got[0].ExitCode != 0 || got[0].Auxout != body+`{"k":"v"}` {
					t.Fatalf("exit %d, auxout %q; want 0 and the body then the headers unchanged", got[0].ExitCode, got[0].Auxout)
				}
				if _, err := os.Stat(marker); err == nil {
					t.Fatal("the body was evaluated by a shell")
				}
			})
			t.Run("exit codes and timeout", func(t *testing.T) {
				got := moduleRun(t, rt, map[string]string{"run.sh": "#!/bin/sh\ncase $1 in\n sleep) sleep 30 ;;\n *) exit $1 ;;\nesac\n"},
					nil, 1, dataflow.Message{Body: "0"}, dataflow.Message{Body: "3"}, dataflow.Message{Body: "sleep"})
				for i, want := range []int{0, 3, dataflow.ExitTimeout} {
					if got[i].ExitCode != want {
						t.Errorf("message %d: exit %d, want %d (note %q)", i, got[i].ExitCode, want, got[i].Note)
					}
				}
			})
			t.Run("environment", func(t *testing.T) {
				got := moduleRun(t, rt, map[string]string{"run.sh": `#!/bin/sh
for v in MODULE_NAME PLAT_MODULE_NAME TASK_ID SLOT_ID FOO; do eval "printf '%s=%s\n' $v \"\$$v\""; done > "$WORK_DIR/auxout.txt"
test -d "$WORK_DIR" && test -w "$LOCAL_TMPDIR" && test -w "$LOCAL_SHMDIR"
`}, []string{"FOO=a,b c"}, 0, dataflow.Message{Body: "x"})
				want := "MODULE_NAME=m\nPLAT_MODULE_NAME=m\nTASK_ID=1\nSLOT_ID=p0.m.0\nFOO=a,b c\n"
				if got[0].ExitCode != 0 || got[0].Auxout != want {
					t.Fatalf("exit %d, env:\n%s\nwant:\n%s", got[0].ExitCode, got[0].Auxout, want)
				}
			})
			t.Run("interface files", func(t *testing.T) {
				got := moduleRun(t, rt, map[string]string{"run.sh": `#!/bin/sh
echo "next,{\"h\":\"1\"}" > "$WORK_DIR/sink-tasks.txt"
echo "start,2026-01-02T03:04:05Z" > "$WORK_DIR/timestamps.txt"
echo "out" > "$WORK_DIR/data" && echo data > "$WORK_DIR/output-files.txt"
echo "$WORK_DIR/data" > "$WORK_DIR/removed-files.txt"
echo oops >&2
`}, nil, 0, dataflow.Message{Body: "x"})
				c := got[0]
				if c.ExitCode != 0 || len(c.Messages) != 1 || c.Messages[0].Body != "next" || c.Messages[0].Headers["h"] != "1" {
					t.Fatalf("exit %d, messages %+v", c.ExitCode, c.Messages)
				}
				if len(c.Timestamps) != 1 || c.OutputBytes != 4 || !strings.Contains(c.StderrTail, "oops") {
					t.Fatalf("timestamps %v, output bytes %d, stderr %q", c.Timestamps, c.OutputBytes, c.StderrTail)
				}
			})
			t.Run("setup once and missing run.sh", func(t *testing.T) {
				got := moduleRun(t, rt, map[string]string{
					"setup.sh": "#!/bin/sh\necho setup >> \"$LOCAL_TMPDIR/log\"\n",
					"run.sh":   "#!/bin/sh\ncat \"$LOCAL_TMPDIR/log\" > \"$WORK_DIR/auxout.txt\"\n",
				}, nil, 0, dataflow.Message{Body: "a"}, dataflow.Message{Body: "b"})
				if got[1].Auxout != "setup\n" {
					t.Fatalf("second task saw setup log %q; want setup to have run once", got[1].Auxout)
				}
				none := moduleRun(t, rt, map[string]string{"check.sh": "#!/bin/sh\nexit 0\n"}, nil, 0, dataflow.Message{Body: "a"})
				if none[0].ExitCode != dataflow.ExitNotFound {
					t.Fatalf("no run.sh: exit %d, want %d", none[0].ExitCode, dataflow.ExitNotFound)
				}
			})
			if rt.image != "" {
				t.Run("image OS", func(t *testing.T) {
					got := moduleRun(t, rt, map[string]string{"run.sh": "#!/bin/sh\ncat /etc/os-release\n"}, nil, 0, dataflow.Message{Body: "x"})
					host, _ := os.ReadFile("/etc/os-release")
					if !strings.Contains(got[0].StdoutTail, `NAME="Scalebox busybox"`) || got[0].StdoutTail == string(host) {
						t.Fatalf("os-release in the slot:\n%s", got[0].StdoutTail)
					}
					if got[0].Image != rt.image {
						t.Fatalf("exec record image %q, want %q", got[0].Image, rt.image)
					}
				})
			}
		})
	}
}
