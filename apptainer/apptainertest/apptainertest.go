// Package apptainertest gives tests a real Apptainer: it skips (or under
// SCALEBOX_TEST_REQUIRE fails) when Apptainer or busybox-static is not
// installed, and builds a busybox base image once per test process.
package apptainertest

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/scalebox-hpc/scalebox/apptainer"
	"github.com/scalebox-hpc/scalebox/slurm/slurmtest"
)

// Need skips or fails the test unless Apptainer and busybox-static are here.
func Need(t testing.TB) {
	t.Helper()
	why := ""
	if _, err := apptainer.Find(""); err != nil {
		why = err.Error()
	} else if _, err := exec.LookPath("busybox"); err != nil {
		why = "busybox-static is not installed (scripts/apptainer.sh install)"
	}
	slurmtest.Require(t, "apptainer", why == "", why)
}

var (
	baseOnce sync.Once
	basePath string
	baseErr  string
)

// BaseImage is a busybox-static SIF (scripts/apptainer.sh base) whose
// /etc/os-release names "Scalebox busybox", built once.
func BaseImage(t testing.TB) string {
	t.Helper()
	Need(t)
	baseOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", "scripts", "apptainer.sh")
		dir, err := os.MkdirTemp("", "scalebox-images-")
		if err != nil {
			baseErr = err.Error()
			return
		}
		basePath = filepath.Join(dir, "busybox.sif")
		if out, err := exec.Command("bash", script, "base", basePath).CombinedOutput(); err != nil {
			baseErr = err.Error() + "\n" + string(out)
		}
	})
	if baseErr != "" {
		t.Fatalf("base image: %s", baseErr)
	}
	return basePath
}
