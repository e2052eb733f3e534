package pilot

import (
	"bufio"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scalebox-hpc/scalebox/apptainer"
	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/internal/timerslack"
)

// containerExecutor runs a slot's scripts through the agent inside the
// slot's Apptainer instance. The instance is started once per slot; every
// task is a request on the agent's stdin, answered on its stdout.
type containerExecutor struct {
	runner   apptainer.Runner
	instance string
	image    string
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	answers  chan response
	hello    agentHello
	errLog   string // the agent's stderr, on the host

	mu     sync.Mutex // one request at a time
	deadMu sync.Mutex
	dead   error
	exited chan struct{}
}

// containerDirs are a slot's directories as seen inside its container.
var containerDirs = slotDirs{Work: apptainer.WorkDir, Tmp: apptainer.LocalTmp, Shm: apptainer.LocalShm, Logs: apptainer.SlotDir}

// AgentBinaryEnv names the static scalebox binary bound into containers
// when the running one is dynamically linked.
const AgentBinaryEnv = "SCALEBOX_AGENT_BINARY"

// agentBinary is the scalebox executable to bind into a container: it
// must be static, as the image has its own (or no) C library.
func agentBinary(configured string) (string, error) {
	path := configured
	if path == "" {
		path = os.Getenv(AgentBinaryEnv)
	}
	if path == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("find the scalebox binary for the container agent: %w", err)
		}
		path = exe
	}
	f, err := elf.Open(path)
	if err != nil {
		return "", fmt.Errorf("container agent binary %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", fmt.Errorf("container agent binary %s is dynamically linked and cannot run inside an image; use a static build (make release) or set $%s", path, AgentBinaryEnv)
		}
	}
	return path, nil
}

var instanceChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// instanceName is unique per slot on a node. App and pilot ids repeat
// between heads (every state dir has an app 1), and Apptainer instance
// names are per user, so the slot's directory, unique per pilot, is part
// of it: a leftover of this very slot (its pilot killed) has the same name
// and is stopped before a start; another head's slot never is.
func instanceName(appID, pilotID int64, module string, index int, slotDir string) string {
	sum := sha256.Sum256([]byte(slotDir))
	return fmt.Sprintf("sbx-%d-%d-%s-%d-%x", appID, pilotID, instanceChars.ReplaceAllString(module, "_"), index, sum[:4])
}

// containerSpec is what startContainer needs from the slot.
type containerSpec struct {
	appID, pilotID int64
	index          int
	module         *dataflow.Module
	host           slotDirs // the slot's dirs on the host
	env            map[string]string
	server         string // the head's address as the pilot sees it
	tokenFile      string
	apptainer      string // configured path of the apptainer binary
	agent          string // configured path of the static scalebox binary
	devices        []int
}

// gpuOf reads a module's GPU request: arguments gpus (per slot) and
// gpu_type (nvidia, the default, or amd).
func gpuOf(m *dataflow.Module) (apptainer.GPU, int, error) {
	n := 0
	if v := m.Arguments["gpus"]; v != "" {
		if _, err := fmt.Sscan(v, &n); err != nil || n < 0 {
			return apptainer.GPUNone, 0, fmt.Errorf("module %q: arguments gpus %q: want a whole number", m.Name, v)
		}
	}
	if n == 0 {
		return apptainer.GPUNone, 0, nil
	}
	g, err := apptainer.ParseGPU(m.Arguments["gpu_type"])
	if err != nil {
		return apptainer.GPUNone, 0, fmt.Errorf("module %q: %w", m.Name, err)
	}
	return g, n, nil
}

// slotDevices gives slot index its n devices out of the node's visible
// ones (round robin, so slots share no device while there are enough).
func slotDevices(visible []int, index, n int) []int {
	if n <= 0 || len(visible) == 0 {
		return nil
	}
	out := make([]int, n)
	for i := range out {
		out[i] = visible[(index*n+i)%len(visible)]
	}
	return out
}

