package staging

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/scalebox-hpc/scalebox/templates"
)

// SFTPAuth is how to reach a remote site. Exactly one host key check is
// required: a known_hosts file or a pinned key; there is no "accept any".
type SFTPAuth struct {
	// KeyFile is a private key (unencrypted; use an agent for others).
	KeyFile string
	// KnownHosts is a known_hosts file (default ~/.ssh/known_hosts).
	KnownHosts string
	// HostKey pins the server's public key, authorized_keys format.
	HostKey string
	// Timeout bounds connecting and authenticating (default 30 s).
	Timeout time.Duration
}

// SFTPStore is a tier on a remote site, reached over SSH with
// github.com/pkg/sftp. Names are relative to Root on the server.
type SFTPStore struct {
	root   string
	c      *sftpConn // pooled (sftppool.go)
	conn   *ssh.Client
	client *sftp.Client
	where  string
}

// DialSFTP connects to u (its path is the store's root), reusing an idle
// connection to the same site and account when there is one.
func DialSFTP(ctx context.Context, u URL, auth SFTPAuth) (*SFTPStore, error) {
	if u.Scheme != SchemeSFTP {
		return nil, fmt.Errorf("dial sftp: %s is not an sftp URL", u)
	}
	key := sftpKey(u, auth)
	for c := takeIdle(key); c != nil; c = takeIdle(key) {
		// A round trip that the store needs anyway tells whether the
		// connection still works.
		if s, err := newSFTPStore(c, u); err == nil {
			return s, nil
		}
		c.close()
	}
	conn, client, err := dialSFTP(ctx, u, auth)
	if err != nil {
		return nil, err
	}
	c := newConn(key, conn, client)
	s, err := newSFTPStore(c, u)
	if err != nil {
		c.close()
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	return s, nil
}

// newSFTPStore is a store rooted at u's path on connection c.
func newSFTPStore(c *sftpConn, u URL) (*SFTPStore, error) {
	root := path.Clean(u.Path)
	if real, err := c.client.RealPath(root); err == nil {
		root = real
	} else if _, err := c.client.Getwd(); err != nil {
		// Not a missing root (which a store to write creates): the
		// connection does not answer.
		return nil, err
	}
	addr := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	return &SFTPStore{root: root, c: c, conn: c.ssh, client: c.client, where: fmt.Sprintf("sftp://%s@%s", u.User, addr)}, nil
}

// dialSFTP opens a new connection with its sftp session.
func dialSFTP(ctx context.Context, u URL, auth SFTPAuth) (*ssh.Client, *sftp.Client, error) {
	hostKey, err := hostKeyCallback(auth)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", u, err)
	}
	var methods []ssh.AuthMethod
	if auth.KeyFile != "" {
		pem, err := os.ReadFile(auth.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("dial %s: key: %w", u, err)
		}
		signer, err := ssh.ParsePrivateKey(pem)
		if err != nil {
			return nil, nil, fmt.Errorf("dial %s: key %s: %w", u, auth.KeyFile, err)
		}
		methods = append(methods, ssh.PublicKeys(signer))
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		methods = append(methods, agentAuth(sock))
	}
	if len(methods) == 0 {
		return nil, nil, fmt.Errorf("dial %s: no key file and no ssh agent ($SSH_AUTH_SOCK)", u)
	}
	timeout := auth.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	addr := net.JoinHostPort(u.Host, strconv.Itoa(u.Port))
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("dial %s: %w", u, err)
	}
	nc.SetDeadline(time.Now().Add(timeout))
	cc, chans, reqs, err := ssh.NewClientConn(nc, addr, &ssh.ClientConfig{User: u.User, Auth: methods, HostKeyCallback: hostKey, Timeout: timeout})
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("dial %s: %w", u, err)
	}
	nc.SetDeadline(time.Time{})
	conn := ssh.NewClient(cc, chans, reqs)
	// Many requests in flight per file: a WAN copy is bound by latency,
	// not by one request at a time.
	opts := []sftp.ClientOption{sftp.UseConcurrentReads(true), sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(64)}
	client, err := sftp.NewClient(conn, opts...)
	if err == nil {
		if _, ok := client.HasExtension("limits@openssh.com"); ok {
			// The server takes requests of up to 256 KiB (OpenSSH's own
			// client uses that much): 8x fewer packets than the RFC's
			// 32 KiB, and 1.3x the upload and download throughput on the
			// bench. The option must be set when the session starts.
			client.Close()
			client, err = sftp.NewClient(conn, append(opts, sftp.MaxPacketUnchecked(largePacket))...)
		}
	}
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("dial %s: sftp subsystem: %w", u, err)
	}
	return conn, client, nil
}

