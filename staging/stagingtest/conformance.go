// Package stagingtest is the conformance suite every staging.Store
// passes: file operations, confinement to the root, and Copy's atomic,
// verified, resumable writes onto it.
package stagingtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/scalebox-hpc/scalebox/staging"
)

// Opener gives a fresh, empty store, and the host directory behind it
// when the test can plant files there directly ("" if it cannot).
type Opener func(t *testing.T) (s staging.Store, hostDir string)

// Conformance runs the suite.
func Conformance(t *testing.T, open Opener) {
	ctx := context.Background()
	t.Run("files", func(t *testing.T) {
		s, _ := open(t)
		if _, err := s.Stat(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Stat(missing) = %v, want fs.ErrNotExist", err)
		}
		w, err := s.Append(ctx, "a/b/c.txt")
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, "hello ")
		w.Close()
		w, _ = s.Append(ctx, "a/b/c.txt")
		io.WriteString(w, "world")
		w.Sync()
		w.Close()
		if got := Read(t, s, "a/b/c.txt", 6); got != "world" {
			t.Fatalf("read from 6 = %q", got)
		}
		if err := s.Truncate(ctx, "a/b/c.txt", 5); err != nil {
			t.Fatal(err)
		}
		if err := s.Rename(ctx, "a/b/c.txt", "a/d.txt"); err != nil {
			t.Fatal(err)
		}
		if got := Read(t, s, "a/d.txt", 0); got != "hello" {
			t.Fatalf("after truncate and rename: %q", got)
		}
		ents, err := s.List(ctx, "a")
		if err != nil || len(ents) != 2 || ents[0].Name != "b" || !ents[0].IsDir || ents[1].Name != "d.txt" || ents[1].Size != 5 {
			t.Fatalf("List(a) = %+v, %v", ents, err)
		}
		if err := s.Remove(ctx, "a/d.txt"); err != nil {
			t.Fatal(err)
		}
		if err := s.Remove(ctx, "a/d.txt"); err != nil {
			t.Fatalf("Remove(absent) = %v, want nil", err)
		}
	})
	t.Run("confined to the root", func(t *testing.T) {
		s, dir := open(t)
		for _, name := range []string{"../escape", "a/../../escape", "/etc/passwd"} {
			if _, err := s.Append(ctx, name); err == nil {
				t.Errorf("Append(%q) was allowed", name)
			}
			if _, err := s.Open(ctx, name, 0); err == nil {
				t.Errorf("Open(%q) was allowed", name)
			}
		}
		if dir == "" {
			return
		}
		// Readable and writable by anyone, so only confinement can stop a
		// store whose server runs as another user.
		outside, err := os.MkdirTemp("", "scalebox-outside-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(outside) })
		os.Chmod(outside, 0o777)
		os.WriteFile(filepath.Join(outside, "secret"), []byte("x"), 0o644)
		if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Open(ctx, "link/secret", 0); err == nil {
			t.Error("a symlink out of the root was followed for reading")
		} else {
			t.Logf("refused: %v", err)
		}
		if _, err := s.Append(ctx, "link/new"); err == nil {
			t.Error("a symlink out of the root was followed for writing")
		}
		if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
			t.Error("a file was created outside the root")
		}
	})
	t.Run("copy onto it", func(t *testing.T) {
		dst, _ := open(t)
		src, _ := open(t)
		data := Pattern(2*staging.ChunkSize + 12345)
		Put(t, src, "in.bin", data)
		res, err := staging.Copy(ctx, src, "in.bin", dst, "out/in.bin", nil)
		if err != nil {
			t.Fatal(err)
		}
		if res.Bytes != int64(len(data)) || res.Resumed != 0 || res.SHA256 != SHA256(data) {
			t.Errorf("result %+v", res)
		}
		if got := Read(t, dst, "out/in.bin", 0); got != string(data) {
			t.Error("copied bytes differ")
		}
		for _, leftover := range []string{staging.PartName("out/in.bin"), staging.PartName("out/in.bin") + ".json"} {
			if _, err := dst.Stat(ctx, leftover); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s left behind: %v", leftover, err)
			}
		}
	})
}

// Read returns a file of a store from offset off.
func Read(t testing.TB, s staging.Store, name string, off int64) string {
	t.Helper()
	r, err := s.Open(context.Background(), name, off)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Put writes a file into a store.
func Put(t testing.TB, s staging.Store, name string, data []byte) {
	t.Helper()
	w, err := s.Append(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// Pattern is n bytes that differ from chunk to chunk.
func Pattern(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// SHA256 is the hex SHA-256 of data.
func SHA256(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// Files lists the files under dir (not directories), for tests that
// assert nothing was left behind.
func Files(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	return out
}
