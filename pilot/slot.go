package pilot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/apptainer"
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

// hasCheckScript says whether a module has an admission script, as far as
// the node can tell before its slot starts (an image may bring its own).
func hasCheckScript(m *dataflow.Module) bool {
	return findScript(CheckScript, m.Env(scriptOverride[CheckScript]), []string{m.CodePath, ShareBin}) != ""
}

// slot runs one module's tasks one (or one batch) at a time.
type slot struct {
	p     *Pilot
	pm    api.PlannedModule
	f     *feeder
	index int
	id    string
	host  slotDirs // the slot's directories on the node
	x     executor // where its scripts run, while started
	done  int
	// failures counts starts in a row that failed (or agents that died).
	failures int
}

func newSlot(p *Pilot, pm api.PlannedModule, f *feeder, i int) *slot {
	s := &slot{p: p, pm: pm, f: f, index: i}
	s.id = fmt.Sprintf("p%d.%s.%d", p.reg.PilotID, pm.Module.Name, i)
	return s
}

func (s *slot) mod() *dataflow.Module { return s.pm.Module }

// container is true for modules with an image.
func (s *slot) container() bool {
	return s.mod().BaseImage != dataflow.HostImage && s.mod().BaseImage != "" && s.mod().Builtin() == ""
}

// prepare creates the slot's private directories.
func (s *slot) prepare() error {
	base := filepath.Join(s.p.cfg.WorkRoot, fmt.Sprintf("%s.%d", s.mod().Name, s.index))
	s.host = slotDirs{Work: filepath.Join(base, "work"), Tmp: filepath.Join(base, "tmp"), Logs: base}
	s.host.Shm = s.host.Tmp
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		s.host.Shm = filepath.Join("/dev/shm", fmt.Sprintf("scalebox-%d-%s", s.p.reg.AppID, s.id))
	}
	for _, d := range []string{s.host.Work, s.host.Tmp, s.host.Shm} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("slot %s: %w", s.id, err)
		}
	}
	return nil
}

// vars are the DESIGN §6 variables of the slot, with paths as its
// scripts see them; each also as PLAT_<name>.
func (s *slot) vars(d slotDirs) map[string]string {
	m := s.mod()
	vars := map[string]string{
		"APP_ID": strconv.FormatInt(s.p.reg.AppID, 10), "APP_NAME": s.p.reg.AppName,
		"MODULE_NAME": m.Name, "MODULE_ID": m.Name, "SLOT_ID": s.id, "SINK_MODULE": s.pm.SinkModule,
		"WORK_DIR": d.Work, "LOCAL_TMPDIR": d.Tmp, "LOCAL_SHMDIR": d.Shm, "CLUSTER": s.p.reg.Cluster,
		"HOST_NAME": s.p.cfg.Host, "TASK_MAX_SECONDS": strconv.Itoa(m.TaskMaxSeconds),
		"TASK_BATCH_SIZE": strconv.Itoa(m.TaskBatchSize),
	}
	out := make(map[string]string, 2*len(vars))
	for k, v := range vars {
		out[k], out["PLAT_"+k] = v, v
	}
	return out
}

// hostExecutor runs the scripts on the node, with the pilot's environment
// under the module's.
func (s *slot) hostExecutor() *workspace {
	m := s.mod()
	env := make([]string, 0, 64)
	path := os.Getenv("PATH")
	if s.p.cfg.Binary != "" {
		// Scripts call `scalebox`: a link of that name to the binary in
		// use, whatever its file is called.
		bin := filepath.Join(s.host.Logs, "bin")
		link := filepath.Join(bin, "scalebox")
		os.MkdirAll(bin, 0o700)
		os.Remove(link)
		if err := os.Symlink(s.p.cfg.Binary, link); err == nil {
			path = bin + ":" + path
		} else {
			path = filepath.Dir(s.p.cfg.Binary) + ":" + path
		}
	}
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "SCALEBOX_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "PATH="+path)
	env = append(env, m.Environments...)
	for k, v := range s.vars(s.host) {
		env = append(env, k+"="+v)
	}
	env = append(env, "SCALEBOX_SERVER="+s.p.cfg.Server, "SCALEBOX_TOKEN_FILE="+s.p.cfg.TokenFile,
		"SCALEBOX_SERVER_CERT_SHA256="+s.p.cfg.CertSHA256)
	return &workspace{env: dedupEnv(env), d: s.host,
		scripts: lookupScripts(m.Env, m.CodePath, ShareBin),
		missing: fmt.Sprintf("no %s in code_path %q or %s (or $%s)", RunScript, m.CodePath, ShareBin, scriptOverride[RunScript])}
}