func hostKeyCallback(a SFTPAuth) (ssh.HostKeyCallback, error) {
	if a.HostKey != "" {
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(a.HostKey))
		if err != nil {
			return nil, fmt.Errorf("pinned host key: %w", err)
		}
		return ssh.FixedHostKey(pk), nil
	}
	file := a.KnownHosts
	if file == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, errors.New("no pinned host key and no home for ~/.ssh/known_hosts")
		}
		file = path.Join(home, ".ssh", "known_hosts")
	}
	cb, err := knownhosts.New(file)
	if err != nil {
		return nil, fmt.Errorf("known hosts: %w", err)
	}
	return cb, nil
}

// full is a name under the root. Names come from URL.Rel (no ".."), and
// Clean keeps a stray one from climbing anyway.
func (s *SFTPStore) full(name string) (string, error) {
	p := path.Join(s.root, path.Clean("/"+name))
	if p != s.root && !strings.HasPrefix(p, strings.TrimSuffix(s.root, "/")+"/") {
		return "", fmt.Errorf("%s: %q is outside the root %s", s.where, name, s.root)
	}
	return p, nil
}

// confined resolves symlinks in p's existing part on the server and
// refuses a path that ends up outside the root.
func (s *SFTPStore) confined(name string) (string, error) {
	p, err := s.full(name)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(name, "/") || strings.Contains("/"+name+"/", "/../") {
		return "", fmt.Errorf("%s: %q: names are relative and have no \"..\"", s.where, name)
	}
	// The deepest existing ancestor decides where p really is; one whose
	// real path cannot be found is refused (fail closed).
	probe := p
	for probe != s.root && probe != "/" {
		if _, err := s.client.Lstat(probe); err == nil {
			break
		}
		probe = path.Dir(probe)
	}
	if probe == s.root {
		if _, err := s.client.Lstat(probe); err != nil {
			// The root itself does not exist yet (a new target directory):
			// nothing under it can be a link out.
			return p, nil
		}
	}
	real, err := s.client.RealPath(probe)
	if err != nil {
		return "", fmt.Errorf("%s: %q: cannot resolve %s to check it stays in the root: %w", s.where, name, probe, err)
	}
	if real != s.root && !strings.HasPrefix(real, strings.TrimSuffix(s.root, "/")+"/") {
		return "", fmt.Errorf("%s: %q leads outside the root %s (to %s)", s.where, name, s.root, real)
	}
	return p, nil
}

func (s *SFTPStore) wrap(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var se *sftp.StatusError
	if errors.As(err, &se) && se.FxCode() == sftp.ErrSSHFxNoSuchFile {
		err = fmt.Errorf("%w: %v", os.ErrNotExist, err)
	}
	return fmt.Errorf("%s %s on %s: %w", op, name, s.where, err)
}

func (s *SFTPStore) Stat(_ context.Context, name string) (Info, error) {
	p, err := s.confined(name)
	if err != nil {
		return Info{}, err
	}
	fi, err := s.client.Stat(p)
	if err != nil {
		return Info{}, s.wrap("stat", name, err)
	}
	return infoOf(fi), nil
}

func (s *SFTPStore) Open(_ context.Context, name string, offset int64) (io.ReadCloser, error) {
	p, err := s.confined(name)
	if err != nil {
		return nil, err
	}
	f, err := s.client.Open(p)
	if err != nil {
		return nil, s.wrap("open", name, err)
	}
	if _, err := seekTo(f, offset); err != nil {
		return nil, s.wrap("seek", name, err)
	}
	return streamFile(f), nil
}

// streamFile reads f through its WriteTo, which keeps the sftp read
// requests in flight across the whole file. Read on the file waits for
// all the requests of each call to come back before the next call sends
// any: with Copy's 8 MiB reads, half the requests allowed were in flight
// and the pipe drained at every chunk (a round trip per 8 MiB on a WAN).
// The pipe adds no copy: a Read takes the bytes straight from the
// pending Write.
func streamFile(f *sftp.File) io.ReadCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, err := f.WriteTo(pw)
		pw.CloseWithError(err) // nil: io.EOF for the reader
	}()
	return &fileStream{pr: pr, f: f, done: done}
}

