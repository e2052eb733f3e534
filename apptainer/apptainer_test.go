package apptainer

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestStartArgs(t *testing.T) {
	img := filepath.Join(t.TempDir(), "m.sif")
	os.WriteFile(img, []byte("x"), 0o644)
	tests := []struct {
		name string
		in   Instance
		want []string
	}{
		{"plain", Instance{Name: "s1", Image: img}, []string{"instance", "start", "--cleanenv", img, "s1"}},
		{"contained with binds", Instance{Name: "s1", Image: img, Contain: true, Binds: []Bind{{"/code", "/app/bin", true}, {"/w", "/work", false}}},
			[]string{"instance", "start", "--contain", "--cleanenv", "--bind", "/code:/app/bin:ro", "--bind", "/w:/work", img, "s1"}},
		{"nvidia", Instance{Name: "g", Image: img, GPU: GPUNvidia}, []string{"instance", "start", "--cleanenv", "--nv", img, "g"}},
		{"amd", Instance{Name: "g", Image: img, GPU: GPUAMD}, []string{"instance", "start", "--cleanenv", "--rocm", img, "g"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.in.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := tt.in.StartArgs(); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("StartArgs() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	img := filepath.Join(t.TempDir(), "m.sif")
	os.WriteFile(img, []byte("x"), 0o644)
	tests := []struct {
		name string
		in   Instance
		want string
	}{
		{"missing image", Instance{Name: "a", Image: "/no/such.sif"}, "no such file"},
		{"bad name", Instance{Name: "a/b", Image: img}, "instance name"},
		{"relative bind", Instance{Name: "a", Image: img, Binds: []Bind{{"/x", "rel", false}}}, "must be absolute"},
		{"comma in bind", Instance{Name: "a", Image: img, Binds: []Bind{{"/x,y", "/y", false}}}, "may not contain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.in.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestExecArgs(t *testing.T) {
	e := Exec{Instance: "s1", Env: map[string]string{"B": "2", "A": "1", "LIST": "x,y", "ML": "a\nb"}, PrependPath: AgentBin, Pwd: WorkDir,
		Argv: []string{AgentExe, "agent"}}
	args, env := e.Args()
	want := []string{"exec", "--cleanenv", "--pwd", "/work", "--env", "A=1", "--env", "B=2", "--env", "PREPEND_PATH=/.scalebox/bin",
		"instance://s1", "/.scalebox/bin/scalebox", "agent"}
	if !reflect.DeepEqual(args, want) {
		t.Errorf("args = %q\nwant   %q", args, want)
	}
	// --env splits on commas: such values travel in the environment.
	if wantEnv := []string{"APPTAINERENV_LIST=x,y", "APPTAINERENV_ML=a\nb"}; !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("env = %q, want %q", env, wantEnv)
	}
}

func TestDeviceEnv(t *testing.T) {
	tests := []struct {
		in      Instance
		k, v    string
		present bool
	}{
		{Instance{GPU: GPUNvidia, Devices: []int{2, 3}}, "CUDA_VISIBLE_DEVICES", "2,3", true},
		{Instance{GPU: GPUAMD, Devices: []int{1}}, "ROCR_VISIBLE_DEVICES", "1", true},
		{Instance{GPU: GPUNvidia}, "", "", false},
		{Instance{Devices: []int{1}}, "", "", false},
	}
	for _, tt := range tests {
		k, v, ok := tt.in.DeviceEnv()
		if k != tt.k || v != tt.v || ok != tt.present {
			t.Errorf("%+v: DeviceEnv() = %q %q %v, want %q %q %v", tt.in, k, v, ok, tt.k, tt.v, tt.present)
		}
	}
}

func TestParseGPU(t *testing.T) {
	for in, want := range map[string]GPU{"": GPUNvidia, "NVIDIA": GPUNvidia, "cuda": GPUNvidia, "amd": GPUAMD, "rocm": GPUAMD} {
		if got, err := ParseGPU(in); err != nil || got != want {
			t.Errorf("ParseGPU(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseGPU("tpu"); err == nil {
		t.Error("ParseGPU(tpu) accepted")
	}
}

func TestFind(t *testing.T) {
	t.Setenv(EnvBinary, "")
	t.Setenv("PATH", t.TempDir())
	if _, err := Find(""); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), EnvBinary) {
		t.Errorf("Find with no apptainer: %v; want ErrNotFound naming $%s", err, EnvBinary)
	}
	if _, err := Find("/no/such/apptainer"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Find(/no/such/apptainer) = %v", err)
	}
	exe := filepath.Join(t.TempDir(), "apptainer")
	os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755)
	if got, err := Find(exe); err != nil || got != exe {
		t.Errorf("Find(%s) = %q, %v", exe, got, err)
	}
}

func TestInspectNotSIF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.sif")
	os.WriteFile(p, []byte("not a sif"), 0o644)
	if _, err := Inspect(p); !errors.Is(err, ErrNotSIF) {
		t.Errorf("Inspect(text file) = %v, want ErrNotSIF", err)
	}
	if _, err := Inspect(t.TempDir()); !errors.Is(err, ErrNotSIF) {
		t.Errorf("Inspect(dir) = %v, want ErrNotSIF", err)
	}
}

func TestDecodeLabels(t *testing.T) {
	md := &Metadata{Labels: map[string]string{LabelRun: "/app/bin/go.sh", LabelCheck: "relative.sh", LabelMaxSeconds: "x",
		LabelEnvPrefix + "GROUP": "10", LabelModule: "calc"}}
	md.decode()
	if md.Module != "calc" || md.Scripts["run.sh"] != "/app/bin/go.sh" || md.Env["GROUP"] != "10" {
		t.Errorf("decoded %+v", md)
	}
	if len(md.Problems) != 2 {
		t.Errorf("problems %q, want the relative check.sh and the bad task_max_seconds", md.Problems)
	}
}
