// Package apptainer runs module containers with Apptainer: the argv of
// `instance start`, `exec instance://` and `instance stop` built from a
// module's definition, the commands themselves, and the metadata (labels)
// read from SIF images. Nothing here knows about tasks; the pilot starts an
// instance per slot and runs its agent inside.
package apptainer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Paths inside every module container. The slot's directories and the
// static scalebox binary are bound there, so scripts see the same layout on
// every node whatever the host paths are.
const (
	AppBin    = "/app/bin"   // the module's code_path
	WorkDir   = "/work"      // the slot's private work dir (WORK_DIR)
	LocalTmp  = "/local/tmp" // node-local disk tier for the slot (LOCAL_TMPDIR)
	LocalShm  = "/local/shm" // RAM tier for the slot (LOCAL_SHMDIR)
	AgentDir  = "/.scalebox" // the agent's files: binary, token, logs
	AgentBin  = AgentDir + "/bin"
	AgentExe  = AgentBin + "/scalebox"
	SlotDir   = AgentDir + "/slot"  // stdout/stderr files of the last task
	TokenPath = AgentDir + "/token" // the server token, read-only
	SockPath  = AgentDir + "/server.sock"
)

// EnvBinary names the apptainer executable when it is not on PATH.
const EnvBinary = "SCALEBOX_APPTAINER"

// ErrNotFound says Apptainer is not installed where we looked.
var ErrNotFound = errors.New("apptainer not found")

// Find returns the apptainer executable: path if given, else
// $SCALEBOX_APPTAINER, else apptainer on PATH.
func Find(path string) (string, error) {
	if path == "" {
		path = os.Getenv(EnvBinary)
	}
	if path == "" {
		p, err := exec.LookPath("apptainer")
		if err != nil {
			return "", fmt.Errorf("%w on PATH: install Apptainer (scripts/apptainer.sh install) or set $%s to its path", ErrNotFound, EnvBinary)
		}
		return p, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrNotFound, path, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%w: %s is not an executable file", ErrNotFound, path)
	}
	return path, nil
}

// Bind is one bind mount.
type Bind struct {
	Host, Container string
	ReadOnly        bool
}

func (b Bind) String() string {
	s := b.Host + ":" + b.Container
	if b.ReadOnly {
		s += ":ro"
	}
	return s
}

// GPU says which GPU runtime a container gets.
type GPU string

const (
	GPUNone   GPU = ""
	GPUNvidia GPU = "nvidia" // --nv, devices chosen by CUDA_VISIBLE_DEVICES
	GPUAMD    GPU = "amd"    // --rocm, devices chosen by ROCR_VISIBLE_DEVICES
)

// ParseGPU reads a module's gpu_type.
func ParseGPU(s string) (GPU, error) {
	switch strings.ToLower(s) {
	case "", "nvidia", "cuda", "nv":
		return GPUNvidia, nil
	case "amd", "rocm":
		return GPUAMD, nil
	}
	return GPUNone, fmt.Errorf("gpu_type %q: want nvidia or amd", s)
}

// Instance is what a slot's container is started with.
type Instance struct {
	Name  string
	Image string
	Binds []Bind
	// Contain gives the container its own /tmp, /dev and no $HOME from the
	// host: a module sees only what is bound.
	Contain bool
	GPU     GPU
	// Devices are the GPU indices this slot may use (empty: all).
	Devices []int
}

// Validate reports what would make `instance start` fail for a reason we
// can name better than Apptainer does.
func (in Instance) Validate() error {
	if in.Name == "" || strings.ContainsAny(in.Name, "/ \t\n") {
		return fmt.Errorf("instance name %q: want a non-empty name without slashes or spaces", in.Name)
	}
	if in.Image == "" {
		return errors.New("no image")
	}
	if _, err := os.Stat(in.Image); err != nil {
		return fmt.Errorf("image %s: %w", in.Image, err)
	}
	for _, b := range in.Binds {
		if !filepath.IsAbs(b.Container) {
			return fmt.Errorf("bind %s: container path must be absolute", b)
		}
		if strings.ContainsAny(b.Host+b.Container, ",:") {
			// Apptainer splits --bind values on both.
			return fmt.Errorf("bind %s: paths may not contain ',' or ':'", b)
		}
	}
	return nil
}

