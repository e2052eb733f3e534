package stagingtest

import (
	"context"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/scalebox-hpc/scalebox/slurm/slurmtest"
	"github.com/scalebox-hpc/scalebox/staging"
)

// defaultSSHDDir is where scripts/sshd.sh keeps keys when
// SCALEBOX_SFTP_* are not set.
const defaultSSHDDir = "/var/lib/scalebox-cluster/sshd"

// SFTP is the test site scripts/sshd.sh runs (`make cluster-up`): its
// URL and credentials, or a skip (a failure under SCALEBOX_TEST_REQUIRE)
// when it is not up.
func SFTP(t testing.TB) (staging.URL, staging.SFTPAuth) {
	t.Helper()
	raw := os.Getenv("SCALEBOX_SFTP_URL")
	if raw == "" {
		raw = "sftp://sbsftp@127.0.0.1:2222/home/sbsftp/data"
	}
	auth := staging.SFTPAuth{KeyFile: os.Getenv("SCALEBOX_SFTP_KEY"), HostKey: os.Getenv("SCALEBOX_SFTP_HOST_KEY")}
	if auth.KeyFile == "" {
		auth.KeyFile = defaultSSHDDir + "/client_ed25519"
	}
	if auth.HostKey == "" {
		if b, err := os.ReadFile(defaultSSHDDir + "/host_ed25519.pub"); err == nil {
			auth.HostKey = strings.TrimSpace(string(b))
		}
	}
	u, err := staging.ParseURL(raw)
	if err != nil {
		t.Fatal(err)
	}
	why := ""
	if auth.HostKey == "" {
		why = "no host key for the test sshd (scripts/sshd.sh up)"
	} else if s, err := staging.DialSFTP(context.Background(), u, auth); err != nil {
		why = err.Error()
	} else {
		s.Close()
	}
	slurmtest.Require(t, "sshd", why == "", why)
	return u, auth
}

// SFTPDir is a fresh directory on the test site, as a store, and its path
// on this machine (the test site is local); removed after the test.
func SFTPDir(t *testing.T) (staging.Store, string) {
	t.Helper()
	u, auth := SFTP(t)
	ctx := context.Background()
	root, err := staging.DialSFTP(ctx, u, auth)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	w, err := root.Append(ctx, name+"/.keep")
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	root.Close()
	sub := u
	sub.Path = path.Join(u.Path, name)
	s, err := staging.DialSFTP(ctx, sub, auth)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.RemoveAll(name); s.Close() })
	return s, sub.Path
}

// SFTPZstdDir is SFTPDir reached with ?compress=zstd.
func SFTPZstdDir(t *testing.T) (staging.Store, string) {
	t.Helper()
	_, dir := SFTPDir(t)
	u, auth := SFTP(t)
	u.Path, u.Compress = dir, staging.CompressZstd
	s, err := staging.Tiers{SFTP: auth}.OpenDir(context.Background(), u, dir, staging.Write)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}
