package staging_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/staging"
	"github.com/scalebox-hpc/scalebox/staging/stagingtest"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		in   string
		want staging.URL
		err  string
	}{
		{in: "file:///shared/run1/a.fits", want: staging.URL{Scheme: "file", Path: "/shared/run1/a.fits"}},
		{in: "file:///shared//x/./y", want: staging.URL{Scheme: "file", Path: "/shared/x/y"}},
		{in: "local:cache/a.fits", want: staging.URL{Scheme: "local", Path: "cache/a.fits"}},
		{in: "mem:/x", want: staging.URL{Scheme: "mem", Path: "x"}},
		{in: "sftp://obs@archive.example.org:2222/data/a.fits", want: staging.URL{Scheme: "sftp", User: "obs", Host: "archive.example.org", Port: 2222, Path: "/data/a.fits"}},
		{in: "sftp://obs@10.0.0.1/d", want: staging.URL{Scheme: "sftp", User: "obs", Host: "10.0.0.1", Port: 22, Path: "/d"}},
		{in: "file:///shared/../etc/passwd", err: `".." is not allowed`},
		{in: "local:a/../../b", err: `".." is not allowed`},
		{in: "sftp://u@h/a/../../b", err: `".." is not allowed`},
		{in: "file://relative/path", err: "name no host"},
		{in: "file:relative", err: "file:///absolute"},
		{in: "sftp://h/path", err: "user@host"},
		{in: "sftp://u:secret@h/p", err: "passwords"},
		{in: "sftp://u@h:99999/p", err: "port"},
		{in: "http://x/y", err: "unknown scheme"},
		{in: "nocolon", err: "want file://"},
	}
	for _, tt := range tests {
		got, err := staging.ParseURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseURL(%q) = %+v, %v; want an error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func TestURLRel(t *testing.T) {
	u, _ := staging.ParseURL("file:///shared/run/a")
	if rel, err := u.Rel("/shared"); err != nil || rel != "run/a" {
		t.Errorf("Rel(/shared) = %q, %v", rel, err)
	}
	if _, err := u.Rel("/sharedx"); err == nil {
		t.Error("a path outside the root was given a relative name")
	}
	if _, err := u.Rel("/shared/run/a/b"); err == nil {
		t.Error("a parent of the root was accepted")
	}
}

func openDir(t *testing.T) (staging.Store, string) {
	dir := t.TempDir()
	s, err := staging.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestDirStoreConformance(t *testing.T) { stagingtest.Conformance(t, openDir) }

// failingStore ends reads of the source after limit bytes, as a dropped
// connection or a killed process would.
type failingStore struct {
	staging.Store
	limit int64
}

type cutReader struct {
	io.ReadCloser
	left int64
}

var errCut = errors.New("connection dropped")

func (r *cutReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, errCut
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.ReadCloser.Read(p)
	r.left -= int64(n)
	return n, err
}

func (s failingStore) Open(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	return openWrapped(ctx, s.Store, name, off, func(r io.ReadCloser) io.ReadCloser { return &cutReader{ReadCloser: r, left: s.limit} })
}

// openWrapped opens name in s and hands the reader to wrap: the test
// stores that play a misbehaving source differ only in their reader.
func openWrapped(ctx context.Context, s staging.Store, name string, off int64, wrap func(io.ReadCloser) io.ReadCloser) (io.ReadCloser, error) {
	r, err := s.Open(ctx, name, off)
	if err != nil {
		return nil, err
	}
	return wrap(r), nil
}

// A copy cut half-way resumes from its verified chunks, reads only the
// rest from the source, and the result verifies; nothing appears under
// the final name until then.
func TestCopyResumes(t *testing.T) {
	ctx := context.Background()
	src, _ := openDir(t)
	dst, dstDir := openDir(t)
	data := stagingtest.Pattern(5*staging.ChunkSize + 777)
	stagingtest.Put(t, src, "big.bin", data)
	cut := int64(2*staging.ChunkSize + staging.ChunkSize/2)
	_, err := staging.Copy(ctx, failingStore{src, cut}, "big.bin", dst, "big.bin", nil)
	if !errors.Is(err, errCut) {
		t.Fatalf("cut copy: %v, want the read error", err)
	}
	if _, err := os.Stat(filepath.Join(dstDir, "big.bin")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a partial file is visible under the final name: %v", err)
	}
	res, err := staging.Copy(ctx, src, "big.bin", dst, "big.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 2*staging.ChunkSize || res.Bytes != int64(len(data))-res.Resumed {
		t.Errorf("resumed %d and read %d bytes; want 2 chunks kept and only the rest read", res.Resumed, res.Bytes)
	}
	sum := sha256.Sum256(data)
	if res.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("SHA-256 %s, want %x", res.SHA256, sum)
	}
	got, _ := os.ReadFile(filepath.Join(dstDir, "big.bin"))
	if string(got) != string(data) {
		t.Fatal("resumed copy differs from the source")
	}
}

// A recorded chunk that no longer matches is not trusted: the copy
// restarts from the last good chunk.
func TestCopyRechecksResumedChunks(t *testing.T) {
	ctx := context.Background()
	src, _ := openDir(t)
	dst, dstDir := openDir(t)
	data := stagingtest.Pattern(3*staging.ChunkSize + 5)
	stagingtest.Put(t, src, "f", data)
	staging.Copy(ctx, failingStore{src, 2*staging.ChunkSize + 10}, "f", dst, "f", nil)
	part := filepath.Join(dstDir, staging.PartName("f"))
	f, err := os.OpenFile(part, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("corrupt"), staging.ChunkSize+100) // inside chunk 2 of 2 recorded
	f.Close()
	res, err := staging.Copy(ctx, src, "f", dst, "f", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != staging.ChunkSize {
		t.Errorf("resumed %d bytes, want only the first (intact) chunk", res.Resumed)
	}
	got, _ := os.ReadFile(filepath.Join(dstDir, "f"))
	if string(got) != string(data) {
		t.Fatal("copy differs from the source")
	}
}

// A source that changed since the part was written starts over.
func TestCopyRestartsWhenSourceChanged(t *testing.T) {
	ctx := context.Background()
	src, srcDir := openDir(t)
	dst, _ := openDir(t)
	stagingtest.Put(t, src, "f", stagingtest.Pattern(2*staging.ChunkSize+1))
	staging.Copy(ctx, failingStore{src, staging.ChunkSize + 1}, "f", dst, "f", nil)
	data := append(stagingtest.Pattern(2*staging.ChunkSize+1), 'x')
	os.WriteFile(filepath.Join(srcDir, "f"), data, 0o644)
	res, err := staging.Copy(ctx, src, "f", dst, "f", nil)
	if err != nil || res.Resumed != 0 || res.Bytes != int64(len(data)) {
		t.Fatalf("copy after the source changed: %+v, %v; want a full copy", res, err)
	}
}

func TestSFTPStoreConformance(t *testing.T) {
	stagingtest.Conformance(t, stagingtest.SFTPDir)
}

// Kill a large sftp download half-way and run it again: it resumes and
// fetches only the rest, and the result verifies.
func TestSFTPDownloadResumes(t *testing.T) {
	ctx := context.Background()
	remote, _ := stagingtest.SFTPDir(t)
	local, dir := openDir(t)
	data := stagingtest.Pattern(6*staging.ChunkSize + 4321)
	stagingtest.Put(t, remote, "big.bin", data)
	cut := int64(3*staging.ChunkSize + 1000)
	if _, err := staging.Copy(ctx, failingStore{remote, cut}, "big.bin", local, "big.bin", nil); !errors.Is(err, errCut) {
		t.Fatalf("cut download: %v", err)
	}
	res, err := staging.Copy(ctx, remote, "big.bin", local, "big.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 3*staging.ChunkSize || res.Bytes != int64(len(data))-3*staging.ChunkSize {
		t.Errorf("resumed %d, fetched %d bytes; want 3 chunks kept and only the rest fetched", res.Resumed, res.Bytes)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "big.bin"))
	if stagingtest.SHA256(got) != stagingtest.SHA256(data) || res.SHA256 != stagingtest.SHA256(data) {
		t.Fatal("the resumed download does not verify")
	}
	if res.Verified != staging.VerifiedAgainstSource {
		t.Errorf("download verified %q, want %q", res.Verified, staging.VerifiedAgainstSource)
	}
}

// flippingStore serves its files with one byte changed, as the source
// would have been read had it been different then.
type flippingStore struct {
	staging.Store
	at int64
}

type flippingReader struct {
	io.ReadCloser
	off, at int64
}

func (r *flippingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if i := r.at - r.off; i >= 0 && i < int64(n) {
		p[i] ^= 0xff
	}
	r.off += int64(n)
	return n, err
}

func (s flippingStore) Open(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	return openWrapped(ctx, s.Store, name, off, func(r io.ReadCloser) io.ReadCloser { return &flippingReader{ReadCloser: r, off: off, at: s.at} })
}

// A download cut while the source held other bytes, resumed once it holds
// these under the same size and mtime: every kept chunk still matches its
// recorded hash, and so would the whole file's hash of what arrived. The
// site's hash of the source refuses it, and the next try starts over.
func TestSFTPResumedDownloadOfAChangedSourceRefused(t *testing.T) {
	ctx := context.Background()
	remote, _ := stagingtest.SFTPDir(t)
	local, dir := openDir(t)
	data := stagingtest.Pattern(4*staging.ChunkSize + 11)
	stagingtest.Put(t, remote, "big.bin", data)
	then := flippingStore{remote, staging.ChunkSize + 7}
	if _, err := staging.Copy(ctx, failingStore{then, 2*staging.ChunkSize + 100}, "big.bin", local, "big.bin", nil); !errors.Is(err, errCut) {
		t.Fatalf("cut download: %v", err)
	}
	res, err := staging.Copy(ctx, remote, "big.bin", local, "big.bin", nil)
	if err == nil || !strings.Contains(err.Error(), "verification failed") || res.Resumed != 2*staging.ChunkSize {
		t.Fatalf("resumed download of a changed source: %+v, %v; want 2 chunks resumed, then refused", res, err)
	}
	for _, name := range []string{"big.bin", staging.PartName("big.bin")} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists after the refused download", name)
		}
	}
	// The next try is a fresh download: one pass, checked on the way in.
	res, err = staging.Copy(ctx, remote, "big.bin", local, "big.bin", nil)
	if err != nil || res.Resumed != 0 || res.Verified != staging.VerifiedOnTheWay {
		t.Fatalf("download after the refusal: %+v, %v; want a full copy checked on the way in", res, err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "big.bin")); stagingtest.SHA256(got) != stagingtest.SHA256(data) {
		t.Fatal("the download differs from the source")
	}
}

