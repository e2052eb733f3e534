package staging

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Cache keeps verified copies of shared and remote files on a node tier,
// so tasks on this node that read the same input fetch it once. Entries
// are files named by the SHA-256 of their URL, each with a small JSON
// record of the source's size and mtime (a changed source is fetched
// again) and its checksum. Entries a running task uses are pinned; when a
// new entry does not fit under the quota, the least recently used
// unpinned ones are evicted.
type Cache struct {
	dir   string
	quota int64 // bytes; 0 = only the filesystem's free space limits it
	mu    sync.Mutex
	pins  map[string]int // key -> tasks using the entry
	store *DirStore
}

type cacheEntry struct {
	URL    string    `json:"url"`
	Tag    string    `json:"tag,omitempty"`
	Size   int64     `json:"size"`
	MTime  time.Time `json:"mtime"`
	SHA256 string    `json:"sha256"`
}

// OpenCache opens (creating) the cache in dir with a quota in bytes.
func OpenCache(dir string, quota int64) (*Cache, error) {
	st, err := OpenDir(dir)
	if err != nil {
		return nil, err
	}
	return &Cache{dir: dir, quota: quota, pins: map[string]int{}, store: st}, nil
}

// Close releases the cache's directory handle.
func (c *Cache) Close() error { return c.store.Close() }

// Key is the entry name of a URL.
func Key(u URL) string {
	sum := sha256.Sum256([]byte(u.String()))
	return hex.EncodeToString(sum[:16])
}

// Hit is a pinned cache entry: its file, and how it came to be there.
type Hit struct {
	Path    string // the cached file, to be copied (never written to)
	Fetched bool   // false: it was already here (a cache hit)
	Bytes   int64  // read from the source for this call
	// Evicted are the tags (see Get) of the entries removed to make
	// room for it.
	Evicted []string
	key     string
	c       *Cache
	// f is the entry, open: another pilot on the node may evict it, and
	// an open file outlives its name.
	f *os.File
}

// Release unpins the entry; it may be evicted from then on.
func (h *Hit) Release() {
	if h.f != nil {
		h.f.Close()
		h.f = nil
	}
	h.c.mu.Lock()
	if h.c.pins[h.key]--; h.c.pins[h.key] <= 0 {
		delete(h.c.pins, h.key)
	}
	h.c.mu.Unlock()
}

// Get returns the entry for u, whose file is name in src: the cached copy
// if the source still has the size and mtime it had when fetched, else a
// fresh verified copy (Copy: resumable, renamed when verified). The entry
// is pinned until Release. tag is what the caller knows the entry by
// (the head's data key); an eviction returns it in Hit.Evicted, whichever
// process fetched the entry. Fetches of one entry are serialised, across
// slots and across pilots sharing the node (a lock file per entry), so two
// tasks needing the same input fetch it once.
func (c *Cache) Get(ctx context.Context, u URL, src Store, name, tag string) (*Hit, error) {
	key := Key(u)
	info, err := src.Stat(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", u, err)
	}
	c.mu.Lock()
	c.pins[key]++
	c.mu.Unlock()
	h := &Hit{Path: filepath.Join(c.dir, key), key: key, c: c}
	fail := func(err error) (*Hit, error) {
		h.Release()
		return h, err
	}
	unlock, err := lockFile(ctx, filepath.Join(c.dir, "."+key+".lock"))
	if err != nil {
		return fail(fmt.Errorf("cache %s: %w", u, err))
	}
	defer unlock()
	if e, ok := c.entry(key); ok && e.URL == u.String() && e.Size == info.Size && e.MTime.Equal(info.ModTime) {
		if h.f, err = os.Open(h.Path); err == nil {
			now := time.Now()
			os.Chtimes(c.meta(key), now, now) // recently used
			return h, nil
		}
	}
	if h.Evicted, err = c.makeRoom(ctx, info.Size, key); err != nil {
		return fail(err)
	}
	res, err := Copy(ctx, src, name, c.store, key, nil)
	if err != nil {
		return fail(err)
	}
	os.Chmod(h.Path, 0o400) // tasks get copies; nothing writes the entry
	if err := c.writeEntry(key, cacheEntry{URL: u.String(), Tag: tag, Size: info.Size, MTime: info.ModTime, SHA256: res.SHA256}); err != nil {
		return fail(err)
	}
	if h.f, err = os.Open(h.Path); err != nil {
		return fail(err)
	}
	h.Fetched, h.Bytes = true, res.Bytes
	return h, nil
}

