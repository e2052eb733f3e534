package pilot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Module script names and the environment variables that override them.
const (
	RunScript      = "run.sh"
	CheckScript    = "check.sh"
	SetupScript    = "setup.sh"
	TeardownScript = "teardown.sh"
)

var scriptOverride = map[string]string{
	RunScript: "SCALEBOX_RUN_SH", CheckScript: "SCALEBOX_CHECK_SH",
	SetupScript: "SCALEBOX_SETUP_SH", TeardownScript: "SCALEBOX_TEARDOWN_SH",
}

// ShareBin is the second place scripts are looked up (Scalebox images keep
// shared helpers there).
const ShareBin = "/app/share/bin"

func moduleEnv(m *dataflow.Module, key string) string {
	for _, kv := range m.Environments {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v
		}
	}
	return ""
}

func scriptPath(m *dataflow.Module, name string) string {
	return findScript(name, moduleEnv(m, scriptOverride[name]), []string{m.CodePath, ShareBin})
}

func hasCheckScript(m *dataflow.Module) bool { return scriptPath(m, CheckScript) != "" }

// slot runs one module's tasks one (or one batch) at a time.
type slot struct {
	p     *Pilot
	pm    api.PlannedModule
	f     *feeder
	index int
	id    string
	work  string
	env   []string
	logs  string // dir of the last task's stdout and stderr files
	runSh string
	check string
	done  int
}

func newSlot(p *Pilot, pm api.PlannedModule, f *feeder, i int) *slot {
	s := &slot{p: p, pm: pm, f: f, index: i}
	s.id = fmt.Sprintf("p%d.%s.%d", p.reg.PilotID, pm.Module.Name, i)
	return s
}

func (s *slot) mod() *dataflow.Module { return s.pm.Module }

// prepare creates the slot's private directories and its base environment.
func (s *slot) prepare() error {
	base := filepath.Join(s.p.cfg.WorkRoot, fmt.Sprintf("%s.%d", s.mod().Name, s.index))
	s.work = filepath.Join(base, "work")
	s.logs = base
	tmp := filepath.Join(base, "tmp")
	shm := tmp
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		shm = filepath.Join("/dev/shm", fmt.Sprintf("scalebox-%d-%s", s.p.reg.AppID, s.id))
	}
	for _, d := range []string{s.work, tmp, shm} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("slot %s: %w", s.id, err)
		}
	}
	m := s.mod()
	vars := map[string]string{
		"APP_ID": strconv.FormatInt(s.p.reg.AppID, 10), "APP_NAME": s.p.reg.AppName,
		"MODULE_NAME": m.Name, "MODULE_ID": m.Name, "SLOT_ID": s.id, "SINK_MODULE": s.pm.SinkModule,
		"WORK_DIR": s.work, "LOCAL_TMPDIR": tmp, "LOCAL_SHMDIR": shm, "CLUSTER": s.p.reg.Cluster,
		"HOST_NAME": s.p.cfg.Host, "TASK_MAX_SECONDS": strconv.Itoa(m.TaskMaxSeconds),
		"TASK_BATCH_SIZE": strconv.Itoa(m.TaskBatchSize),
	}
	env := make([]string, 0, 64)
	path := os.Getenv("PATH")
	if s.p.cfg.Binary != "" {
		path = filepath.Dir(s.p.cfg.Binary) + ":" + path
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "SCALEBOX_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PATH="+path)
	env = append(env, m.Environments...)
	for k, v := range vars {
		env = append(env, k+"="+v, "PLAT_"+k+"="+v)
	}
	env = append(env, "SCALEBOX_SERVER="+s.p.cfg.Server, "SCALEBOX_TOKEN_FILE="+s.p.cfg.TokenFile,
		"SCALEBOX_SERVER_CERT_SHA256="+s.p.cfg.CertSHA256)
	s.env = env
	s.runSh = scriptPath(m, RunScript)
	s.check = scriptPath(m, CheckScript)
	return nil
}