// The same for an upload to the remote site.
func TestSFTPUploadResumes(t *testing.T) {
	ctx := context.Background()
	remote, _ := stagingtest.SFTPDir(t)
	local, _ := openDir(t)
	data := stagingtest.Pattern(4*staging.ChunkSize + 99)
	stagingtest.Put(t, local, "up.bin", data)
	if _, err := staging.Copy(ctx, failingStore{local, 2*staging.ChunkSize + 5}, "up.bin", remote, "out/up.bin", nil); !errors.Is(err, errCut) {
		t.Fatalf("cut upload: %v", err)
	}
	if _, err := remote.Stat(ctx, "out/up.bin"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a partial upload is visible under the final name: %v", err)
	}
	res, err := staging.Copy(ctx, local, "up.bin", remote, "out/up.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Resumed != 2*staging.ChunkSize || res.Bytes != int64(len(data))-2*staging.ChunkSize {
		t.Errorf("resumed %d, sent %d bytes; want 2 chunks kept and only the rest sent", res.Resumed, res.Bytes)
	}
	// The kept chunks and the sent ones were hashed on the site as they
	// were written, not in a pass after the upload.
	if res.Verified != staging.VerifiedWhileWritten {
		t.Errorf("upload verified %q, want %q", res.Verified, staging.VerifiedWhileWritten)
	}
	if got := stagingtest.Read(t, remote, "out/up.bin", 0); stagingtest.SHA256([]byte(got)) != stagingtest.SHA256(data) {
		t.Fatal("the resumed upload does not verify")
	}
}