type fileStream struct {
	pr   *io.PipeReader
	f    *sftp.File
	done chan struct{}
}

func (r *fileStream) Read(b []byte) (int, error) { return r.pr.Read(b) }

func (r *fileStream) Close() error {
	r.pr.CloseWithError(errors.New("sftp stream closed"))
	<-r.done
	return r.f.Close()
}

// largePacket is the payload of a read or write request to a server with
// limits@openssh.com: its max-read and max-write lengths (256 KiB less
// header room) as OpenSSH's sftp-server reports them.
const largePacket = 255 << 10

// sftpWriter writes at its own offset, never with SSH_FXF_APPEND: an
// appending server (OpenSSH's, through pwrite on an O_APPEND file) puts
// every request at the end, so Copy's overlapped chunk writes
// (io.WriterAt) would land in the order they arrived.
type sftpWriter struct {
	*sftp.File
	off int64
}

func (w *sftpWriter) overlaps() {}

func (w *sftpWriter) Write(b []byte) (int, error) {
	n, err := w.File.WriteAt(b, w.off)
	w.off += int64(n)
	return n, err
}

// Sync asks the server to fsync (the fsync@openssh.com extension); a
// server without it leaves durability to its own close.
func (w *sftpWriter) Sync() error {
	if err := w.File.Sync(); err != nil && !errors.Is(err, sftp.ErrSSHFxOpUnsupported) {
		return err
	}
	return nil
}

func (s *SFTPStore) Append(_ context.Context, name string) (Writer, error) {
	p, err := s.confined(name)
	if err != nil {
		return nil, err
	}
	if err := s.client.MkdirAll(path.Dir(p)); err != nil {
		return nil, s.wrap("mkdir", path.Dir(name), err)
	}
	f, err := s.client.OpenFile(p, os.O_WRONLY|os.O_CREATE)
	if err != nil {
		return nil, s.wrap("open", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, s.wrap("stat", name, err)
	}
	return &sftpWriter{File: f, off: fi.Size()}, nil
}

func (s *SFTPStore) Truncate(_ context.Context, name string, size int64) error {
	p, err := s.confined(name)
	if err != nil {
		return err
	}
	return s.wrap("truncate", name, s.client.Truncate(p, size))
}

func (s *SFTPStore) Rename(_ context.Context, from, to string) error {
	pf, err := s.confined(from)
	if err != nil {
		return err
	}
	pt, err := s.confined(to)
	if err != nil {
		return err
	}
	// posix-rename@openssh.com replaces the target atomically; plain SFTP
	// rename fails when it exists.
	if err := s.client.PosixRename(pf, pt); err != nil {
		return s.wrap("rename", from, err)
	}
	return nil
}

func (s *SFTPStore) Remove(_ context.Context, name string) error {
	p, err := s.confined(name)
	if err != nil {
		return err
	}
	if err := s.client.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		if werr := s.wrap("remove", name, err); !errors.Is(werr, os.ErrNotExist) {
			return werr
		}
	}
	return nil
}

func (s *SFTPStore) List(_ context.Context, dir string) ([]Info, error) {
	p, err := s.confined(dir)
	if err != nil {
		return nil, err
	}
	fis, err := s.client.ReadDir(p)
	if err != nil {
		return nil, s.wrap("list", dir, err)
	}
	out := make([]Info, 0, len(fis))
	for _, fi := range fis {
		out = append(out, infoOf(fi))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// SHA256 hashes a file on the remote site (an ssh exec of openssl, else
// sha256sum): a copy is verified without a second transfer. Copy reads
// the file back instead when the site allows no exec or has neither.
func (s *SFTPStore) SHA256(ctx context.Context, name string) (string, error) {
	p, err := s.confined(name)
	if err != nil {
		return "", err
	}
	sess, err := s.conn.NewSession()
	if err != nil {
		return "", err
	}
	defer sess.Close()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	// OpenSSL's SHA-256 uses the CPU's SHA extensions; coreutils'
	// sha256sum often does not (on the CI's Debian: 1.0 GB/s vs 0.17 GB/s,
	// which made the remote check take longer than the upload). p is
	// absolute, so it cannot be read as an option.
	q := templates.ShellQuote(p)
	out, err := sess.Output("openssl dgst -sha256 -r " + q + " 2>/dev/null || sha256sum -b -- " + q)
	if err != nil {
		return "", fmt.Errorf("sha256sum on %s: %w", s.where, err)
	}
	return parseDigest(out, "sha256sum on "+s.where)
}

// parseDigest reads the hex digest that `openssl dgst -r` and sha256sum
// print first on their line.
func parseDigest(out []byte, what string) (string, error) {
	sum, _, _ := strings.Cut(string(out), " ")
	if len(sum) != 64 {
		return "", fmt.Errorf("%s: unexpected output %q", what, out)
	}
	return sum, nil
}

// RemoveAll deletes the whole remote root; tests use it to clean up.
func (s *SFTPStore) RemoveAll(string) error { return s.client.RemoveAll(s.root) }

// Close gives the connection back to the pool (sftppool.go).
func (s *SFTPStore) Close() error {
	c := s.c
	if c == nil {
		return nil
	}
	s.c = nil
	return c.release()
}

// agentAuth offers the keys of the ssh agent at sock.
func agentAuth(sock string) ssh.AuthMethod {
	return ssh.PublicKeysCallback(func() ([]ssh.Signer, error) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return nil, fmt.Errorf("ssh agent %s: %w", sock, err)
		}
		// The connection lives as long as the signers may be used.
		return agent.NewClient(c).Signers()
	})
}

