// Package server is the head daemon: the HTTP API over the broker, bearer
// token auth on TCP, long-poll leasing for pilots, the lease rescuer and
// the finisher that ends quiescent apps.
package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Options configure a Server.
type Options struct {
	StateDir string
	// Listen is the TCP address ("" for none, "127.0.0.1:0" for any port).
	Listen string
	// LeaseTTL is how long a lease lives without a heartbeat.
	LeaseTTL time.Duration
	// Heartbeat is how often pilots are asked to beat.
	Heartbeat time.Duration
	// ReproduceAfter is how long a node may have no active pilot of an
	// app before the input it held for that app's waiting tasks is
	// produced again elsewhere (broker.Reproduce); 0 never.
	ReproduceAfter time.Duration
	// Synchronous is the broker's SQLite synchronous mode.
	Synchronous string
	// Version is reported by GET /v1/version.
	Version string
	Log     *slog.Logger
	// Slurm builds the batch system of an app's cluster from its
	// definition. Nil turns the pool manager off (local runs).
	Slurm func(name string, c *dataflow.Cluster) (dataflow.BatchSystem, error)
	// HeadPilots starts the local pilot that runs an app's slot_on_head
	// modules (the main router) when its other modules run on Slurm.
	HeadPilots dataflow.BatchSystem
	// Advertise is the https URL pilots on compute nodes use to reach
	// this server; default https://HOSTNAME:PORT of the TCP listener.
	Advertise string
}

// Info is written to STATE_DIR/server.json so clients can find the server.
type Info struct {
	PID    int    `json:"pid"`
	Socket string `json:"socket"`
	TCP    string `json:"tcp,omitempty"`
	// CertSHA256 pins the TCP listener's TLS certificate.
	CertSHA256 string `json:"cert_sha256,omitempty"`
}

// Server is a running head daemon.
type Server struct {
	opts   Options
	broker *broker.Broker
	log    *slog.Logger
	token  string
	lock   *os.File
	cert   tls.Certificate
	pin    string // the certificate's SHA-256

	pilots sync.Map // pilot id -> *dataflow.PilotInfo
	// batchedWaiting is the last pass's Batched count (background only).
	batchedWaiting int

	pm    poolManager
	drain drainState

	mu        sync.Mutex
	advertise string        // the URL pilot jobs are given (set by Listen)
	changed   chan struct{} // closed and replaced when an app's status changes
	kick      chan struct{}
	rescueNow chan struct{}
	handler   http.Handler
	sock      net.Listener
	tcp       net.Listener
	servers   []*http.Server
	bgCancel  context.CancelFunc
	bgDone    sync.WaitGroup
}

// Paths inside a state dir.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, "scalebox.sock") }
func TokenPath(stateDir string) string  { return filepath.Join(stateDir, "token") }
func InfoPath(stateDir string) string   { return filepath.Join(stateDir, "server.json") }
func lockPath(stateDir string) string   { return filepath.Join(stateDir, "lock") }

// ErrLocked means another process owns the state dir.
var ErrLocked = errors.New("state dir is in use by another scalebox server")

// Open prepares a server on a state dir: a private directory on a local
// filesystem, an exclusive lock, the token file, and the broker. It does
// not listen yet; Serve does.
func Open(ctx context.Context, opts Options) (*Server, error) {
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = 30 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = opts.LeaseTTL / 6
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	dir, err := filepath.Abs(opts.StateDir)
	if err != nil {
		return nil, err
	}
	opts.StateDir = dir
	if err := broker.EnsureDir(dir); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := broker.CheckLocalFS(dir); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(lockPath(dir), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock state dir: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("%w (%s)", ErrLocked, dir)
	}
	token, err := ensureToken(TokenPath(dir))
	if err != nil {
		lock.Close()
		return nil, err
	}
	cert, pin, err := loadOrCreateCert(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	b, err := broker.Open(ctx, broker.DBPath(dir), broker.Options{Synchronous: opts.Synchronous})
	if err != nil {
		lock.Close()
		return nil, err
	}
	s := &Server{opts: opts, broker: b, log: opts.Log, token: token, lock: lock, cert: cert, pin: pin, advertise: opts.Advertise,
		changed: make(chan struct{}), kick: make(chan struct{}, 1), rescueNow: make(chan struct{}, 1),
		pm:    poolManager{lastStatus: map[int64]time.Time{}, batch: map[batchKey]dataflow.BatchSystem{}, heads: map[int64]string{}},
		drain: drainState{active: map[int64]time.Time{}, pool: map[int64]*pilotPool{}, draining: map[string]bool{}}}
	s.handler = s.routes()
	return s, nil
}

// ensureToken reads the bearer token, creating a random one (0600) first.
func ensureToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if err := os.Chmod(path, 0o600); err != nil {
			return "", err
		}
		if t := strings.TrimSpace(string(b)); t != "" {
			return t, nil
		}
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	t := hex.EncodeToString(raw)
	if err := writePrivate(path, []byte(t+"\n")); err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	return t, nil
}

