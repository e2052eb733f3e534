package pilot

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/scalebox-hpc/scalebox/apptainer"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

func TestSlotDevices(t *testing.T) {
	tests := []struct {
		visible     []int
		index, n    int
		want        []int
		description string
	}{
		{[]int{0, 1, 2, 3}, 0, 1, []int{0}, "slot 0 of one GPU each"},
		{[]int{0, 1, 2, 3}, 3, 1, []int{3}, "slot 3"},
		{[]int{0, 1, 2, 3}, 1, 2, []int{2, 3}, "two per slot"},
		{[]int{4, 5}, 2, 1, []int{4}, "more slots than GPUs wrap around"},
		{nil, 0, 1, nil, "no visible GPUs: all of them"},
		{[]int{0}, 0, 0, nil, "no GPUs asked"},
	}
	for _, tt := range tests {
		if got := slotDevices(tt.visible, tt.index, tt.n); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: slotDevices(%v, %d, %d) = %v, want %v", tt.description, tt.visible, tt.index, tt.n, got, tt.want)
		}
	}
}

func TestGPUOf(t *testing.T) {
	tests := []struct {
		args map[string]string
		gpu  apptainer.GPU
		n    int
		err  bool
	}{
		{nil, apptainer.GPUNone, 0, false},
		{map[string]string{"gpus": "2"}, apptainer.GPUNvidia, 2, false},
		{map[string]string{"gpus": "1", "gpu_type": "amd"}, apptainer.GPUAMD, 1, false},
		{map[string]string{"gpus": "x"}, apptainer.GPUNone, 0, true},
		{map[string]string{"gpus": "1", "gpu_type": "tpu"}, apptainer.GPUNone, 0, true},
	}
	for _, tt := range tests {
		g, n, err := gpuOf(&dataflow.Module{Name: "m", Arguments: tt.args})
		if g != tt.gpu || n != tt.n || (err != nil) != tt.err {
			t.Errorf("gpuOf(%v) = %q %d %v", tt.args, g, n, err)
		}
	}
}

func TestInstanceFor(t *testing.T) {
	m := &dataflow.Module{Name: "calc x", BaseImage: "/img/calc.sif", CodePath: "/code",
		Arguments: map[string]string{"gpus": "1"}, Volumes: []dataflow.Volume{{Host: "/data", Container: "/data", ReadOnly: true}}}
	sp := containerSpec{appID: 3, pilotID: 7, index: 1, module: m, server: "unix:///state/scalebox.sock", tokenFile: "/state/token",
		host: slotDirs{Work: "/w/work", Tmp: "/w/tmp", Shm: "/dev/shm/x", Logs: "/w"}, devices: []int{5},
		env: map[string]string{"WORK_DIR": apptainer.WorkDir}}
	in, err := instanceFor(sp, "/bin/scalebox-static")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(in.Name, "sbx-3-7-calc_x-1-") || in.GPU != apptainer.GPUNvidia || !in.Contain {
		t.Errorf("instance %+v", in)
	}
	other := sp
	other.host.Logs = "/other-pilot/w"
	if again, _ := instanceFor(other, "/bin/scalebox-static"); again.Name == in.Name {
		t.Errorf("two pilots' slots with the same ids share the instance name %s", in.Name)
	}
	var binds []string
	for _, b := range in.Binds {
		binds = append(binds, b.String())
	}
	want := []string{"/code:/app/bin:ro", "/w:/.scalebox/slot", "/w/work:/work", "/w/tmp:/local/tmp", "/dev/shm/x:/local/shm",
		"/bin/scalebox-static:/.scalebox/bin/scalebox:ro", "/state/token:/.scalebox/token:ro", "/state/scalebox.sock:/.scalebox/server.sock", "/data:/data:ro"}
	if !reflect.DeepEqual(binds, want) {
		t.Errorf("binds\n%q\nwant\n%q", binds, want)
	}
	env := containerEnv(sp, in)
	if env["SCALEBOX_SERVER"] != "unix:///.scalebox/server.sock" || env["SCALEBOX_TOKEN_FILE"] != apptainer.TokenPath || env["CUDA_VISIBLE_DEVICES"] != "5" {
		t.Errorf("env %v", env)
	}
}

func TestAgentBinaryMustBeStatic(t *testing.T) {
	exe, _ := os.Executable() // the test binary links libc dynamically (cgo SQLite)
	if _, err := agentBinary(exe); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Skipf("test binary %s is static here (%v)", exe, err)
	}
	if _, err := agentBinary(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("a missing agent binary was accepted")
	}
}