// The remote site hashes its own files (sha256sum over ssh exec).
func TestSFTPRemoteSHA256(t *testing.T) {
	remote, _ := stagingtest.SFTPDir(t)
	data := []byte("it's a file with a quote'")
	stagingtest.Put(t, remote, "q'uote.txt", data)
	sum, err := remote.(staging.Hasher).SHA256(context.Background(), "q'uote.txt")
	if err != nil || sum != stagingtest.SHA256(data) {
		t.Fatalf("remote SHA-256 = %q, %v; want %s", sum, err, stagingtest.SHA256(data))
	}
}

// lyingStore reports a checksum that does not match what it holds.
type lyingStore struct{ staging.Store }

func (lyingStore) SHA256(context.Context, string) (string, error) {
	return strings.Repeat("0", 64), nil
}

// A target whose bytes do not verify never gets the file under its name.
func TestCopyVerificationFailure(t *testing.T) {
	ctx := context.Background()
	src, _ := openDir(t)
	dst, dir := openDir(t)
	stagingtest.Put(t, src, "f", stagingtest.Pattern(1000))
	res, err := staging.Copy(ctx, src, "f", dst, "g", nil)
	if err != nil || res.Verified != staging.VerifiedOnTheWay {
		t.Fatalf("local copy: %+v, %v", res, err)
	}
	_, err = staging.Copy(ctx, src, "f", lyingStore{dst}, "f", nil)
	if err == nil || !strings.Contains(err.Error(), "verification failed") {
		t.Fatalf("Copy onto a target that does not verify: %v", err)
	}
	for _, name := range []string{"f", staging.PartName("f")} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists after a failed verification", name)
		}
	}
}

// spaceStore is a target that says it has free bytes, and whose writes
// fail with ENOSPC after failAfter bytes (the real ENOSPC path runs in
// cmd/scalebox TestStageOutTierTooSmall on a tmpfs).
type spaceStore struct {
	staging.Store
	free, failAfter int64
}

func (s spaceStore) Free(context.Context, string) (int64, error) { return s.free, nil }

