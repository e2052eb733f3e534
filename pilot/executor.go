package pilot

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// An executor runs one slot's module scripts. The host executor runs them
// on the node; the container executor hands them to the agent inside the
// slot's Apptainer instance, which runs the very same workspace code there
// (agent.go). Either way a script sees the module contract of DESIGN §6.
type executor interface {
	// dirs are the slot's directories as the scripts see them.
	dirs() slotDirs
	// script is the path of a module script as the scripts see it, or "".
	script(name string) string
	// run runs one script and, for a task, reads its interface files.
	run(ctx context.Context, r request) response
	// broken is non-nil once the executor cannot run anything more (its
	// agent died); the slot then starts a new one.
	broken() error
	close(ctx context.Context) error
}

// slotDirs are a slot's private directories.
type slotDirs struct {
	Work string // WORK_DIR: interface files
	Tmp  string // LOCAL_TMPDIR
	Shm  string // LOCAL_SHMDIR
	Logs string // stdout/stderr of the last script run
}

// request is one script run. It crosses the agent pipe as JSON.
type request struct {
	Script string   `json:"script"` // run.sh, check.sh, setup.sh or teardown.sh
	Args   []string `json:"args,omitempty"`
	// Env is added to the slot's environment (TASK_ID and the like).
	Env     []string      `json:"env,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
	// Task asks for the interface files to be read after the run.
	Task bool `json:"task,omitempty"`
	// Removable are paths besides the work dir removed-files.txt may name.
	Removable []string `json:"removable,omitempty"`
}

// response is a request's outcome.
type response struct {
	Result  Result  `json:"result"`
	Outputs Outputs `json:"outputs"`
}

// workspace runs scripts where they live: on the host for the host
// executor, inside the container for the agent.
type workspace struct {
	env     []string
	d       slotDirs
	scripts map[string]string
	// missing explains an absent run.sh.
	missing string
	logs    scriptLogs
}

func (w *workspace) dirs() slotDirs            { return w.d }
func (w *workspace) script(name string) string { return w.scripts[name] }
func (w *workspace) broken() error             { return nil }
func (w *workspace) close(context.Context) error {
	return w.logs.close()
}

// lookupScripts finds each module script: the env override, then the
// directories in order.
func lookupScripts(override func(string) string, dirs ...string) map[string]string {
	out := map[string]string{}
	for _, name := range []string{RunScript, CheckScript, SetupScript, TeardownScript} {
		if p := findScript(name, override(scriptOverride[name]), dirs); p != "" {
			out[name] = p
		}
	}
	return out
}

func (w *workspace) run(ctx context.Context, r request) response {
	path := w.scripts[r.Script]
	if path == "" {
		now := time.Now()
		msg := fmt.Sprintf("no %s", r.Script)
		if r.Script == RunScript {
			msg = w.missing
		}
		return response{Result: Result{ExitCode: dataflow.ExitNotFound, Started: now, Ended: now, SystemErr: msg}}
	}
	env := withEnv(w.env, r.Env)
	name := filepath.Base(r.Script)
	res := runProcess(ctx, Command{Argv: append([]string{path}, r.Args...), Env: env, Dir: w.d.Work, Timeout: r.Timeout,
		Stdout: filepath.Join(w.d.Logs, name+".stdout"), Stderr: filepath.Join(w.d.Logs, name+".stderr"), Logs: &w.logs})
	var out Outputs
	if r.Task {
		out = readOutputs(w.d.Work, r.Removable...)
	}
	return response{Result: res, Outputs: out}
}