// containerEnvironment is the module's environment inside its container:
// defaults from the image's labels, then the module's environments, then
// the slot variables.
func (s *slot) containerEnvironment() map[string]string {
	m := s.mod()
	env := map[string]string{}
	if md, err := apptainer.Inspect(m.BaseImage); err == nil {
		for k, v := range md.Env {
			env[k] = v
		}
		for name, path := range md.Scripts {
			env[scriptOverride[name]] = path
		}
	}
	for _, kv := range m.Environments {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	for k, v := range s.vars(containerDirs) {
		env[k] = v
	}
	if s.p.cfg.CertSHA256 != "" {
		env["SCALEBOX_SERVER_CERT_SHA256"] = s.p.cfg.CertSHA256
	}
	return env
}

// start starts the slot's executor and runs setup.sh in it.
func (s *slot) start(ctx context.Context) (executor, error) {
	var x executor
	if s.container() {
		_, n, err := gpuOf(s.mod())
		if err != nil {
			return nil, err
		}
		cx, err := startContainer(ctx, containerSpec{appID: s.p.reg.AppID, pilotID: s.p.reg.PilotID, index: s.index,
			module: s.mod(), host: s.host, env: s.containerEnvironment(), server: s.p.cfg.Server, tokenFile: s.p.cfg.TokenFile,
			apptainer: s.p.cfg.Apptainer, agent: s.p.cfg.AgentBinary, devices: slotDevices(s.p.cfg.GPUs, s.index, n)})
		if err != nil {
			return nil, err
		}
		s.p.log.Info("slot container started", "slot", s.id, "image", s.mod().BaseImage, "os", cx.hello.OS)
		x = cx
	} else if b := s.mod().Builtin(); b != "" {
		x = &builtinExecutor{s: s, name: b}
	} else {
		x = s.hostExecutor()
	}
	if err := s.lifecycleScript(ctx, x, SetupScript); err != nil {
		cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		x.close(cctx)
		cancel()
		return nil, err
	}
	return x, nil
}

// lifecycleScript runs setup.sh or teardown.sh if the module has one.
func (s *slot) lifecycleScript(ctx context.Context, x executor, name string) error {
	if x.script(name) == "" {
		return nil
	}
	resp := x.run(ctx, request{Script: name})
	if resp.Result.ExitCode != 0 {
		why := lastLine(resp.Result.Stderr)
		if resp.Result.SystemErr != "" {
			why = resp.Result.SystemErr
		}
		return fmt.Errorf("%s exited %d: %s", name, resp.Result.ExitCode, why)
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

// Slot restarts: a slot whose container or setup.sh fails, or whose agent
// dies, fails the tasks it holds with 125, waits, and starts again; after
// slotErrorAfter failures in a row it is reported in ERROR (app status
// shows why) while it keeps trying with a growing delay.
const (
	slotErrorAfter    = 3
	slotRestartFirst  = time.Second
	slotRestartLatest = time.Minute
)

// restartDelay is the wait after the nth failure in a row.
func restartDelay(n int) time.Duration {
	d := slotRestartFirst
	for i := 1; i < n && d < slotRestartLatest; i++ {
		d *= 2
	}
	return min(d, slotRestartLatest)
}

func (s *slot) run(ctx context.Context) {
	log := s.p.log.With("slot", s.id)
	if err := s.prepare(); err != nil {
		s.p.fail(fmt.Errorf("slot %s not started: %w", s.id, err))
		return
	}
	// readOutputs removes the files each task leaves; this clears what a
	// previous pilot on the same work root may have left.
	if err := clearInterfaceFiles(s.host.Work); err != nil {
		s.p.fail(fmt.Errorf("slot %s not started: %w", s.id, err))
		return
	}
	defer s.p.slotState(s, nil)
	var lastErr error
	var nextStart time.Time
	for ctx.Err() == nil {
		if lastErr != nil && time.Now().Before(nextStart) {
			// In ERROR: fail what comes at once, with the reason, until the
			// next start attempt is due, so that the module's tasks end
			// (through their retry rules) instead of waiting forever.
			if !s.failBatch(lastErr) {
				return
			}
			continue
		}
		x, err := s.start(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.failures++
			lastErr = err
			log.Warn("slot did not start", "err", err, "failures", s.failures)
			s.p.slotState(s, err)
			// The failure is recorded on a task so it shows where users look.
			if !s.failBatch(err) {
				return
			}
			if s.failures >= slotErrorAfter {
				nextStart = time.Now().Add(restartDelay(s.failures))
				continue
			}
			if sleepCtx(ctx, restartDelay(s.failures)) != nil {
				return
			}
			continue
		}
		lastErr = nil
		s.x = x
		again := s.serve(ctx, log)
		tctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := s.lifecycleScript(tctx, x, TeardownScript); err != nil {
			log.Warn("teardown", "err", err)
		}
		x.close(tctx)
		cancel()
		s.x = nil
		if !again || ctx.Err() != nil {
			return
		}
		if sleepCtx(ctx, restartDelay(s.failures)) != nil {
			return
		}
	}
}

// failBatch takes the next task (or batch) and fails it with 125 and why
// the slot cannot run it. False when there is no more work.
func (s *slot) failBatch(why error) bool {
	tasks := s.f.take(max(s.mod().TaskBatchSize, 1))
	if tasks == nil {
		return false
	}
	for _, t := range tasks {
		s.p.rep.addStarted(dataflow.Started{TaskID: t.ID, Gen: t.Gen, Slot: s.id})
	}
	now := time.Now()
	s.finish(tasks, Result{ExitCode: dataflow.ExitRuntime, Started: now, Ended: now, SystemErr: "slot did not start: " + why.Error()}, Outputs{}, nil, false)
	return true
}

// serve runs tasks on a started executor until the slot ends (false) or
// the executor broke and must be started again (true).
func (s *slot) serve(ctx context.Context, log *slog.Logger) bool {
	// Admission before each task: room on the node (free_space_gb,
	// dir_quota_gb), then check.sh; a refusal waits 1 s, 2 s, … ≤ 30 s.
	checkWait := time.Second
	waitingFor := ""
	for ctx.Err() == nil {
		why := ""
		if hasSpaceRules(s.mod()) {
			why = s.spaceWait()
			if why != waitingFor {
				if why != "" {
					log.Info("waiting for space before taking a task", "why", why)
				} else {
					log.Info("space available again")
				}
				waitingFor = why
			}
		}
		if why == "" && s.x.script(CheckScript) != "" {
			resp := s.x.run(ctx, request{Script: CheckScript})
			if err := s.x.broken(); err != nil {
				s.agentDied(log, err)
				return true
			}
			if resp.Result.ExitCode != 0 {
				why = CheckScript
			}
		}
		if why != "" {
			if sleepCtx(ctx, checkWait) != nil {
				return false
			}
			checkWait = min(checkWait*2, 30*time.Second)
			continue
		}
		checkWait = time.Second
		tasks := s.f.take(max(s.mod().TaskBatchSize, 1))
		if tasks == nil {
			return false
		}
		if ctx.Err() != nil {
			s.f.put(tasks)
			return false
		}
		last := s.runTasks(ctx, tasks)
		if err := s.x.broken(); err != nil {
			s.agentDied(log, err)
			return true
		}
		if s.failures > 0 {
			s.failures = 0
			s.p.slotState(s, nil)
		}
		s.done += len(tasks)
		if last {
			log.Info("slot_last_task seen; slot exits")
			return false
		}
		if n := s.mod().SlotMaxTasks; n > 0 && s.done >= n {
			// Scalebox restarts a slot after slot_max_tasks (to shed leaks).
			s.done = 0
			if err := s.lifecycleScript(ctx, s.x, TeardownScript); err != nil {
				log.Warn("teardown", "err", err)
			}
			if err := s.lifecycleScript(ctx, s.x, SetupScript); err != nil {
				log.Error("slot restart failed", "err", err)
				s.failures++
				s.p.slotState(s, err)
				return true
			}
		}
	}
	return false
}

func (s *slot) agentDied(log *slog.Logger, err error) {
	s.failures++
	log.Warn("slot agent died; restarting the slot", "err", err, "failures", s.failures)
	s.p.slotState(s, err)
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
	req := request{Script: RunScript, Task: true, Removable: s.removable(), Timeout: time.Duration(m.TaskMaxSeconds) * time.Second,
		Env: []string{"TASK_ID=" + strconv.FormatInt(tasks[0].ID, 10), "PLAT_TASK_ID=" + strconv.FormatInt(tasks[0].ID, 10),
			"TASK_ATTEMPT=" + strconv.Itoa(tasks[0].Attempt)}}
	if m.TaskBatchSize > 1 {
		var b strings.Builder
		for _, t := range tasks {
			fmt.Fprintf(&b, "%d,%s,%s\n", t.ID, t.Body, t.Headers.JSON())
		}
		if err := os.WriteFile(filepath.Join(s.host.Work, InputMessagesFile), []byte(b.String()), 0o600); err != nil {
			s.finish(tasks, Result{ExitCode: dataflow.ExitRuntime, Started: time.Now(), Ended: time.Now(), SystemErr: err.Error()}, Outputs{}, nil, false)
			return last
		}
		req.Args = []string{s.x.dirs().Work + "/" + InputMessagesFile, "{}"}
	} else {
		req.Args = []string{tasks[0].Body, tasks[0].Headers.JSON()}
	}
	st, err := s.stageIn(ctx, tasks)
	if err != nil {
		s.cleanup(st)
		s.finish(tasks, stageFailure(err), Outputs{}, st, false)
		return last
	}
	resp := s.x.run(ctx, req)
	res := resp.Result
	if s.x.script(RunScript) != "" {
		s.f.observe(res.Ended.Sub(res.Started) / time.Duration(len(tasks)))
	}
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
	// onNode matters only for a success's messages.
	out := resp.Outputs
	onNode := out.DataOnNode
	if exitCode(res, out) == 0 {
		staged, err := s.stageOut(ctx, tasks, st)
		if err != nil {
			// Its outputs did not all arrive: the attempt failed, and its
			// messages must not go out.
			res.ExitCode, res.SystemErr, out.StatusCode = stageFailure(err).ExitCode, err.Error(), nil
		}
		onNode = onNode || staged
	}
	s.cleanup(st)
	s.finish(tasks, res, out, st, onNode)
	return last
}

// exitCode is an attempt's outcome: the script's code, as task-exec.yaml
// overrides it, failed (101) when its interface files were bad.
func exitCode(res Result, out Outputs) int {
	code := res.ExitCode
	if out.StatusCode != nil {
		code = *out.StatusCode
	}
	if code == 0 && len(out.Problems) > 0 {
		code = dataflow.ExitNotRetryable
	}
	return code
}

// finish turns a result and the interface files into completions. In a
// batch, emitted messages and deferred changes ride on the first task so
// they are sent once.
func (s *slot) finish(tasks []dataflow.LeasedTask, res Result, out Outputs, st *staged, dataOnNode bool) {
	for i, t := range tasks {
		c := completion(s, t, res, out, i == 0)
		c.DataOnNode = dataOnNode
		c.InputLost = st != nil && st.lost == t.ID
		if i == 0 && st != nil {
			// A batch's transfers are counted once.
			c.Stage, c.Cached, c.Uncached = st.stats, st.cached, st.uncached
		}
		s.p.rep.addCompletion(c)
	}
}

// completion is the record of one task's attempt.
func completion(s *slot, t dataflow.LeasedTask, res Result, out Outputs, first bool) dataflow.Completion {
	code := exitCode(res, out)
	var notes []string
	if res.SystemErr != "" {
		notes = append(notes, res.SystemErr)
	}
	if code == dataflow.ExitNotRetryable && len(out.Problems) > 0 {
		notes = append(notes, out.Problems...)
	}
	notes = append(notes, out.Warnings...)
	c := dataflow.Completion{TaskID: t.ID, Gen: t.Gen, Slot: s.id, Host: s.p.cfg.Host, ExitCode: code,
		StartedAt: res.Started, EndedAt: res.Ended, StdoutTail: res.Stdout, StderrTail: res.Stderr,
		Auxout: out.Auxout, Note: strings.Join(notes, "\n"), Timestamps: out.Timestamps,
		InputBytes: out.InputBytes, OutputBytes: out.OutputBytes, Image: s.image()}
	if first && code == 0 {
		c.Messages, c.Deferred = out.Messages, out.Deferred
	}
	return c
}

// image is the module's image for exec records ("" on the host).
func (s *slot) image() string {
	if s.container() {
		return s.mod().BaseImage
	}
	return ""
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
		p := v.Host
		if s.container() {
			p = v.Container
		}
		if !v.ReadOnly && filepath.IsAbs(p) && filepath.Clean(p) != "/" {
			out = append(out, p)
		}
	}
	return out
}
