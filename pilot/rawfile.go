package pilot

import (
	"io"
	"io/fs"

	"golang.org/x/sys/unix"
)

// The interface files of every task are read with plain open, read and
// close. On Linux os.Open of a regular file or directory also sets
// O_NONBLOCK, tries to register the fd with the network poller (which
// refuses it) and clears O_NONBLOCK again: five syscalls more for each of
// the work dir and sink-tasks.txt per task, on a node of short tasks a
// tenth of what the pilot asks the kernel (bench/e2e).

// rawFile is a file read with blocking syscalls, outside the poller.
type rawFile struct {
	fd   int
	path string
}

func openRaw(path string, flags int) (*rawFile, error) {
	for {
		fd, err := unix.Open(path, flags|unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: path, Err: err}
		}
		return &rawFile{fd: fd, path: path}, nil
	}
}

func (f *rawFile) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(f.fd, p)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, &fs.PathError{Op: "read", Path: f.path, Err: err}
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f *rawFile) Close() error { return unix.Close(f.fd) }

// dirNames lists dir without "." and "..".
func dirNames(dir string) ([]string, error) {
	f, err := openRaw(dir, unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf [8 << 10]byte
	var names []string
	for {
		n, err := unix.Getdents(f.fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "readdirent", Path: dir, Err: err}
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// readSmall reads at most maxSmallFile bytes of path.
func readSmall(path string) ([]byte, error) {
	f, err := openRaw(path, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxSmallFile))
}
