package templates

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPilotScript(t *testing.T) {
	p := Pilot{AppID: 7, AppName: "primes", Cluster: "ci", Pool: "main", Server: "https://head:7001",
		CertSHA256: strings.Repeat("ab", 32), TokenFile: "/shared/it's here/token", Binary: "/opt/scalebox/bin/scalebox",
		Output: "/shared/slurm-%j.out", Directives: []string{"--job-name=scalebox-primes-main", "--partition=debug", "--nodes=2"},
		TimeLimitSeconds: 120}
	s, err := PilotScript(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"#SBATCH --partition=debug\n", "#SBATCH --nodes=2\n", "--token-file '/shared/it'\\''s here/token'",
		"pilot --app 7 --job-id \"$SLURM_JOB_ID\" --cluster ci --pool main", "end=$((start + 120))"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	// #SBATCH lines must come before the first command or sbatch ignores them.
	if i, j := strings.LastIndex(s, "#SBATCH"), strings.Index(s, "set -u"); i > j {
		t.Errorf("#SBATCH after a command:\n%s", s)
	}
	f := filepath.Join(t.TempDir(), "pilot.sh")
	os.WriteFile(f, []byte(s), 0o600)
	if out, err := exec.Command("bash", "-n", f).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v: %s", err, out)
	}
	p.Pool = "a\nb"
	if _, err := PilotScript(p); err == nil {
		t.Fatal("newline in a value accepted")
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"abc": "abc", "": "''", "a b": "'a b'", "it's": `'it'\''s'`, "$(x)": "'$(x)'"} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
