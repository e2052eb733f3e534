package staging

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
)

// Tiers says where this node's tiers live and how to reach remote sites.
// The CLI's `stage cp` and the pilot's stage-in/stage-out resolve URLs
// with the same Tiers, so a URL means the same file to both.
type Tiers struct {
	Local string // root of local: (the node's SSD)
	Mem   string // root of mem: (RAM)
	SFTP  SFTPAuth
}

// NodeTiers returns the tiers of node host ("" = this machine's name)
// from the environment: $SCALEBOX_LOCAL_ROOT (default
// $TMPDIR/scalebox-local-UID/HOST), $SCALEBOX_MEM_ROOT (default
// /dev/shm/scalebox-UID/HOST), and the sftp key and pinned host key from
// $SCALEBOX_SFTP_KEY and $SCALEBOX_SFTP_HOST_KEY. The host in the default
// keeps nodes apart where several share one /tmp (simulated nodes, or a
// misconfigured cluster), so data on one node's tier is never read as
// another's.
func NodeTiers(host string) Tiers {
	t := Tiers{
		Local: os.Getenv("SCALEBOX_LOCAL_ROOT"),
		Mem:   os.Getenv("SCALEBOX_MEM_ROOT"),
		SFTP:  SFTPAuth{KeyFile: os.Getenv("SCALEBOX_SFTP_KEY"), HostKey: os.Getenv("SCALEBOX_SFTP_HOST_KEY")},
	}
	if host == "" {
		host, _ = os.Hostname()
	}
	host = filepath.Base(filepath.Clean("/" + host))
	if t.Local == "" {
		t.Local = filepath.Join(os.TempDir(), fmt.Sprintf("scalebox-local-%d", os.Getuid()), host)
	}
	if t.Mem == "" {
		t.Mem = filepath.Join(fmt.Sprintf("/dev/shm/scalebox-%d", os.Getuid()), host)
	}
	return t
}

// OnNode reports whether u names a tier of the node it is used on
// (local: or mem:), which no other node can read.
func (u URL) OnNode() bool { return u.Scheme == SchemeLocal || u.Scheme == SchemeMem }

// Access says whether a store is opened to write (its directory is
// created) or to read (it must exist).
type Access bool

const (
	Read  Access = false
	Write Access = true
)

// Open opens the store holding u's file (its directory) and returns the
// file's name in it. The caller closes the store.
func (t Tiers) Open(ctx context.Context, u URL, a Access) (Store, string, error) {
	dir, name := path.Split(u.Path)
	if name == "" {
		return nil, "", fmt.Errorf("%s: names a directory, want a file", u)
	}
	s, err := t.OpenDir(ctx, u, dir, a)
	return s, name, err
}

// NodePath is where a local: or mem: path is on this node (ok false for
// other schemes).
func (t Tiers) NodePath(scheme, p string) (dir string, ok bool) {
	switch scheme {
	case SchemeLocal:
		return filepath.Join(t.Local, filepath.FromSlash(p)), true
	case SchemeMem:
		return filepath.Join(t.Mem, filepath.FromSlash(p)), true
	}
	return "", false
}

// OpenDir opens the store rooted at dir, a directory of u's scheme and
// site (for listing a tree).
func (t Tiers) OpenDir(ctx context.Context, u URL, dir string, a Access) (Store, error) {
	local := func(d string) (Store, error) {
		if a == Write {
			return OpenDir(d)
		}
		return OpenExistingDir(d)
	}
	var s Store
	var err error
	switch u.Scheme {
	case SchemeFile:
		s, err = local(dir)
	case SchemeLocal, SchemeMem:
		d, _ := t.NodePath(u.Scheme, dir)
		s, err = local(d)
	case SchemeSFTP:
		u.Path = dir
		var site *SFTPStore
		if site, err = DialSFTP(ctx, u, t.SFTP); err == nil {
			s = site
			if u.Compress == CompressZstd {
				if s, err = newZstdStore(site); err != nil {
					site.Close()
				}
			}
		}
	default:
		err = fmt.Errorf("%s: unknown scheme %q", u, u.Scheme)
	}
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Walk calls fn for every file under dir in s (depth first, names sorted,
// slash-separated and relative to s's root), descending into directories.
func Walk(ctx context.Context, s Store, dir string, fn func(name string, e Info) error) error {
	ents, err := s.List(ctx, dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := path.Join(dir, e.Name)
		if e.IsDir {
			err = Walk(ctx, s, name, fn)
		} else {
			err = fn(name, e)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