// Broker exposes the store (for in-process use by the CLI).
func (s *Server) Broker() *broker.Broker { return s.broker }

// Handler is the API without the TCP token check (unix socket, in-process).
func (s *Server) Handler() http.Handler { return s.handler }

// Start begins the background loops (rescuer, finisher) without listening.
func (s *Server) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.bgCancel = cancel
	s.bgDone.Add(2)
	go func() {
		defer s.bgDone.Done()
		s.background(ctx)
	}()
	// Slurm commands can take long on a busy controller: the pool
	// manager has its own loop so rescues and the finisher never wait.
	go func() {
		defer s.bgDone.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.managePools(ctx)
			}
		}
	}()
}

// Listen opens the unix socket and, if configured, the TCP listener, and
// serves them until Close. It writes server.json.
func (s *Server) Listen() error {
	sockPath := SocketPath(s.opts.StateDir)
	if len(sockPath) > 100 {
		return fmt.Errorf("unix socket path %s is too long (%d bytes, the limit is about 100): use a shorter --state-dir", sockPath, len(sockPath))
	}
	os.Remove(sockPath)
	old := unix.Umask(0o077)
	sock, err := net.Listen("unix", sockPath)
	unix.Umask(old)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", sockPath, err)
	}
	if err := os.Chmod(sockPath, 0o600); err != nil {
		sock.Close()
		return err
	}
	s.sock = sock
	info := Info{PID: os.Getpid(), Socket: sockPath}
	s.serve(sock, s.handler)
	if s.opts.Listen != "" {
		tcp, err := net.Listen("tcp", s.opts.Listen)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", s.opts.Listen, err)
		}
		tcp = tls.NewListener(tcp, &tls.Config{Certificates: []tls.Certificate{s.cert}, MinVersion: tls.VersionTLS13})
		s.tcp = tcp
		info.TCP = tcp.Addr().String()
		info.CertSHA256 = s.pin
		s.mu.Lock()
		if s.advertise == "" {
			s.advertise = advertise(tcp.Addr())
		}
		s.mu.Unlock()
		s.serve(tcp, s.requireToken(s.handler))
	}
	b, _ := json.Marshal(info)
	tmp := InfoPath(s.opts.StateDir) + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, InfoPath(s.opts.StateDir))
}

// CertSHA256 is the fingerprint pilots pin.
func (s *Server) CertSHA256() string { return s.pin }

// TokenFile is the file holding the TCP bearer token.
func (s *Server) TokenFile() string { return TokenPath(s.opts.StateDir) }

// TCPAddr is the TCP listener's address, if any.
func (s *Server) TCPAddr() string {
	if s.tcp == nil {
		return ""
	}
	return s.tcp.Addr().String()
}

func (s *Server) serve(l net.Listener, h http.Handler) {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 64 << 10}
	s.servers = append(s.servers, hs)
	go func() {
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("serve", "addr", l.Addr().String(), "err", err)
		}
	}()
}

// Close stops listening, ends background loops and closes the store.
func (s *Server) Close() error {
	for _, hs := range s.servers {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		hs.Shutdown(ctx)
		cancel()
	}
	if s.bgCancel != nil {
		s.bgCancel()
		s.bgDone.Wait()
	}
	if s.sock != nil {
		os.Remove(InfoPath(s.opts.StateDir))
	}
	err := s.broker.Close()
	s.lock.Close()
	return err
}

