package staging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"path"
	"sync"
	"syscall"
	"time"
)

// ChunkSize is the unit of resume: an interrupted copy restarts after the
// last recorded chunk that still checks out.
const ChunkSize = 8 << 20

// Result is what a Copy did.
type Result struct {
	Size    int64  `json:"size"`    // of the file
	Bytes   int64  `json:"bytes"`   // read from the source by this call
	Resumed int64  `json:"resumed"` // kept from an earlier, interrupted copy (re-verified)
	SHA256  string `json:"sha256"`  // of the whole file, hex
	// Verified says how the target's file was checked against SHA256.
	Verified string `json:"verified"`
}

// How a copy was verified (Result.Verified).
const (
	// VerifiedOnTheWay: the target is this node's filesystem; the bytes
	// were hashed on their way in (a read-back would come from the page
	// cache and check nothing).
	VerifiedOnTheWay = "on the way in"
	// VerifiedWhileWritten: the site hashed the file as it was written.
	VerifiedWhileWritten = "by the site while written"
	// VerifiedBySite: the site hashed the finished file.
	VerifiedBySite = "by the site"
	// VerifiedReadBack: the file was read back from the target.
	VerifiedReadBack = "read back"
	// VerifiedAgainstSource: as VerifiedOnTheWay, and what arrived has
	// the SHA-256 the source's site computed of the source.
	VerifiedAgainstSource = "on the way in and against the site's hash of the source"
)

// partState is kept next to the part file: the source it is a copy of and,
// for each chunk written, the state of the whole file's SHA-256 after it
// (Go's hashes marshal their state). A resume re-hashes each recorded
// chunk from the state before it and must arrive at the recorded state:
// the same check as a per-chunk checksum, without hashing every byte
// twice during the copy.
type partState struct {
	Size   int64     `json:"size"`
	MTime  time.Time `json:"mtime"`
	Chunk  int64     `json:"chunk"`
	States []string  `json:"sha256_states"`
}

// PartName is where a copy to name is written until it is verified: a
// hidden name in the same directory, so the rename is atomic and no
// partial file is ever visible under name.
func PartName(name string) string {
	dir, base := path.Split(name)
	return dir + "." + base + partSuffix
}

const partSuffix = ".part"

func stateName(name string) string { return PartName(name) + ".json" }

// ErrNoSpace is returned when the target has no room for the file: found
// before copying where the store can tell (Spacer), else when a write
// fails with ENOSPC. The part file is removed either way.
var ErrNoSpace = errors.New("not enough space")

// Spacer is a Store that knows the free space under a directory.
type Spacer interface {
	Free(ctx context.Context, dir string) (int64, error)
}

// Progress is told the bytes done (including a resumed prefix) and the total.
type Progress func(done, total int64)