// siteHashScript hashes, on the site, the bytes of file $1 as they are
// announced on stdin: each line is a new end offset, and dd sends the
// bytes from the last one to it into one running SHA-256. A dd that
// fails (no GNU dd flags there, a read error) says so on stderr, which
// makes the whole result unusable rather than a wrong sum.
const siteHashScript = `f=$1
if command -v openssl >/dev/null 2>&1; then h="openssl dgst -sha256 -r"; else h="sha256sum -b"; fi
c=0
while read n; do
  if [ "$n" -gt "$c" ]; then
    dd if="$f" iflag=skip_bytes,count_bytes skip="$c" count=$((n - c)) bs=1048576 status=none || { echo "dd failed at $c" >&2; exit 1; }
  fi
  c=$n
done | $h`

// HashWhileWritten starts a shell on the site that hashes name as Copy
// announces its complete prefixes (StreamHasher). It reads from the
// site's page cache while the upload goes on, so the check costs about
// nothing after the last byte, where SHA256 would read the whole file
// then (~1 s per GiB on the CI machine).
func (s *SFTPStore) HashWhileWritten(ctx context.Context, name string) (SiteHash, error) {
	p, err := s.confined(name)
	if err != nil {
		return nil, err
	}
	h := &sftpSiteHash{where: s.where}
	h.sess, h.stop, err = s.startCommand(ctx, "sh -c "+templates.ShellQuote(siteHashScript)+" sh "+templates.ShellQuote(p),
		func(sess *ssh.Session) (err error) {
			sess.Stdout, sess.Stderr = &h.out, &h.errs
			h.in, err = sess.StdinPipe()
			return err
		})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// startCommand starts cmd on the site in a session of its own, its
// stdin, stdout and stderr wired by wire first. The session is closed
// when ctx ends; stop undoes that.
func (s *SFTPStore) startCommand(ctx context.Context, cmd string, wire func(*ssh.Session) error) (sess *ssh.Session, stop func() bool, err error) {
	if sess, err = s.conn.NewSession(); err != nil {
		return nil, nil, err
	}
	if err = wire(sess); err == nil {
		err = sess.Start(cmd)
	}
	if err != nil {
		sess.Close()
		return nil, nil, err
	}
	return sess, context.AfterFunc(ctx, func() { sess.Close() }), nil
}

type sftpSiteHash struct {
	sess      *ssh.Session
	in        io.WriteCloser
	out, errs bytes.Buffer
	where     string
	stop      func() bool
	closed    bool
}

func (h *sftpSiteHash) Written(n int64) error {
	if h.closed {
		return errors.New("site hash closed")
	}
	_, err := fmt.Fprintf(h.in, "%d\n", n)
	return err
}

func (h *sftpSiteHash) Sum() (string, error) {
	if h.closed {
		return "", errors.New("site hash closed")
	}
	h.in.Close()
	err := h.sess.Wait()
	if err != nil || h.errs.Len() > 0 {
		return "", fmt.Errorf("sha-256 on %s while written: %v %s", h.where, err, strings.TrimSpace(h.errs.String()))
	}
	return parseDigest(h.out.Bytes(), "sha-256 on "+h.where+" while written")
}

func (h *sftpSiteHash) Close() error {
	if h.closed {
		return nil
	}
	h.closed = true
	h.stop()
	return h.sess.Close()
}