func (s *slot) command(argv []string, extra ...string) Command {
	env := s.env
	if len(extra) > 0 {
		env = append(append(make([]string, 0, len(s.env)+len(extra)), s.env...), extra...)
	}
	name := filepath.Base(argv[0])
	return Command{Argv: argv, Env: env, Dir: s.work,
		Stdout: filepath.Join(s.logs, name+".stdout"), Stderr: filepath.Join(s.logs, name+".stderr")}
}

// lifecycleScript runs setup.sh or teardown.sh if the module has one.
func (s *slot) lifecycleScript(ctx context.Context, name string) error {
	path := scriptPath(s.mod(), name)
	if path == "" {
		return nil
	}
	res := runProcess(ctx, s.command([]string{path}))
	if res.ExitCode != 0 {
		return fmt.Errorf("%s exited %d: %s", name, res.ExitCode, lastLine(res.Stderr))
	}
	return nil
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func (s *slot) run(ctx context.Context) {
	log := s.p.log.With("slot", s.id)
	if err := s.prepare(); err != nil {
		s.p.fail(fmt.Errorf("slot %s not started: %w", s.id, err))
		return
	}
	// readOutputs removes the files each task leaves; this clears what a
	// previous pilot on the same work root may have left.
	if err := clearInterfaceFiles(s.work); err != nil {
		s.p.fail(fmt.Errorf("slot %s not started: %w", s.id, err))
		return
	}
	if err := s.startScripts(ctx); err != nil {
		if ctx.Err() == nil {
			s.p.fail(fmt.Errorf("slot %s not started: %w", s.id, err))
		}
		return
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.lifecycleScript(tctx, TeardownScript); err != nil {
			log.Warn("teardown", "err", err)
		}
	}()
	checkWait := time.Second
	for ctx.Err() == nil {
		if s.check != "" {
			res := runProcess(ctx, s.command([]string{s.check}))
			if res.ExitCode != 0 {
				if sleepCtx(ctx, checkWait) != nil {
					return
				}
				checkWait = min(checkWait*2, 30*time.Second)
				continue
			}
			checkWait = time.Second
		}
		tasks := s.f.take(max(s.mod().TaskBatchSize, 1))
		if tasks == nil {
			return
		}
		if ctx.Err() != nil {
			s.f.put(tasks)
			return
		}
		last := s.runTasks(ctx, tasks)
		s.done += len(tasks)
		if last {
			log.Info("slot_last_task seen; slot exits")
			return
		}
		if n := s.mod().SlotMaxTasks; n > 0 && s.done >= n {
			// Scalebox restarts a slot after slot_max_tasks (to shed leaks).
			s.done = 0
			if err := s.lifecycleScript(ctx, TeardownScript); err != nil {
				log.Warn("teardown", "err", err)
			}
			if err := s.startScripts(ctx); err != nil {
				log.Error("slot restart failed", "err", err)
				return
			}
		}
	}
}

// startScripts runs setup.sh, retrying with backoff a few times.
func (s *slot) startScripts(ctx context.Context) error {
	var err error
	delay := time.Second
	for i := 0; i < 3; i++ {
		if err = s.lifecycleScript(ctx, SetupScript); err == nil {
			return nil
		}
		s.p.log.Warn("setup failed", "slot", s.id, "err", err, "attempt", i+1)
		if sleepCtx(ctx, delay) != nil {
			return ctx.Err()
		}
		delay *= 4
	}
	return err
}

// runTasks runs one task, or one batch through input-messages.txt, and
// queues the completions. It reports whether a task asked the slot to end.
func (s *slot) runTasks(ctx context.Context, tasks []dataflow.LeasedTask) bool {
	last := false
	for _, t := range tasks {
		s.p.rep.addStarted(dataflow.Started{TaskID: t.ID, Gen: t.Gen, Slot: s.id})
		if strings.EqualFold(t.Headers[dataflow.HeaderSlotLastTask], "yes") {
			last = true
		}
	}
	m := s.mod()
	var argv []string
	extra := []string{"TASK_ID=" + strconv.FormatInt(tasks[0].ID, 10), "PLAT_TASK_ID=" + strconv.FormatInt(tasks[0].ID, 10),
		"TASK_ATTEMPT=" + strconv.Itoa(tasks[0].Attempt)}
	if m.TaskBatchSize > 1 {
		var b strings.Builder
		for _, t := range tasks {
			fmt.Fprintf(&b, "%d,%s,%s\n", t.ID, t.Body, t.Headers.JSON())
		}
		file := filepath.Join(s.work, InputMessagesFile)
		if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
			s.finish(tasks, Result{ExitCode: dataflow.ExitRuntime, Started: time.Now(), Ended: time.Now(), SystemErr: err.Error()}, Outputs{})
			return last
		}
		argv = []string{s.runSh, file, "{}"}
	} else {
		argv = []string{s.runSh, tasks[0].Body, tasks[0].Headers.JSON()}
	}
	var res Result
	if s.runSh == "" {
		res = Result{ExitCode: dataflow.ExitNotFound, Started: time.Now(), Ended: time.Now(),
			SystemErr: fmt.Sprintf("no %s in code_path %q or %s (or $%s)", RunScript, m.CodePath, ShareBin, scriptOverride[RunScript])}
	} else {
		cmd := s.command(argv, extra...)
		cmd.Timeout = time.Duration(m.TaskMaxSeconds) * time.Second
		res = runProcess(ctx, cmd)
		s.f.observe(res.Ended.Sub(res.Started) / time.Duration(len(tasks)))
		if !res.TimedOut && killedBySignal(res.ExitCode) {
			// scancel and node shutdown signal the task and the pilot at
			// once; a task killed that way is lost work, not a failure.
			// Give the pilot's own signal a moment to arrive.
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
		if ctx.Err() != nil && !res.TimedOut {
			res.ExitCode, res.SystemErr = dataflow.ExitLost, "pilot stopping: task killed"
		}
	}
	s.finish(tasks, res, readOutputs(s.work, s.removable()...))
	return last
}

// finish turns a result and the interface files into completions. In a
// batch, emitted messages and deferred changes ride on the first task so
// they are sent once.
func (s *slot) finish(tasks []dataflow.LeasedTask, res Result, out Outputs) {
	code := res.ExitCode
	if out.StatusCode != nil {
		code = *out.StatusCode
	}
	var notes []string
	if res.SystemErr != "" {
		notes = append(notes, res.SystemErr)
	}
	if code == 0 && len(out.Problems) > 0 {
		code = dataflow.ExitNotRetryable
		notes = append(notes, out.Problems...)
	}
	notes = append(notes, out.Warnings...)
	for i, t := range tasks {
		c := dataflow.Completion{TaskID: t.ID, Gen: t.Gen, Slot: s.id, Host: s.p.cfg.Host, ExitCode: code,
			StartedAt: res.Started, EndedAt: res.Ended, StdoutTail: res.Stdout, StderrTail: res.Stderr,
			Auxout: out.Auxout, Note: strings.Join(notes, "\n"), Timestamps: out.Timestamps,
			InputBytes: out.InputBytes, OutputBytes: out.OutputBytes}
		if i == 0 && code == 0 {
			c.Messages, c.Deferred = out.Messages, out.Deferred
		}
		s.p.rep.addCompletion(c)
	}
}

// killedBySignal is true for the exit codes of SIGHUP, SIGINT, SIGKILL and
// SIGTERM (128+n), as shells and runProcess report them.
func killedBySignal(code int) bool {
	switch code {
	case 128 + 1, 128 + 2, 128 + 9, 128 + 15:
		return true
	}
	return false
}

// removable are the host paths a task may ask the pilot to delete (in
// removed-files.txt) besides its work dir: the module's writable volumes.
func (s *slot) removable() []string {
	var out []string
	for _, v := range s.pm.Module.Volumes {
		if !v.ReadOnly && filepath.IsAbs(v.Host) && filepath.Clean(v.Host) != "/" {
			out = append(out, v.Host)
		}
	}
	return out
}