// Copy copies src's file from to dst's file to. The bytes go to a part
// file, chunk by chunk (each chunk's SHA-256 recorded); the part is
// synced, its SHA-256 checked against the bytes that came from the source
// (on a remote target by the target itself, else by reading it back), and
// only then renamed to to. A copy interrupted at any point resumes from
// its recorded chunks, each re-read and checked first, as long as the
// source still has the same size and mtime.
//
// SHA-256 rather than BLAKE3: it is in the standard library, runs at
// ~1.5 GB/s with the SHA extensions of current x86 and ARM server CPUs,
// faster than the disks and networks it checks, and `sha256sum` on any
// remote site computes the same value.
func Copy(ctx context.Context, src Store, from string, dst Store, to string, progress Progress) (Result, error) {
	info, err := src.Stat(ctx, from)
	if err != nil {
		return Result{}, fmt.Errorf("copy: %w", err)
	}
	if info.IsDir {
		return Result{}, fmt.Errorf("copy %s: is a directory", from)
	}
	res := Result{Size: info.Size}
	part, stateFile := PartName(to), stateName(to)
	// discard removes what a failed copy must not resume from.
	discard := func() {
		dst.Remove(ctx, part)
		dst.Remove(ctx, stateFile)
	}
	whole := sha256.New()
	st := partState{Size: info.Size, MTime: info.ModTime, Chunk: ChunkSize}
	if prev, ok := loadState(ctx, dst, stateFile); ok && prev.Size == info.Size && prev.MTime.Equal(info.ModTime) && prev.Chunk == ChunkSize {
		kept, err := verifyChunks(ctx, dst, part, prev.States, whole)
		if err != nil {
			return res, err
		}
		st.States = prev.States[:kept]
		res.Resumed = int64(kept) * ChunkSize
		if err := dst.Truncate(ctx, part, res.Resumed); err != nil {
			return res, err
		}
	} else {
		if err := dst.Remove(ctx, part); err != nil {
			return res, err
		}
		if err := dst.Remove(ctx, stateFile); err != nil {
			return res, err
		}
	}
	if sp, ok := dst.(Spacer); ok {
		free, err := sp.Free(ctx, path.Dir(to))
		if need := info.Size - res.Resumed; err == nil && free < need {
			return res, fmt.Errorf("copy %s: %w there: need %d bytes, %d free", to, ErrNoSpace, need, free)
		}
	}
	// A resumed copy from a site that hashes its own files is hashed there
	// while its bytes come, so it is checked against the source itself:
	// the hash of the bytes as they arrived would also pass kept chunks of
	// a source since changed under the same size and mtime. A fresh copy
	// is not: its bytes came in one pass, and the source's size and mtime
	// looked at again after it say whether they changed meanwhile; the
	// site's hash would read the whole source a second time there (a
	// second pass over its disks where the file outgrows its page cache;
	// on loopback +11 % of a download's time).
	var atSource *sourceHash
	if h, ok := src.(Hasher); ok && res.Resumed > 0 {
		atSource = hashAtSource(ctx, h, from)
		defer atSource.stop()
	}
	var site SiteHash
	if sh, ok := dst.(StreamHasher); ok {
		if site, err = sh.HashWhileWritten(ctx, part); err == nil && site.Written(res.Resumed) != nil {
			site.Close()
			site = nil
		}
	}
	if err := copyChunks(ctx, src, from, dst, part, stateFile, &st, &res, whole, site, progress); err != nil {
		if site != nil {
			site.Close()
		}
		if errors.Is(err, syscall.ENOSPC) {
			// The space is what is short; a part kept for resuming would
			// hold on to it.
			discard()
			return res, fmt.Errorf("copy %s: %w there (the part file was removed): %v", to, ErrNoSpace, err)
		}
		return res, err
	}
	res.SHA256 = hex.EncodeToString(whole.Sum(nil))
	// A source written to while it was read has the same size but a new
	// mtime; its copy may mix the two versions. (A file under a chunk is
	// read in one request: a round trip more per small file would cost
	// more than the check is worth.)
	if info.Size >= ChunkSize {
		now, err := src.Stat(ctx, from)
		if err != nil {
			return res, fmt.Errorf("copy: %w", err)
		}
		if now.Size != info.Size || !now.ModTime.Equal(info.ModTime) {
			discard()
			return res, fmt.Errorf("copy %s: the source changed while it was copied (size %d, mtime %s before; %d, %s after); the part file was removed",
				from, info.Size, info.ModTime.Format(time.RFC3339Nano), now.Size, now.ModTime.Format(time.RFC3339Nano))
		}
	}
	// Check what is on the target before it gets its name: where the
	// target can hash its own files, there; else by reading it back. Not
	// on this node's own filesystems: a read-back right after the write
	// comes from the page cache, which holds the bytes hashed on their way
	// in, so it would check nothing and cost a pass over the file.
	onDisk, how := res.SHA256, VerifiedOnTheWay
	if site != nil {
		// A site hash that failed (a tool missing there, the session
		// cut) says nothing about the file: check it the slow way.
		if onDisk, err = site.Sum(); err == nil {
			how = VerifiedWhileWritten
		}
		site.Close()
	}
	if _, local := dst.(*DirStore); !local && how == VerifiedOnTheWay {
		if onDisk, how, err = targetSHA256(ctx, dst, part); err != nil {
			return res, err
		}
	}
	res.Verified = how
	if onDisk != res.SHA256 {
		discard()
		return res, fmt.Errorf("copy %s: verification failed: the source gave SHA-256 %s, the target file has %s; the part file was removed", to, res.SHA256, onDisk)
	}
	// A site that could not hash the source (no tool, exec refused) says
	// nothing against the copy.
	if atSource != nil {
		if sum, err := atSource.result(); err == nil {
			if sum != res.SHA256 {
				discard()
				return res, fmt.Errorf("copy %s: verification failed: the copy has SHA-256 %s, the source's site computed %s for %s; the part file was removed", to, res.SHA256, sum, from)
			}
			if how == VerifiedOnTheWay {
				res.Verified = VerifiedAgainstSource
			}
		}
	}
	if err := dst.Rename(ctx, part, to); err != nil {
		return res, err
	}
	return res, dst.Remove(ctx, stateFile)
}

