package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalebox-hpc/scalebox/slurm/slurmtest"
)

// makeInstall runs `make install` into a fresh prefix.
func makeInstall(t *testing.T, prefix string) {
	t.Helper()
	cmd := exec.Command("make", "-C", filepath.Join("..", ".."), "install", "PREFIX="+prefix, "BIN="+filepath.Join(t.TempDir(), "scalebox"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []string{"bin/scalebox", "share/man/man1/scalebox.1", "share/bash-completion/completions/scalebox", "share/zsh/site-functions/_scalebox"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Errorf("make install did not write %s", f)
		}
	}
}

// `module load scalebox` with Debian's Lmod puts the installed binary on PATH.
func TestModuleLoadLmod(t *testing.T) {
	const initScript = "/usr/share/lmod/lmod/init/bash"
	_, err := os.Stat(initScript)
	slurmtest.Require(t, "lmod", err == nil, "no "+initScript+" (apt-get install lmod)")
	prefix := filepath.Join(t.TempDir(), "opt", "scalebox")
	makeInstall(t, prefix)
	out, err := exec.Command("bash", "--norc", "--noprofile", "-c", moduleLoadScript(initScript, prefix)).CombinedOutput()
	if err != nil {
		t.Fatalf("module load with Lmod: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), prefix+"/bin/scalebox") {
		t.Fatalf("scalebox on PATH is not the installed one:\n%s", out)
	}
	if !strings.Contains(string(out), "scalebox/") {
		t.Fatalf("module list does not show scalebox:\n%s", out)
	}
}

// `module load scalebox` with Debian's Environment Modules (Tcl). Debian
// makes lmod and environment-modules conflict, so this shell is the one of
// the trixie chroot, where scripts/cluster.sh installs it.
func TestModuleLoadEnvironmentModules(t *testing.T) {
	slurmtest.NeedCLI(t, slurmtest.Trixie)
	root := slurmtest.Trixie.Prefix[1]
	const initScript = "/usr/share/modules/init/bash"
	_, err := os.Stat(root + initScript)
	slurmtest.Require(t, "trixie", err == nil, "no "+initScript+" in the trixie chroot (scripts/cluster.sh deps trixie)")
	prefix := filepath.Join(slurmtest.Trixie.TempDir(t), "opt", "scalebox")
	makeInstall(t, prefix)
	cmd := exec.Command("chroot", root, "bash", "--norc", "--noprofile", "-c", moduleLoadScript(initScript, prefix))
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("module load with Environment Modules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), prefix+"/bin/scalebox") || !strings.Contains(string(out), "scalebox/") {
		t.Fatalf("module load did not put the installed scalebox on PATH:\n%s", out)
	}
}

// moduleLoadScript loads the installed modulefile with a module system's
// bash init script and shows which scalebox is on PATH.
func moduleLoadScript(initScript, prefix string) string {
	return `set -e
source ` + initScript + `
module use ` + prefix + `/modulefiles
module load scalebox
command -v scalebox
scalebox version
module list 2>&1
`
}
