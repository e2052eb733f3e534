package staging_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/staging"
	"github.com/scalebox-hpc/scalebox/staging/stagingtest"
)

func cacheURL(name string) staging.URL {
	return staging.URL{Scheme: staging.SchemeFile, Path: "/src/" + name}
}

// used backdates an entry's last use, so LRU order does not depend on
// the clock's resolution.
func used(t *testing.T, dir, name string, ago time.Duration) {
	t.Helper()
	at := time.Now().Add(-ago)
	if err := os.Chtimes(filepath.Join(dir, staging.Key(cacheURL(name))+".json"), at, at); err != nil {
		t.Fatal(err)
	}
}

func TestCacheHitAndRefetch(t *testing.T) {
	ctx := context.Background()
	src, srcDir := openDir(t)
	dir := t.TempDir()
	c, err := staging.OpenCache(dir, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := stagingtest.Pattern(3<<20 + 1)
	stagingtest.Put(t, src, "a.bin", data)
	h, err := c.Get(ctx, cacheURL("a.bin"), src, "a.bin")
	if err != nil || !h.Fetched || h.Bytes != int64(len(data)) {
		t.Fatalf("first get: %+v, %v; want a fetch of every byte", h, err)
	}
	h.Release()
	h, err = c.Get(ctx, cacheURL("a.bin"), src, "a.bin")
	if err != nil || h.Fetched || h.Bytes != 0 {
		t.Fatalf("second get: %+v, %v; want a hit reading nothing", h, err)
	}
	out := filepath.Join(t.TempDir(), "in", "a.bin")
	if n, err := staging.CopyOut(h, out); err != nil || n != int64(len(data)) {
		t.Fatalf("copy out: %d, %v", n, err)
	}
	h.Release()
	if got, _ := os.ReadFile(out); stagingtest.SHA256(got) != stagingtest.SHA256(data) {
		t.Fatal("the copy out of the cache differs from the source")
	}
	// The source changes: the entry is stale and fetched again.
	data2 := stagingtest.Pattern(1000)
	os.WriteFile(filepath.Join(srcDir, "a.bin"), data2, 0o644)
	h, err = c.Get(ctx, cacheURL("a.bin"), src, "a.bin")
	if err != nil || !h.Fetched {
		t.Fatalf("after the source changed: %+v, %v; want a new fetch", h, err)
	}
	h.Release()
	if got := c.Entries(); len(got) != 1 || got[0] != cacheURL("a.bin").String() {
		t.Fatalf("entries %v", got)
	}
}

// Over quota, the least recently used entry no task uses goes first; a
// pinned one stays; when only pinned entries remain the fetch is refused
// with ErrNoSpace, and nothing is left half-written.
func TestCacheEvictsLRUUnpinned(t *testing.T) {
	ctx := context.Background()
	src, _ := openDir(t)
	dir := t.TempDir()
	const mib = 1 << 20
	c, err := staging.OpenCache(dir, 3*mib+mib/2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		stagingtest.Put(t, src, n, stagingtest.Pattern(mib))
	}
	get := func(name string) *staging.Hit {
		t.Helper()
		h, err := c.Get(ctx, cacheURL(name), src, name)
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		return h
	}
	get("a").Release()
	get("b").Release()
	hc := get("c") // pinned from here on
	used(t, dir, "a", 3*time.Minute)
	used(t, dir, "c", 2*time.Minute) // c is older than b, but pinned
	used(t, dir, "b", time.Minute)
	get("d").Release() // evicts a (least recently used)
	has := func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, staging.Key(cacheURL(name))))
		return err == nil
	}
	if has("a") || !has("b") || !has("c") || !has("d") {
		t.Fatalf("after d: a %v b %v c %v d %v; want a evicted", has("a"), has("b"), has("c"), has("d"))
	}
	hb, hd := get("b"), get("d") // pin everything
	if _, err := c.Get(ctx, cacheURL("e"), src, "e"); !errors.Is(err, staging.ErrNoSpace) {
		t.Fatalf("all pinned: %v, want ErrNoSpace", err)
	}
	if has("e") {
		t.Fatal("a refused entry is in the cache")
	}
	hc.Release()
	hb.Release()
	hd.Release()
	if _, err := c.Get(ctx, cacheURL("e"), src, "e"); err != nil {
		t.Fatalf("after release: %v", err)
	}
}
