package staging

import (
	"context"
	"io"
	"io/fs"
	"time"
)

// Store is one storage tier. Names are slash-separated and relative to
// the tier's root; a Store refuses any name that leaves its root,
// including through a symlink.
type Store interface {
	// Stat describes a file or directory (fs.ErrNotExist if absent).
	Stat(ctx context.Context, name string) (Info, error)
	// Open reads a file from offset.
	Open(ctx context.Context, name string, offset int64) (io.ReadCloser, error)
	// Append opens name for writing at its end, creating it (and its
	// parents) if needed; Copy uses it for the temporary part file.
	Append(ctx context.Context, name string) (Writer, error)
	// Truncate cuts name to size.
	Truncate(ctx context.Context, name string, size int64) error
	// Rename moves a file within the store, replacing the target.
	Rename(ctx context.Context, from, to string) error
	// Remove deletes a file (no error if it is absent).
	Remove(ctx context.Context, name string) error
	// List names the entries of a directory, sorted.
	List(ctx context.Context, dir string) ([]Info, error)
	Close() error
}

// Hasher is a Store that can checksum a file where it lives (a remote
// site running sha256sum), so verifying a copy does not move it again.
type Hasher interface {
	SHA256(ctx context.Context, name string) (string, error)
}

// StreamHasher is a Hasher that can hash a file on its site while Copy
// writes it: told each prefix that is complete, the site reads those bytes
// from its own page cache, so its checksum is ready right after the last
// one instead of a whole pass over the file later.
type StreamHasher interface {
	HashWhileWritten(ctx context.Context, name string) (SiteHash, error)
}

// SiteHash is one file being hashed on its site as it is written.
type SiteHash interface {
	// Written says the file's first n bytes are complete; n only grows.
	Written(n int64) error
	// Sum returns the SHA-256 of the first n bytes given last, once the
	// site has them all.
	Sum() (string, error)
	// Close abandons the hash.
	Close() error
}

// Writer is an open file being written.
type Writer interface {
	io.Writer
	// Sync makes what was written durable.
	Sync() error
	Close() error
}

// Info describes one entry.
type Info struct {
	Name    string
	Size    int64
	ModTime time.Time
	IsDir   bool
}

func infoOf(fi fs.FileInfo) Info {
	return Info{Name: fi.Name(), Size: fi.Size(), ModTime: fi.ModTime(), IsDir: fi.IsDir()}
}

// seekTo positions a just-opened file at offset, closing it on failure.
func seekTo(f io.ReadSeekCloser, offset int64) (io.ReadCloser, error) {
	if offset > 0 {
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			f.Close()
			return nil, err
		}
	}
	return f, nil
}
