package staging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"

	"golang.org/x/sys/unix"
)

// DirStore is a tier on a filesystem of this node (file:// on the shared
// filesystem, local: on the SSD, mem: on /dev/shm). Every operation goes
// through os.Root, so no name, however built, and no symlink reaches
// outside the root.
type DirStore struct {
	root *os.Root
	dir  string
}

// OpenDir opens the store rooted at dir, creating dir if needed.
func OpenDir(dir string) (*DirStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("staging store %s: %w", dir, err)
	}
	return OpenExistingDir(dir)
}

// OpenExistingDir opens the store rooted at dir, which must exist: a
// source is read where it is, never created by looking at it.
func OpenExistingDir(dir string) (*DirStore, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("staging store %s: %w", dir, err)
	}
	return &DirStore{root: r, dir: dir}, nil
}

// Dir is the store's root on the host.
func (s *DirStore) Dir() string { return s.dir }

func (s *DirStore) wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s %s in %s: %w", op, name, s.dir, err)
}

func (s *DirStore) Stat(_ context.Context, name string) (Info, error) {
	fi, err := s.root.Stat(name)
	if err != nil {
		return Info{}, s.wrap("stat", name, err)
	}
	return infoOf(fi), nil
}

func (s *DirStore) Open(_ context.Context, name string, offset int64) (io.ReadCloser, error) {
	f, err := s.root.Open(name)
	if err != nil {
		return nil, s.wrap("open", name, err)
	}
	r, err := seekTo(f, offset)
	return r, s.wrap("seek", name, err)
}

func (s *DirStore) Append(_ context.Context, name string) (Writer, error) {
	if dir := path.Dir(name); dir != "." {
		if err := s.root.MkdirAll(dir, 0o755); err != nil {
			return nil, s.wrap("mkdir", dir, err)
		}
	}
	f, err := s.root.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	return f, s.wrap("open", name, err)
}

func (s *DirStore) Truncate(_ context.Context, name string, size int64) error {
	f, err := s.root.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return s.wrap("truncate", name, err)
	}
	defer f.Close()
	return s.wrap("truncate", name, f.Truncate(size))
}

func (s *DirStore) Rename(_ context.Context, from, to string) error {
	if err := s.renameUnsynced(from, to); err != nil {
		return err
	}
	// The rename is durable once the directory is.
	if d, err := s.root.Open(path.Dir(to)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// renameUnsynced is Rename without the directory sync (unsyncedRenamer).
func (s *DirStore) renameUnsynced(from, to string) error {
	return s.wrap("rename", from, s.root.Rename(from, to))
}

func (s *DirStore) Remove(_ context.Context, name string) error {
	if err := s.root.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return s.wrap("remove", name, err)
	}
	return nil
}

func (s *DirStore) List(_ context.Context, dir string) ([]Info, error) {
	f, err := s.root.Open(dir)
	if err != nil {
		return nil, s.wrap("list", dir, err)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, s.wrap("list", dir, err)
	}
	out := make([]Info, 0, len(ents))
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, infoOf(fi))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (s *DirStore) Close() error { return s.root.Close() }

// Free is the space available to this user on the filesystem of the
// store's root (statfs); dir is within the root.
func (s *DirStore) Free(ctx context.Context, dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(s.dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
