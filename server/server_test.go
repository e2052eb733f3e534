package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

func openTest(t testing.TB, listen string) *Server {
	t.Helper()
	// Short path: unix socket paths are limited to about 100 bytes.
	dir, err := os.MkdirTemp("", "sbx")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s, err := Open(context.Background(), Options{StateDir: dir, Listen: listen, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestTCPNeedsTokenAndStateIsPrivate(t *testing.T) {
	s := openTest(t, "127.0.0.1:0")
	s.Start()
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	url := "https://" + s.TCPAddr() + "/v1/apps"
	// Only the pin is checked below; this client proves the token check
	// sits behind TLS.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := insecure.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: HTTP %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err = insecure.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token: HTTP %d, want 401", resp.StatusCode)
	}
	c, err := api.NewClient("https://"+s.TCPAddr(), api.ClientOptions{TokenFile: TokenPath(s.opts.StateDir), CertSHA256: s.CertSHA256()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apps(context.Background()); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	wrongPin := strings.Repeat("ab", 32)
	c, err = api.NewClient("https://"+s.TCPAddr(), api.ClientOptions{TokenFile: TokenPath(s.opts.StateDir), CertSHA256: wrongPin})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Apps(context.Background()); err == nil || !strings.Contains(err.Error(), "does not match the pinned") {
		t.Fatalf("a wrong pin was accepted: %v", err)
	}
	if _, err := api.NewClient("https://"+s.TCPAddr(), api.ClientOptions{}); err == nil {
		t.Fatal("https without a pin was accepted")
	}
	for path, want := range map[string]os.FileMode{s.opts.StateDir: 0o700, TokenPath(s.opts.StateDir): 0o600, keyPath(s.opts.StateDir): 0o600, SocketPath(s.opts.StateDir): 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %o, want %o", path, st.Mode().Perm(), want)
		}
	}
	// The unix socket needs no token: the directory is the owner's.
	uc, _ := api.NewClient("unix://"+SocketPath(s.opts.StateDir), api.ClientOptions{})
	if _, err := uc.Version(context.Background()); err != nil {
		t.Fatalf("unix socket: %v", err)
	}
}

func TestSecondServerOnStateDirRefused(t *testing.T) {
	s := openTest(t, "")
	_, err := Open(context.Background(), Options{StateDir: s.opts.StateDir})
	if err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server: %v", err)
	}
}

var fuzzApp = &dataflow.App{Name: "f", Parameters: dataflow.AppParameters{InitialStatus: dataflow.AppRunning},
	Modules: []*dataflow.Module{{Name: "m", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistDefault}}}

// FuzzAPI sends arbitrary bodies to every endpoint: no request may crash
// the head or be answered with an internal error caused by a panic.
func FuzzAPI(f *testing.F) {
	s := openTest(f, "")
	h := s.Handler()
	ctx := context.Background()
	if _, err := s.broker.CreateApp(ctx, fuzzApp, []dataflow.Message{{Body: "a"}}); err != nil {
		f.Fatal(err)
	}
	paths := []string{"/v1/apps", "/v1/apps/1/tasks", "/v1/apps/1/status", "/v1/apps/1/state", "/v1/pilots",
		"/v1/pilots/1/lease", "/v1/pilots/1/report", "/v1/pilots/1/heartbeat", "/v1/pilots/1/leave"}
	f.Add(uint8(0), []byte(`{"app":{"name":"x","modules":[]}}`))
	f.Add(uint8(1), []byte(`{"messages":[{"module":"m","body":"b"}]}`))
	f.Add(uint8(3), []byte(`{"kind":"semaphore","op":"create","name":"s","value":"1"}`))
	f.Add(uint8(4), []byte(`{"app_id":1,"host":"h"}`))
	f.Add(uint8(5), []byte(`{"wants":[{"module":"m","max":2}],"wait":0}`))
	f.Add(uint8(6), []byte(`{"completions":[{"task_id":1,"gen":1,"exit_code":0,"messages":[{"body":""}]}]}`))
	f.Add(uint8(2), []byte(`{"status":"FINISHED"}`))
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		path := paths[int(which)%len(paths)]
		// Long polls (lease, wait) end with the request's context.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req := httptest.NewRequest("POST", path, bytes.NewReader(body)).WithContext(ctx)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusInternalServerError && strings.Contains(rec.Body.String(), "internal error") {
			t.Fatalf("%s %q: panic: %s", path, body, rec.Body.String())
		}
	})
}