// Chunks are read, written and hashed in a pipeline: the next chunk
// comes from the source while this one is written, and the whole file's
// SHA-256 is computed beside the write. Its state after each chunk is
// recorded (partState), but
// nothing is synced until the end: a resume re-reads and re-checks every
// recorded chunk before trusting it, so a chunk lost in a crash is found
// then, and a sync per chunk only made the transfer wait for the disk
// (on sftp, a round trip and a server fsync per 8 MiB). The part is
// synced once, before it is verified and renamed.
//
// The state is written beside the transfer, not in its path: on a
// remote target a save is several round trips (create, write, close,
// rename): saving after each chunk in line held an upload over a 20 ms
// RTT link to 14 MB/s, 35 with the saver. The saver writes the latest
// state whenever it is free; a state that lags the part only means a
// resume re-sends a little more.
const inFlight = 2 + writesInFlight // chunk buffers: one being read, the ones being written, one spare

// stateSaver writes a copy's part state in the background, latest first.
type stateSaver struct {
	mu     sync.Mutex
	latest *partState
	wake   chan struct{}
	done   chan struct{}
	err    error
}

func startSaver(ctx context.Context, cancel context.CancelFunc, dst Store, stateFile string) *stateSaver {
	sv := &stateSaver{wake: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(sv.done)
		for range sv.wake {
			sv.mu.Lock()
			st := sv.latest
			sv.latest = nil
			sv.mu.Unlock()
			if st == nil {
				continue
			}
			if err := saveState(ctx, dst, stateFile, st); err != nil {
				// As a failed write would: the copy stops.
				sv.err = err
				cancel()
				return
			}
		}
	}()
	return sv
}

// record queues st (its States are only ever appended to, so sharing
// them is safe) in place of any state not written yet.
func (sv *stateSaver) record(st partState) {
	st.States = st.States[:len(st.States):len(st.States)]
	sv.mu.Lock()
	sv.latest = &st
	sv.mu.Unlock()
	select {
	case sv.wake <- struct{}{}:
	default:
	}
}

// stop waits for the last queued state to be written: after the copy
// the part is renamed and the state removed, which must not race a save.
func (sv *stateSaver) stop() error {
	close(sv.wake)
	<-sv.done
	return sv.err
}

type block struct {
	buf []byte
	n   int
	err error
}

