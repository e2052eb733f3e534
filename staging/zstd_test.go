package staging_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/scalebox-hpc/scalebox/staging"
	"github.com/scalebox-hpc/scalebox/staging/stagingtest"
)

func TestSFTPZstdStoreConformance(t *testing.T) {
	stagingtest.Conformance(t, stagingtest.SFTPZstdDir)
}

// text is compressible data: numbered lines, as a catalogue would be.
func text(n int) []byte {
	var b strings.Builder
	for i := 0; b.Len() < n; i++ {
		b.WriteString("source ")
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(" flux 1.2345 ra 187.70593 dec 12.39112\n")
	}
	return []byte(b.String()[:n])
}

// A compressed download and upload, each cut half-way and run again: they
// resume from the verified chunks, the results verify, and the link
// carried far fewer bytes than the files hold.
func TestSFTPZstdCopiesResume(t *testing.T) {
	ctx := context.Background()
	remote, _ := stagingtest.SFTPZstdDir(t)
	local, dir := openDir(t)
	data := text(4*staging.ChunkSize + 777)
	stagingtest.Put(t, remote, "cat.txt", data)

	cut := int64(2*staging.ChunkSize + 5000)
	if _, err := staging.Copy(ctx, failingStore{remote, cut}, "cat.txt", local, "cat.txt", nil); !errors.Is(err, errCut) {
		t.Fatalf("cut download: %v", err)
	}
	before := staging.ZstdWireBytes(remote)
	res, err := staging.Copy(ctx, remote, "cat.txt", local, "cat.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 2*staging.ChunkSize || res.Bytes != int64(len(data))-2*staging.ChunkSize {
		t.Errorf("download resumed %d, fetched %d; want 2 chunks kept and the rest fetched", res.Resumed, res.Bytes)
	}
	if res.Verified != staging.VerifiedAgainstSource {
		t.Errorf("download verified %q, want %q", res.Verified, staging.VerifiedAgainstSource)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "cat.txt")); stagingtest.SHA256(got) != stagingtest.SHA256(data) {
		t.Fatal("the compressed download differs from the source")
	}
	t.Logf("download: resumed %d, fetched %d, %d bytes on the wire", res.Resumed, res.Bytes, staging.ZstdWireBytes(remote)-before)
	if wire := staging.ZstdWireBytes(remote) - before; wire <= 0 || wire > res.Bytes/4 {
		t.Errorf("the resumed download moved %d compressed bytes for %d bytes of text; want it compressed", wire, res.Bytes)
	}

	if _, err := staging.Copy(ctx, failingStore{local, cut}, "cat.txt", remote, "up/cat.txt", nil); !errors.Is(err, errCut) {
		t.Fatalf("cut upload: %v", err)
	}
	if _, err := remote.Stat(ctx, "up/cat.txt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a partial upload is visible under the final name: %v", err)
	}
	before = staging.ZstdWireBytes(remote)
	res, err = staging.Copy(ctx, local, "cat.txt", remote, "up/cat.txt", nil)
	if err != nil {
		t.Fatal(err)
	}
	// The site had decoded all it was sent before the cut, so at least
	// the first chunk is kept; the rest is sent again.
	if res.Resumed < staging.ChunkSize || res.Resumed+res.Bytes != int64(len(data)) {
		t.Errorf("upload resumed %d, sent %d; want at least a chunk kept and the rest sent", res.Resumed, res.Bytes)
	}
	if res.Verified != staging.VerifiedBySite {
		t.Errorf("upload verified %q, want %q", res.Verified, staging.VerifiedBySite)
	}
	t.Logf("upload: resumed %d, sent %d, %d bytes on the wire", res.Resumed, res.Bytes, staging.ZstdWireBytes(remote)-before)
	if wire := staging.ZstdWireBytes(remote) - before; wire <= 0 || wire > res.Bytes/4 {
		t.Errorf("the upload moved %d compressed bytes for %d bytes of text; want it compressed", wire, res.Bytes)
	}
	if got := stagingtest.Read(t, remote, "up/cat.txt", 0); stagingtest.SHA256([]byte(got)) != stagingtest.SHA256(data) {
		t.Fatal("the compressed upload differs from the source")
	}
}

func TestParseURLCompress(t *testing.T) {
	u, err := staging.ParseURL("sftp://me@site:2022/data/x.bin?compress=zstd")
	if err != nil || u.Compress != staging.CompressZstd || u.Path != "/data/x.bin" {
		t.Fatalf("ParseURL: %+v, %v", u, err)
	}
	if got := u.String(); got != "sftp://me@site:2022/data/x.bin?compress=zstd" {
		t.Errorf("String() = %q", got)
	}
	for raw, want := range map[string]string{
		"sftp://me@site/x?compress=gzip":               "the one compression is compress=zstd",
		"sftp://me@site/x?mode=fast":                   `unknown parameter "mode"`,
		"sftp://me@site/x?compress=zstd&compress=zstd": "the one compression",
	} {
		if _, err := staging.ParseURL(raw); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseURL(%q) = %v, want an error saying %q", raw, err, want)
		}
	}
}

// A site command that fails part-way is an error, not a short file: the
// site's zstd would end its frame normally on the bytes it got.
func TestSFTPZstdReadFailureOnTheSiteIsAnError(t *testing.T) {
	remote, dir := stagingtest.SFTPZstdDir(t)
	stagingtest.Put(t, remote, "locked.bin", stagingtest.Pattern(1000))
	// The site is this machine: take its user's read permission away.
	if err := os.Chmod(filepath.Join(dir, "locked.bin"), 0); err != nil {
		t.Fatal(err)
	}
	r, err := remote.Open(context.Background(), "locked.bin", 0)
	if err == nil {
		_, err = io.ReadAll(r)
		r.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "reading the file failed") {
		t.Fatalf("reading an unreadable file compressed: %v; want the site's failure", err)
	}
}

func TestJoinURL(t *testing.T) {
	for _, tc := range []struct{ base, rel, want, err string }{
		{"sftp://me@site:22/data", "a/b.txt", "sftp://me@site:22/data/a/b.txt", ""},
		{"sftp://me@site:22/data/?compress=zstd", "a/b.txt", "sftp://me@site:22/data/a/b.txt?compress=zstd", ""},
		{"file:///shared/in/", "x", "file:///shared/in/x", ""},
		{"local:cache", "x", "local:cache/x", ""},
		{"sftp://me@site:22/data?compress=zstd", "../etc/passwd", "", `".." is not allowed`},
	} {
		u, err := staging.JoinURL(tc.base, tc.rel)
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("JoinURL(%q, %q) = %v, %v; want an error saying %q", tc.base, tc.rel, u, err, tc.err)
			}
		case err != nil || u.String() != tc.want:
			t.Errorf("JoinURL(%q, %q) = %v, %v; want %s", tc.base, tc.rel, u, err, tc.want)
		}
	}
}
