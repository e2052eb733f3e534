package pilot

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/staging"
)

const gb = 1 << 30

// hasSpaceRules says whether a module's slots must check disk space
// before taking a task (free_space_gb, dir_quota_gb).
func hasSpaceRules(m *dataflow.Module) bool { return len(m.FreeSpaceGB)+len(m.DirQuotaGB) > 0 }

// spaceWait says why the slot should not take a task yet ("" = go): a
// free_space_gb directory with less free space than asked, or a
// dir_quota_gb directory using its quota or more. Scalebox's admission:
// the task stays ready for a node that has room.
func (s *slot) spaceWait() string {
	m := s.mod()
	for _, dir := range sortedKeys(m.FreeSpaceGB) {
		want := m.FreeSpaceGB[dir]
		path := s.p.tierDir(dir)
		var st unix.Statfs_t
		if err := unix.Statfs(path, &st); err != nil {
			return fmt.Sprintf("free_space_gb %s (%s): %v", dir, path, err)
		}
		if free := float64(st.Bavail) * float64(st.Bsize); free < want*gb {
			return fmt.Sprintf("free_space_gb %s: %.2f GB free at %s, want %g", dir, free/gb, path, want)
		}
	}
	for _, dir := range sortedKeys(m.DirQuotaGB) {
		quota := m.DirQuotaGB[dir]
		path := s.p.tierDir(dir)
		used, err := s.p.usage.of(path)
		if err != nil {
			return fmt.Sprintf("dir_quota_gb %s (%s): %v", dir, path, err)
		}
		if float64(used) >= quota*gb {
			return fmt.Sprintf("dir_quota_gb %s: %.2f GB used at %s, quota %g", dir, float64(used)/gb, path, quota)
		}
	}
	return ""
}

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// tierDir maps a space-rule directory to this node: local:[sub] and
// mem:[sub] to the tier roots, an absolute path to itself. Tier roots
// are created: they are ours, and an empty tier has all its room.
func (p *Pilot) tierDir(dir string) string {
	if u, err := staging.ParseURL(dir); err == nil {
		if d, ok := p.tiers.NodePath(u.Scheme, u.Path); ok {
			os.MkdirAll(d, 0o700) // Statfs says why if this failed
			return d
		}
	}
	return dir
}

// dirUsage sums the sizes under directories, each result kept for a
// few seconds: every slot of a node asks before each task, and a walk of
// a large tree is not free.
type dirUsage struct {
	mu   sync.Mutex
	seen map[string]usageAt
}

type usageAt struct {
	bytes int64
	at    time.Time
}

const usageTTL = 2 * time.Second

func (u *dirUsage) of(dir string) (int64, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if v, ok := u.seen[dir]; ok && time.Since(v.at) < usageTTL {
		return v.bytes, nil
	}
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed while we walk
		}
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if u.seen == nil {
		u.seen = map[string]usageAt{}
	}
	u.seen[dir] = usageAt{total, time.Now()}
	return total, nil
}

// forget drops cached usage, after this pilot wrote to or removed from
// a tier, so the next check sees it.
func (u *dirUsage) forget() {
	u.mu.Lock()
	clear(u.seen)
	u.mu.Unlock()
}

// cacheDir is where stage_in copies of shared and remote files are kept,
// inside the node's local: tier.
const cacheDir = ".scalebox-cache"

// openCache opens the node's stage-in cache. Its quota is
// $SCALEBOX_CACHE_GB, else a quarter of the tier's filesystem: the cache
// must not take a node's disk from the tasks that write to it.
func openCache(t staging.Tiers) (*staging.Cache, error) {
	dir := filepath.Join(t.Local, cacheDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("stage cache: %w", err)
	}
	var quota int64
	if v := os.Getenv("SCALEBOX_CACHE_GB"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			return nil, fmt.Errorf("SCALEBOX_CACHE_GB=%q: want a number of GB", v)
		}
		quota = int64(f * gb)
	} else {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			return nil, fmt.Errorf("stage cache %s: %w", dir, err)
		}
		quota = int64(st.Blocks) * int64(st.Bsize) / 4
	}
	return staging.OpenCache(dir, quota)
}