// instanceFor builds the instance of a slot: the binds of DESIGN §9.
func instanceFor(sp containerSpec, agent string) (apptainer.Instance, error) {
	m := sp.module
	in := apptainer.Instance{
		Name:    instanceName(sp.appID, sp.pilotID, m.Name, sp.index, sp.host.Logs),
		Image:   m.BaseImage,
		Contain: true,
		Devices: sp.devices,
	}
	g, _, err := gpuOf(m)
	if err != nil {
		return in, err
	}
	in.GPU = g
	if m.CodePath != "" {
		in.Binds = append(in.Binds, apptainer.Bind{Host: m.CodePath, Container: apptainer.AppBin, ReadOnly: true})
	}
	in.Binds = append(in.Binds,
		apptainer.Bind{Host: sp.host.Logs, Container: apptainer.SlotDir},
		apptainer.Bind{Host: sp.host.Work, Container: apptainer.WorkDir},
		apptainer.Bind{Host: sp.host.Tmp, Container: apptainer.LocalTmp},
		apptainer.Bind{Host: sp.host.Shm, Container: apptainer.LocalShm},
		apptainer.Bind{Host: agent, Container: apptainer.AgentExe, ReadOnly: true},
	)
	if sp.tokenFile != "" {
		in.Binds = append(in.Binds, apptainer.Bind{Host: sp.tokenFile, Container: apptainer.TokenPath, ReadOnly: true})
	}
	if sock, ok := strings.CutPrefix(sp.server, "unix://"); ok {
		in.Binds = append(in.Binds, apptainer.Bind{Host: sock, Container: apptainer.SockPath})
	}
	for _, v := range m.Volumes {
		in.Binds = append(in.Binds, apptainer.Bind{Host: v.Host, Container: v.Container, ReadOnly: v.ReadOnly})
	}
	return in, nil
}

// containerEnv is the agent's environment: the slot's variables with the
// container's paths, and how to reach the head from inside.
func containerEnv(sp containerSpec, in apptainer.Instance) map[string]string {
	env := map[string]string{}
	for k, v := range sp.env {
		env[k] = v
	}
	server := sp.server
	if strings.HasPrefix(server, "unix://") {
		server = "unix://" + apptainer.SockPath
	}
	env["SCALEBOX_SERVER"] = server
	if sp.tokenFile != "" {
		env["SCALEBOX_TOKEN_FILE"] = apptainer.TokenPath
	}
	if k, v, ok := in.DeviceEnv(); ok {
		env[k] = v
	}
	return env
}

// startContainer starts the slot's instance and its agent.
func startContainer(ctx context.Context, sp containerSpec) (*containerExecutor, error) {
	if _, err := os.Stat(sp.module.BaseImage); err != nil {
		return nil, fmt.Errorf("module %s: base_image: %w", sp.module.Name, err)
	}
	bin, err := apptainer.Find(sp.apptainer)
	if err != nil {
		return nil, err
	}
	agent, err := agentBinary(sp.agent)
	if err != nil {
		return nil, err
	}
	in, err := instanceFor(sp, agent)
	if err != nil {
		return nil, err
	}
	r := apptainer.Runner{Binary: bin}
	// A pilot killed without cleanup may have left an instance of this name.
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	r.Stop(stopCtx, in.Name)
	cancel()
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := r.Start(startCtx, in); err != nil {
		return nil, err
	}
	x := &containerExecutor{runner: r, instance: in.Name, image: in.Image, answers: make(chan response, 1),
		exited: make(chan struct{}), errLog: filepath.Join(sp.host.Logs, "agent.stderr")}
	if err := x.startAgent(ctx, sp, in); err != nil {
		x.stopInstance()
		return nil, err
	}
	return x, nil
}