// StartArgs is the argv (after the apptainer executable) that starts in.
func (in Instance) StartArgs() []string {
	args := []string{"instance", "start"}
	if in.Contain {
		args = append(args, "--contain")
	}
	args = append(args, "--cleanenv")
	switch in.GPU {
	case GPUNvidia:
		args = append(args, "--nv")
	case GPUAMD:
		args = append(args, "--rocm")
	}
	for _, b := range in.Binds {
		args = append(args, "--bind", b.String())
	}
	return append(args, in.Image, in.Name)
}

// DeviceEnv is the variable that restricts a container to its devices.
func (in Instance) DeviceEnv() (string, string, bool) {
	if len(in.Devices) == 0 {
		return "", "", false
	}
	ids := make([]string, len(in.Devices))
	for i, d := range in.Devices {
		ids[i] = fmt.Sprint(d)
	}
	switch in.GPU {
	case GPUNvidia:
		return "CUDA_VISIBLE_DEVICES", strings.Join(ids, ","), true
	case GPUAMD:
		return "ROCR_VISIBLE_DEVICES", strings.Join(ids, ","), true
	}
	return "", "", false
}

// Exec is one process started in a running instance.
type Exec struct {
	Instance string
	// Env is set inside the container over the image's own environment.
	Env map[string]string
	// PrependPath goes in front of the image's PATH.
	PrependPath string
	Pwd         string
	Argv        []string
}

// Args is the argv (after the apptainer executable) and the environment
// additions of the apptainer process. `--env` splits its value on commas,
// so a value with a comma or a newline travels as APPTAINERENV_NAME in the
// environment instead, which Apptainer passes through unchanged.
func (e Exec) Args() (args []string, env []string) {
	args = []string{"exec", "--cleanenv"}
	if e.Pwd != "" {
		args = append(args, "--pwd", e.Pwd)
	}
	keys := make([]string, 0, len(e.Env))
	for k := range e.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := e.Env[k]
		if strings.ContainsAny(v, ",\n") {
			env = append(env, "APPTAINERENV_"+k+"="+v)
			continue
		}
		args = append(args, "--env", k+"="+v)
	}
	if e.PrependPath != "" {
		args = append(args, "--env", "PREPEND_PATH="+e.PrependPath)
	}
	args = append(args, "instance://"+e.Instance)
	return append(args, e.Argv...), env
}

// StopArgs stops an instance. SIGTERM first; apptainer kills what is left
// after its own timeout.
func StopArgs(name string) []string { return []string{"instance", "stop", name} }

// Runner runs apptainer commands.
type Runner struct {
	Binary string
}

// Start starts the instance and returns once it runs.
func (r Runner) Start(ctx context.Context, in Instance) error {
	if err := in.Validate(); err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	out, err := exec.CommandContext(ctx, r.Binary, in.StartArgs()...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("apptainer instance start %s: %w: %s", in.Image, err, lastLines(string(out), 3))
	}
	return nil
}

// Stop stops the instance.
func (r Runner) Stop(ctx context.Context, name string) error {
	out, err := exec.CommandContext(ctx, r.Binary, StopArgs(name)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("apptainer instance stop %s: %w: %s", name, err, lastLines(string(out), 3))
	}
	return nil
}

// Command is the exec.Cmd of e; the caller wires its stdio and starts it.
func (r Runner) Command(ctx context.Context, e Exec) *exec.Cmd {
	args, env := e.Args()
	cmd := exec.CommandContext(ctx, r.Binary, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