func (s *Server) requireToken(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := []byte(r.Header.Get("Authorization"))
		if subtle.ConstantTimeCompare(got, want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="scalebox"`)
			writeError(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token (see STATE_DIR/token)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// statusChanged wakes everyone waiting for an app to end.
func (s *Server) statusChanged() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *Server) changes() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// finishCoalesce bounds how often reports trigger the quiescence check.
const finishCoalesce = 20 * time.Millisecond

// advertise is the URL pilots are given for a listener: its address, with
// the host name in place of a wildcard address.
func advertise(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return "https://" + a.String()
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return "https://" + net.JoinHostPort(host, port)
}

// advertiseURL is the head's URL for pilot jobs ("" before Listen).
func (s *Server) advertiseURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.advertise
}

// kickRescue asks the rescuer to run now (a pilot job ended under tasks).
func (s *Server) kickRescue() {
	select {
	case s.rescueNow <- struct{}{}:
	default:
	}
}

// kickFinisher asks the finisher to look at quiescence soon.
func (s *Server) kickFinisher() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Server) background(ctx context.Context) {
	rescue := time.NewTicker(500 * time.Millisecond)
	defer rescue.Stop()
	finish := time.NewTicker(time.Second)
	defer finish.Stop()
	lost := time.NewTicker(s.opts.Heartbeat)
	defer lost.Stop()

	// Reports kick the finisher; kicks within finishCoalesce share one check.
	soon := time.NewTimer(time.Hour)
	soon.Stop()
	armed := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.rescueNow:
			s.rescue(ctx)
		case <-rescue.C:
			s.rescue(ctx)
		case <-lost.C:
			if n, err := s.broker.MarkLostPilots(ctx, 3*s.opts.Heartbeat+s.opts.LeaseTTL/2); err == nil && n > 0 {
				s.log.Warn("pilots stopped reporting", "pilots", n)
			}
			s.reproduce(ctx)
		case <-finish.C:
			s.finishQuiescent(ctx)
		case <-s.kick:
			if !armed {
				soon.Reset(finishCoalesce)
				armed = true
			}
		case <-soon.C:
			armed = false
			s.finishQuiescent(ctx)
		}
	}
}

func (s *Server) rescue(ctx context.Context) {
	rr, err := s.broker.Rescue(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Error("rescue", "err", err)
	}
	if rr.Expired > 0 {
		s.log.Warn("leases expired; tasks returned through retry rules", "tasks", rr.Expired)
		s.kickFinisher()
	}
}

// reproduce re-runs the producers of input lost with a node.
func (s *Server) reproduce(ctx context.Context) {
	if s.opts.ReproduceAfter <= 0 {
		return
	}
	rr, err := s.broker.Reproduce(ctx, s.opts.ReproduceAfter)
	if err != nil && ctx.Err() == nil {
		s.log.Error("reproduce", "err", err)
	}
	if rr.Held > 0 || rr.Rerun > 0 {
		s.log.Warn("input on lost nodes: producers run again", "nodes", rr.Hosts, "held", rr.Held, "rerun", rr.Rerun)
	}
	for _, o := range rr.Orphans {
		s.log.Error("task cancelled", "reason", o)
	}
	if rr.Batched != s.batchedWaiting {
		// Said when the number changes, not every pass.
		s.batchedWaiting = rr.Batched
		if rr.Batched > 0 {
			s.log.Warn("tasks wait for a lost node: their producer runs in batches (task_batch_size > 1) and is not run again", "tasks", rr.Batched)
		}
	}
	if len(rr.Orphans) > 0 {
		s.kickFinisher()
	}
}

func (s *Server) finishQuiescent(ctx context.Context) {
	for _, id := range s.broker.AppIDs() {
		st, err := s.broker.FinishIfQuiescent(ctx, id)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("finish check", "app", id, "err", err)
			}
			continue
		}
		if st != "" {
			s.log.Info("app ended", "app", id, "status", st)
			s.statusChanged()
		}
	}
}