func (x *containerExecutor) startAgent(ctx context.Context, sp containerSpec, in apptainer.Instance) error {
	e := apptainer.Exec{Instance: in.Name, Env: containerEnv(sp, in), PrependPath: apptainer.AgentBin,
		Pwd: apptainer.WorkDir, Argv: []string{apptainer.AgentExe, "agent"}}
	// Not tied to ctx: the agent outlives the pilot's context so that
	// teardown.sh runs; close ends it.
	cmd := x.runner.Command(context.Background(), e)
	stderr, err := os.OpenFile(x.errLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("agent log: %w", err)
	}
	defer stderr.Close()
	cmd.Stderr = stderr
	if x.stdin, err = cmd.StdinPipe(); err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	// The agent forks the module's scripts: it passes on the slack it
	// inherits (internal/timerslack).
	timerslack.ForChild(func() { err = cmd.Start() })
	if err != nil {
		return fmt.Errorf("start agent in %s: %w", in.Image, err)
	}
	x.cmd = cmd
	dec := json.NewDecoder(bufio.NewReader(stdout))
	hello := make(chan error, 1)
	go func() {
		err := dec.Decode(&x.hello)
		spoke := err == nil
		if spoke {
			hello <- nil
			for {
				var resp response
				if err = dec.Decode(&resp); err != nil {
					break
				}
				x.answers <- resp
			}
		}
		// The agent is gone (or never spoke). Reap it first, so that
		// whoever sees it dead can tell how it ended.
		cmd.Wait()
		x.fail(err)
		close(x.exited)
		close(x.answers)
		if !spoke {
			hello <- err
		}
	}()
	select {
	case err := <-hello:
		if err != nil {
			<-x.exited
			return fmt.Errorf("agent in %s did not start: %s", in.Image, x.deathNote())
		}
		return nil
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		<-x.exited
		return fmt.Errorf("agent in %s did not answer within a minute: %s", in.Image, x.deathNote())
	case <-ctx.Done():
		cmd.Process.Kill()
		<-x.exited
		return ctx.Err()
	}
}

func (x *containerExecutor) fail(err error) {
	x.deadMu.Lock()
	if x.dead == nil {
		x.dead = err
	}
	x.deadMu.Unlock()
}

func (x *containerExecutor) broken() error {
	x.deadMu.Lock()
	defer x.deadMu.Unlock()
	if x.dead == nil {
		return nil
	}
	return fmt.Errorf("agent in %s died: %s", x.image, x.deathNote())
}

// deathNote is why the agent stopped, from its exit and its stderr.
func (x *containerExecutor) deathNote() string {
	var parts []string
	select {
	case <-x.exited: // reaped: its state is settled
		if x.cmd.ProcessState != nil {
			parts = append(parts, x.cmd.ProcessState.String())
		}
	default:
	}
	if data, err := os.ReadFile(x.errLog); err == nil {
		if s := lastLine(string(data)); s != "" {
			parts = append(parts, s)
		}
	}
	if len(parts) == 0 {
		return "no output"
	}
	return strings.Join(parts, ": ")
}

func (x *containerExecutor) dirs() slotDirs {
	return containerDirs
}

func (x *containerExecutor) script(name string) string { return x.hello.Scripts[name] }

func (x *containerExecutor) run(ctx context.Context, r request) response {
	x.mu.Lock()
	defer x.mu.Unlock()
	died := func() response {
		now := time.Now()
		return response{Result: Result{ExitCode: dataflow.ExitRuntime, Started: now, Ended: now, SystemErr: x.broken().Error()}}
	}
	if x.broken() != nil {
		return died()
	}
	line, err := json.Marshal(r)
	if err != nil {
		now := time.Now()
		return response{Result: Result{ExitCode: dataflow.ExitRuntime, Started: now, Ended: now, SystemErr: err.Error()}}
	}
	if _, err := x.stdin.Write(append(line, '\n')); err != nil {
		x.fail(err)
		return died()
	}
	select {
	case resp, ok := <-x.answers:
		if !ok {
			return died()
		}
		return resp
	case <-ctx.Done():
	}
	// The pilot is stopping: the agent stops the script and answers.
	x.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case resp, ok := <-x.answers:
		if !ok {
			return died()
		}
		return resp
	case <-time.After(10 * time.Second):
		x.cmd.Process.Kill()
		x.fail(errors.New("killed: no answer 10 s after SIGTERM"))
		return died()
	}
}

// close ends the agent (stdin closed), then the instance.
func (x *containerExecutor) close(ctx context.Context) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.stdin.Close()
	select {
	case <-x.exited:
	case <-time.After(10 * time.Second):
		x.cmd.Process.Kill()
		<-x.exited
	case <-ctx.Done():
		x.cmd.Process.Kill()
		<-x.exited
	}
	return x.stopInstance()
}

func (x *containerExecutor) stopInstance() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return x.runner.Stop(ctx, x.instance)
}
