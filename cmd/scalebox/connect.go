package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/pilot"
	"github.com/scalebox-hpc/scalebox/server"
)

// session is how a command reaches the head: a running server's socket or
// TCP address, or, for a state dir with no server, the server code run in
// this process on the database (so a finished local run can be read).
type session struct {
	client *api.Client
	local  *server.Server
}

func (s *session) Close() {
	if s.local != nil {
		s.local.Close()
	}
}

func connect(c *cli.Context) (*session, error) {
	if addr := c.String("server"); addr != "" {
		cl, err := api.NewClient(addr, clientOptions(c))
		if err != nil {
			return nil, withCode(exitUsage, err)
		}
		return &session{client: cl}, nil
	}
	dir := c.String("state-dir")
	// A server that holds the state dir may still be starting: keep trying
	// its socket for a while before giving up.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if cl := liveSocket(c.Context, dir); cl != nil {
			return &session{client: cl}, nil
		}
		if _, err := os.Stat(filepath.Join(dir, "scalebox.db")); err != nil {
			return nil, withCode(exitNoServer, fmt.Errorf("no scalebox server or state in %s: start `scalebox server --state-dir %s`, use `scalebox run`, or pass --server", dir, dir))
		}
		srv, err := server.Open(c.Context, server.Options{StateDir: dir, Version: version, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err == nil {
			return &session{client: api.NewInProcessClient(inProcess{srv.Handler()}), local: srv}, nil
		}
		if !errors.Is(err, server.ErrLocked) {
			return nil, withCode(exitNoServer, err)
		}
		if time.Now().After(deadline) {
			return nil, withCode(exitNoServer, fmt.Errorf("%w, but its socket does not answer", err))
		}
		select {
		case <-c.Context.Done():
			return nil, c.Context.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// clientOptions are the global flags that authenticate to a TCP server.
func clientOptions(c *cli.Context) api.ClientOptions {
	return api.ClientOptions{TokenFile: c.String("token-file"), CertSHA256: c.String("server-cert-sha256")}
}

// liveSocket returns a client for the state dir's server if it answers.
func liveSocket(ctx context.Context, dir string) *api.Client {
	info, err := readServerInfo(dir)
	if err != nil {
		return nil
	}
	cl, err := api.NewClient("unix://"+info.Socket, api.ClientOptions{})
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := cl.Version(ctx); err != nil {
		return nil
	}
	return cl
}

// inProcess serves client requests with the handler directly.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	t.h.ServeHTTP(rec, r)
	return rec.Result(), nil
}

func readServerInfo(dir string) (*server.Info, error) {
	b, err := os.ReadFile(server.InfoPath(dir))
	if err != nil {
		return nil, err
	}
	var info server.Info
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, err
	}
	return &info, nil
}

// appID picks the app: --app, then $APP_ID (set inside slots), then the
// newest app.
func appID(c *cli.Context, s *session) (int64, error) {
	v := c.String("app")
	if v == "" {
		v = os.Getenv("APP_ID")
	}
	if v != "" {
		id, err := strconv.ParseInt(v, 10, 64)
		if err != nil || id <= 0 {
			return 0, usageErr("app id %q is not a positive integer", v)
		}
		return id, nil
	}
	apps, err := s.client.Apps(c.Context)
	if err != nil {
		return 0, err
	}
	if len(apps) == 0 {
		return 0, usageErr("no app exists yet: create one with `scalebox app create DIR` or `scalebox run DIR`")
	}
	return apps[len(apps)-1].ID, nil
}

var appFlag = &cli.StringFlag{Name: "app", Aliases: []string{"a"}, Usage: "app id (default: $APP_ID, else the newest app)"}

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON"}

// inSlot reports whether this process runs inside a slot (as a module
// script): Scalebox recognises that by TASK_ID and WORK_DIR being set.
func inSlot() bool {
	return os.Getenv("TASK_ID") != "" && os.Getenv("WORK_DIR") != ""
}

// requestID names a state change so a retry applies it once. Inside a slot
// the n-th change of a task is "task:ID:n" in every attempt, so a retried
// task's changes are not applied twice.
func requestID() (string, error) {
	if inSlot() {
		path := filepath.Join(os.Getenv("WORK_DIR"), pilot.OpSeqFile)
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return "", err
		}
		defer f.Close()
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			return "", err
		}
		b, _ := io.ReadAll(f)
		n, _ := strconv.Atoi(string(b))
		n++
		if _, err := f.WriteAt([]byte(strconv.Itoa(n)), 0); err != nil {
			return "", err
		}
		return fmt.Sprintf("task:%s:%d", os.Getenv("TASK_ID"), n), nil
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

func printJSON(c *cli.Context, v any) error {
	enc := json.NewEncoder(c.App.Writer)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