type fullWriter struct {
	staging.Writer
	left int64
}

func (w *fullWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > w.left {
		n, _ := w.Writer.Write(p[:w.left])
		w.left = 0
		return n, syscall.ENOSPC
	}
	w.left -= int64(len(p))
	return w.Writer.Write(p)
}

func (s spaceStore) Append(ctx context.Context, name string) (staging.Writer, error) {
	w, err := s.Store.Append(ctx, name)
	if err != nil {
		return nil, err
	}
	return &fullWriter{Writer: w, left: s.failAfter}, nil
}

// No room on the target: refused before a byte is written when the store
// can tell, else at the ENOSPC; either way no part file stays to hold the
// space and nothing appears under the final name.
func TestCopyNoSpace(t *testing.T) {
	ctx := context.Background()
	src, _ := openDir(t)
	data := stagingtest.Pattern(3*staging.ChunkSize + 5)
	stagingtest.Put(t, src, "f.bin", data)
	for _, tc := range []struct {
		name            string
		free, failAfter int64
	}{
		{"known beforehand", int64(len(data)) - 1, 1 << 40},
		{"found while writing", 1 << 40, staging.ChunkSize + 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst, dir := openDir(t)
			_, err := staging.Copy(ctx, src, "f.bin", spaceStore{dst, tc.free, tc.failAfter}, "out/f.bin", nil)
			if !errors.Is(err, staging.ErrNoSpace) {
				t.Fatalf("copy: %v, want ErrNoSpace", err)
			}
			left := stagingtest.Files(t, dir)
			if len(left) != 0 {
				t.Fatalf("left on the target: %v", left)
			}
		})
	}
}

// corruptingStore flips one byte of everything written through it, as a
// faulty link or disk on the way would.
type corruptingStore struct{ *staging.SFTPStore }

func (s corruptingStore) Append(ctx context.Context, name string) (staging.Writer, error) {
	w, err := s.SFTPStore.Append(ctx, name)
	return corruptingWriter{w}, err
}

type corruptingWriter struct{ staging.Writer }

func (w corruptingWriter) Write(b []byte) (int, error) {
	c := append([]byte(nil), b...)
	c[len(c)/2] ^= 0xff
	return w.Writer.Write(c)
}

// An upload whose bytes arrive changed is caught by the site's hash made
// while it was written: no file under the name, no part left.
func TestSFTPUploadCorruptedOnTheWay(t *testing.T) {
	ctx := context.Background()
	remote, _ := stagingtest.SFTPDir(t)
	local, _ := openDir(t)
	stagingtest.Put(t, local, "f.bin", stagingtest.Pattern(2*staging.ChunkSize+17))
	_, err := staging.Copy(ctx, local, "f.bin", corruptingStore{remote.(*staging.SFTPStore)}, "f.bin", nil)
	if err == nil || !strings.Contains(err.Error(), "verification failed") {
		t.Fatalf("corrupted upload: %v, want a verification failure", err)
	}
	for _, name := range []string{"f.bin", staging.PartName("f.bin")} {
		if _, err := remote.Stat(ctx, name); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists on the site after a failed verification: %v", name, err)
		}
	}
}

// touchingStore changes its file's mtime once the copy has read from it,
// as a writer still at work on the source would.
type touchingStore struct {
	staging.Store
	path string
}

type touchingReader struct {
	io.ReadCloser
	path    string
	touched bool
}

func (r *touchingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if !r.touched && n > 0 {
		r.touched = true
		later := time.Now().Add(time.Hour)
		if terr := os.Chtimes(r.path, later, later); terr != nil {
			return n, terr
		}
	}
	return n, err
}

func (s touchingStore) Open(ctx context.Context, name string, off int64) (io.ReadCloser, error) {
	return openWrapped(ctx, s.Store, name, off, func(r io.ReadCloser) io.ReadCloser { return &touchingReader{ReadCloser: r, path: s.path} })
}

// A source changed while it is copied (same size, new mtime) is refused,
// and neither the target nor a part to resume from is left.
func TestCopyRefusesASourceChangedWhileCopied(t *testing.T) {
	ctx := context.Background()
	src, srcDir := openDir(t)
	dst, dstDir := openDir(t)
	stagingtest.Put(t, src, "in.bin", stagingtest.Pattern(2*staging.ChunkSize+5))
	_, err := staging.Copy(ctx, touchingStore{src, filepath.Join(srcDir, "in.bin")}, "in.bin", dst, "out.bin", nil)
	if err == nil || !strings.Contains(err.Error(), "changed while it was copied") {
		t.Fatalf("copy of a source touched mid-way: %v; want it refused", err)
	}
	for _, name := range []string{"out.bin", staging.PartName("out.bin")} {
		if _, err := os.Stat(filepath.Join(dstDir, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists after the refused copy", name)
		}
	}
}
