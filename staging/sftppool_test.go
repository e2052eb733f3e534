package staging_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/scalebox-hpc/scalebox/staging"
	"github.com/scalebox-hpc/scalebox/staging/stagingtest"
)

// Stores opened one after another share one connection; stores open at
// the same time do not; a connection that broke is not handed out again.
func TestSFTPConnectionsReused(t *testing.T) {
	ctx := context.Background()
	u, auth := stagingtest.SFTP(t)
	dial := func() staging.Store {
		t.Helper()
		s, err := staging.DialSFTP(ctx, u, auth)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a := dial()
	conn := staging.SFTPConnOf(a)
	a.Close()
	before := staging.SFTPDials()
	b := dial()
	if staging.SFTPConnOf(b) != conn || staging.SFTPDials() != before {
		t.Fatalf("a store opened after another closed made a new connection (%d dials)", staging.SFTPDials()-before)
	}
	c := dial()
	if staging.SFTPConnOf(c) == staging.SFTPConnOf(b) {
		t.Fatal("two open stores share one connection")
	}
	if _, err := c.List(ctx, "."); err != nil {
		t.Fatal(err)
	}
	staging.BreakSFTP(b)
	b.Close()
	c.Close()
	// c's connection is idle and works; b's is broken: whichever the pool
	// offers, the store must work.
	for i := 0; i < 2; i++ {
		d := dial()
		if _, err := d.List(ctx, "."); err != nil {
			t.Fatalf("store %d after a broken connection: %v", i, err)
		}
		defer d.Close()
	}
}

// A subdirectory store on a pooled connection has its own root.
func TestSFTPPooledStoreRoot(t *testing.T) {
	ctx := context.Background()
	remote, dir := stagingtest.SFTPDir(t)
	stagingtest.Put(t, remote, "sub/f.txt", []byte("in sub"))
	u, auth := stagingtest.SFTP(t)
	u.Path = dir + "/sub"
	s, err := staging.DialSFTP(ctx, u, auth)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Stat(ctx, "f.txt"); err != nil {
		t.Fatalf("store rooted at sub/: %v", err)
	}
}

// BenchmarkSFTPSmallFiles copies 64 files of 4 KiB from the test site, one
// after another, with connections kept between copies and without;
// bench/staging/run.sh prints the ratio.
func BenchmarkSFTPSmallFiles(b *testing.B) {
	ctx := context.Background()
	u, auth := stagingtest.SFTP(b)
	s, err := staging.DialSFTP(ctx, u, auth)
	if err != nil {
		b.Fatal(err)
	}
	const files = 64
	name := fmt.Sprintf("bench-small-%d", os.Getpid())
	for i := 0; i < files; i++ {
		stagingtest.Put(b, s, fmt.Sprintf("%s/f%d", name, i), stagingtest.Pattern(4096))
	}
	s.Close()
	b.Cleanup(func() {
		s, err := staging.DialSFTP(ctx, u, auth)
		if err == nil {
			for i := 0; i < files; i++ {
				s.Remove(ctx, fmt.Sprintf("%s/f%d", name, i))
			}
			s.Remove(ctx, name)
			s.Close()
		}
	})
	for _, mode := range []struct {
		name string
		idle bool
	}{{"pooled", true}, {"dial-per-file", false}} {
		b.Run(mode.name, func(b *testing.B) {
			if !mode.idle {
				staging.SetSFTPIdle(b, 0)
			}
			dst, err := staging.OpenDir(filepath.Join(b.TempDir(), "out"))
			if err != nil {
				b.Fatal(err)
			}
			src := u
			src.Path = u.Path + "/" + name
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				for i := 0; i < files; i++ {
					from, err := staging.DialSFTP(ctx, src, auth)
					if err != nil {
						b.Fatal(err)
					}
					f := fmt.Sprintf("f%d", i)
					if _, err := staging.Copy(ctx, from, f, dst, f, nil); err != nil {
						b.Fatal(err)
					}
					from.Close()
				}
			}
			b.ReportMetric(float64(b.N*files)/b.Elapsed().Seconds(), "files/s")
		})
	}
}
