package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/staging/stagingtest"
)

// `scalebox stage cp` between tiers, over the real sshd, and a refused
// URL.
func TestStageCopy(t *testing.T) {
	u, auth := stagingtest.SFTP(t)
	src := filepath.Join(t.TempDir(), "in.bin")
	data := stagingtest.Pattern(3<<20 + 17)
	os.WriteFile(src, data, 0o644)
	local := t.TempDir()
	t.Setenv("SCALEBOX_LOCAL_ROOT", local)
	remote := u.String() + "/" + strings.ReplaceAll(t.Name(), "/", "_") + "/in.bin"
	for _, hop := range [][2]string{{"file://" + src, remote}, {remote, "local:copies/in.bin"}} {
		r := sb(t, time.Minute, "stage", "cp", "--json", "--key", auth.KeyFile, "--host-key", auth.HostKey, hop[0], hop[1])
		var res struct {
			Size   int64  `json:"size"`
			SHA256 string `json:"sha256"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &res) != nil {
			t.Fatalf("stage cp %s %s: exit %d\n%s%s", hop[0], hop[1], r.code, r.stdout, r.stderr)
		}
		if res.Size != int64(len(data)) || res.SHA256 != stagingtest.SHA256(data) {
			t.Fatalf("stage cp %s %s: %+v", hop[0], hop[1], res)
		}
	}
	got, err := os.ReadFile(filepath.Join(local, "copies", "in.bin"))
	if err != nil || stagingtest.SHA256(got) != stagingtest.SHA256(data) {
		t.Fatalf("the file that made the round trip differs: %v", err)
	}
	r := sb(t, time.Minute, "stage", "cp", "file://"+src, "local:a/../../escape")
	if r.code != exitUsage || !strings.Contains(r.stderr, `".." is not allowed`) {
		t.Errorf("a URL with .. : exit %d, %s", r.code, r.stderr)
	}
}