func copyChunks(ctx context.Context, src Store, from string, dst Store, part, stateFile string, st *partState, res *Result, whole hash.Hash,
	site SiteHash, progress Progress) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r, err := src.Open(ctx, from, res.Resumed)
	if err != nil {
		return err
	}
	w, err := dst.Append(ctx, part)
	if err != nil {
		r.Close()
		return err
	}
	defer w.Close()
	// A file smaller than a chunk gets buffers of its size (one byte
	// more, so the read that fills it also sees the end): four 8 MiB
	// buffers per copy of a 4 KiB file were most of its cost.
	bufSize := ChunkSize
	if rest := st.Size - res.Resumed; rest < ChunkSize {
		bufSize = int(rest) + 1
	}
	free := make(chan []byte, inFlight)
	for range inFlight {
		free <- make([]byte, bufSize)
	}
	filled := make(chan block, inFlight)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(filled)
		defer r.Close()
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				return
			}
			n, err := io.ReadFull(r, buf)
			select {
			case filled <- block{buf, n, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	// Stop the reader (cancel, then wait) on every way out.
	defer func() { cancel(); <-readerDone }()
	saver := startSaver(ctx, cancel, dst, stateFile)
	err = copyLoop(ctx, filled, free, w, part, st, res, whole, site, saver, progress)
	if serr := saver.stop(); serr != nil && (err == nil || errors.Is(err, context.Canceled)) {
		// The saver's failure is what stopped the copy.
		return fmt.Errorf("copy %s: record progress: %w", part, serr)
	}
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if res.Resumed+res.Bytes != st.Size {
		return fmt.Errorf("copy: the source changed while it was copied: %d bytes read, %d expected", res.Resumed+res.Bytes, st.Size)
	}
	return w.Sync()
}

// writesInFlight is how many chunk writes overlap where the target
// takes writes at an offset (sftp): waiting for all of a chunk's
// acknowledgements before sending the next drained the link at every
// chunk, a round trip per 8 MiB on a WAN.
const writesInFlight = 2

// overlappedWriter is a Writer that takes concurrent writes at offsets
// and gains from them (a network round trip per write). Local files are
// written in order: their writes return when copied to the page cache.
type overlappedWriter interface {
	io.WriterAt
	overlaps()
}

type pendingWrite struct {
	end int64 // offset after the chunk
	buf []byte
	n   int
	err chan error
}

// copyLoop writes and hashes the chunks the reader filled.
func copyLoop(ctx context.Context, filled <-chan block, free chan<- []byte, w Writer, part string, st *partState, res *Result,
	whole hash.Hash, site SiteHash, saver *stateSaver, progress Progress) error {
	wa, overlap := w.(overlappedWriter)
	depth := 1
	if overlap {
		depth = writesInFlight
	}
	var queue []pendingWrite
	// A write still running holds its buffer and the file.
	defer func() {
		for _, p := range queue {
			<-p.err
		}
	}()
	// settle waits for the oldest write: then its bytes are on the target.
	settle := func() error {
		p := queue[0]
		queue = queue[1:]
		if err := <-p.err; err != nil {
			return fmt.Errorf("copy %s: write: %w", part, err)
		}
		res.Bytes += int64(p.n)
		if site != nil && site.Written(p.end) != nil {
			// Verified the slow way at the end instead.
			site.Close()
			site = nil
		}
		if progress != nil {
			progress(p.end, st.Size)
		}
		free <- p.buf
		return nil
	}
	off := res.Resumed
	for b := range filled {
		if err := ctx.Err(); err != nil {
			return err
		}
		if b.n == 0 {
			free <- b.buf
		} else {
			var state []byte
			var serr error
			hashed := make(chan struct{})
			go func() {
				defer close(hashed)
				whole.Write(b.buf[:b.n])
				if b.n == ChunkSize {
					state, serr = hashState(whole)
				}
			}()
			p := pendingWrite{end: off + int64(b.n), buf: b.buf, n: b.n, err: make(chan error, 1)}
			if overlap {
				go func(data []byte, at int64) {
					_, err := wa.WriteAt(data, at)
					p.err <- err
				}(b.buf[:b.n], off)
			} else {
				p.err <- writeInPieces(w, b.buf[:b.n])
			}
			off = p.end
			queue = append(queue, p)
			<-hashed
			if serr != nil {
				return serr
			}
			if b.n == ChunkSize {
				// A state may run ahead of the writes: a resume checks
				// every recorded chunk against the part anyway.
				st.States = append(st.States, hex.EncodeToString(state))
				saver.record(*st)
			}
			for len(queue) >= depth {
				if err := settle(); err != nil {
					return err
				}
			}
		}
		if errors.Is(b.err, io.EOF) || errors.Is(b.err, io.ErrUnexpectedEOF) {
			break
		}
		if b.err != nil {
			return fmt.Errorf("copy: read source: %w", b.err)
		}
	}
	for len(queue) > 0 {
		if err := settle(); err != nil {
			return err
		}
	}
	return nil
}

// pieceSize bounds one write to a local file. The kernel gives a write
// page cache folios up to its size; an 8 MiB write takes 2 MiB ones,
// which on a VM that hands free memory back to its host (virtio free
// page reporting works on 2 MiB blocks) are memory the host must fault
// in again: 1 GiB written with dd in 8 MiB writes ran at 79-195 MB/s in
// four rounds of six, in 256 KiB writes at 2.1-2.6 GB/s in all six.
const pieceSize = 256 << 10

func writeInPieces(w io.Writer, b []byte) error {
	for len(b) > 0 {
		n := min(len(b), pieceSize)
		if _, err := w.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// verifyChunks re-reads the recorded chunks of a part file and returns how
// many, from the start, still match their recorded hash states; whole
// ends in the state after the last of them.
func verifyChunks(ctx context.Context, s Store, part string, states []string, whole hash.Hash) (int, error) {
	r, err := s.Open(ctx, part, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer r.Close()
	buf := make([]byte, ChunkSize)
	for i, want := range states {
		prev, err := hashState(whole)
		if err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			return i, nil
		}
		whole.Write(buf)
		got, err := hashState(whole)
		if err != nil {
			return 0, err
		}
		if hex.EncodeToString(got) != want {
			return i, whole.(encoding.BinaryUnmarshaler).UnmarshalBinary(prev)
		}
	}
	return len(states), nil
}

// hashState is a hash's state, to resume or compare it.
func hashState(h hash.Hash) ([]byte, error) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, fmt.Errorf("copy: %T cannot save its state", h)
	}
	return m.MarshalBinary()
}

func loadState(ctx context.Context, s Store, name string) (partState, bool) {
	r, err := s.Open(ctx, name, 0)
	if err != nil {
		return partState{}, false
	}
	defer r.Close()
	var st partState
	if err := json.NewDecoder(io.LimitReader(r, 16<<20)).Decode(&st); err != nil {
		return partState{}, false
	}
	return st, true
}

// saveState replaces the state file: written to a temporary name, then
// renamed.
func saveState(ctx context.Context, s Store, name string, st *partState) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := name + ".tmp"
	if err := s.Remove(ctx, tmp); err != nil {
		return err
	}
	w, err := s.Append(ctx, tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, bytes.NewReader(data)); err != nil {
		w.Close()
		return err
	}
	// Not synced, nor is its rename: a state file lost in a crash costs a
	// restart from the first chunk, and one that survives is only a list
	// of claims that a resume checks against the part file.
	if err := w.Close(); err != nil {
		return err
	}
	if u, ok := s.(unsyncedRenamer); ok {
		return u.renameUnsynced(tmp, name)
	}
	return s.Rename(ctx, tmp, name)
}