// lockFile takes an exclusive flock on path (created), waiting while
// another holder has it, until ctx ends.
func lockFile(ctx context.Context, path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if err != unix.EWOULDBLOCK && err != unix.EINTR {
			f.Close()
			return nil, err
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

func (c *Cache) meta(key string) string { return filepath.Join(c.dir, key+".json") }

func (c *Cache) entry(key string) (cacheEntry, bool) {
	var e cacheEntry
	b, err := os.ReadFile(c.meta(key))
	if err != nil || json.Unmarshal(b, &e) != nil {
		return e, false
	}
	return e, true
}

// writeEntry records an entry: temp file, then rename.
func (c *Cache) writeEntry(key string, e cacheEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp := c.meta(key) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, c.meta(key))
}

// Entries lists the URLs cached, for the head's record of what is where.
func (c *Cache) Entries() []string {
	var out []string
	for _, f := range c.files() {
		if e, ok := c.entry(f.key); ok {
			out = append(out, e.URL)
		}
	}
	sort.Strings(out)
	return out
}

type cachedFile struct {
	key  string
	size int64
	used time.Time
}

// files are the entries, least recently used first. A data file without
// its record (a crash between the two) counts as least recently used,
// so it is the first to go.
func (c *Cache) files() []cachedFile {
	ents, _ := os.ReadDir(c.dir)
	var out []cachedFile
	for _, d := range ents {
		key := d.Name()
		if strings.HasSuffix(key, ".json") || strings.HasPrefix(key, ".") || strings.HasSuffix(key, ".tmp") {
			continue
		}
		fi, err := d.Info()
		if err != nil {
			continue
		}
		f := cachedFile{key: key, size: fi.Size()}
		if mi, err := os.Stat(c.meta(key)); err == nil {
			f.used = mi.ModTime()
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].used.Before(out[j].used) })
	return out
}

// makeRoom evicts unpinned entries, least recently used first, until need
// more bytes fit under the quota and in the filesystem's free space.
func (c *Cache) makeRoom(ctx context.Context, need int64, except string) (evicted []string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	files := c.files()
	var used int64
	for _, f := range files {
		used += f.size
	}
	fits := func() bool {
		free, err := c.store.Free(ctx, ".")
		return (c.quota == 0 || used+need <= c.quota) && (err != nil || free >= need)
	}
	for _, f := range files {
		if fits() {
			return evicted, nil
		}
		if c.pins[f.key] > 0 || f.key == except {
			continue
		}
		if e, ok := c.entry(f.key); ok && e.Tag != "" {
			evicted = append(evicted, e.Tag)
		}
		os.Remove(filepath.Join(c.dir, f.key))
		os.Remove(c.meta(f.key))
		used -= f.size
	}
	if fits() {
		return evicted, nil
	}
	return evicted, fmt.Errorf("cache %s: %w: need %d bytes, %d of quota %d used by entries tasks are using", c.dir, ErrNoSpace, need, used, c.quota)
}

// CopyOut copies a cached file to dst (a work-dir path) and syncs it:
// a plain copy, as cp makes, for the entry was verified when fetched.
func CopyOut(h *Hit, dst string) (int64, error) {
	if h.f == nil {
		return 0, fmt.Errorf("copy %s from the cache: entry released", dst)
	}
	if _, err := h.f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return 0, err
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".part")
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, h.f) // copy_file_range on Linux, as cp uses
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return n, errors.Join(fmt.Errorf("copy %s from the cache", dst), err)
	}
	return n, nil
}