// unsyncedRenamer is a Store whose Rename also makes the rename durable
// (a local directory's fsync) and that can skip that. A copy's part state
// is renamed into place after every chunk; on a local disk each directory
// sync was a device cache flush in the middle of the part's writeback,
// and a 1 GiB download spent its time waiting in write.
type unsyncedRenamer interface {
	renameUnsynced(from, to string) error
}

// sourceHash is a source file being hashed by its site during a copy.
type sourceHash struct {
	cancel context.CancelFunc
	done   chan struct{}
	sum    string
	err    error
}

func hashAtSource(ctx context.Context, h Hasher, name string) *sourceHash {
	ctx, cancel := context.WithCancel(ctx)
	s := &sourceHash{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.sum, s.err = h.SHA256(ctx, name)
	}()
	return s
}

// result waits for the site's SHA-256 of the source.
func (s *sourceHash) result() (string, error) {
	<-s.done
	return s.sum, s.err
}

// stop ends the site's hash if it still runs (the copy failed first).
func (s *sourceHash) stop() {
	s.cancel()
	<-s.done
}

func targetSHA256(ctx context.Context, s Store, name string) (string, string, error) {
	if h, ok := s.(Hasher); ok {
		if sum, err := h.SHA256(ctx, name); err == nil {
			return sum, VerifiedBySite, nil
		}
	}
	sum, err := fileSHA256(ctx, s, name)
	return sum, VerifiedReadBack, err
}

// fileSHA256 reads a file of a store and returns its SHA-256.
func fileSHA256(ctx context.Context, s Store, name string) (string, error) {
	r, err := s.Open(ctx, name, 0)
	if err != nil {
		return "", err
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return "", fmt.Errorf("read back %s: %w", name, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
