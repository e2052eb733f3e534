package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Client talks to a scalebox server over a unix socket or TCP.
type Client struct {
	base  string // http://host:port or http://unix
	token string
	http  *http.Client
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Code int
	Msg  string
}

func (e *StatusError) Error() string { return fmt.Sprintf("server: %s (HTTP %d)", e.Msg, e.Code) }

// IsNotFound reports whether err is a 404 from the server.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// IsConflict reports whether err is a 409 (e.g. the app has ended).
func IsConflict(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusConflict
}

// IsClientError reports whether retrying err unchanged cannot succeed.
func IsClientError(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code >= 400 && se.Code < 500
}

// ClientOptions say how to authenticate to a server.
type ClientOptions struct {
	// TokenFile holds the bearer token a TCP server wants.
	TokenFile string
	// CertSHA256 pins an https server's certificate by its SHA-256
	// fingerprint (hex); the head's certificate is self-signed.
	CertSHA256 string
}

// NewClient returns a client for addr: "unix:///path/to/socket" or
// "https://host:port" (or http:// for a plain TCP server).
func NewClient(addr string, opts ClientOptions) (*Client, error) {
	c := &Client{}
	tr := &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 90 * time.Second}
	tokenFile := opts.TokenFile
	switch {
	case strings.HasPrefix(addr, "unix://"):
		path := strings.TrimPrefix(addr, "unix://")
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}
		c.base = "http://unix"
	case strings.HasPrefix(addr, "http://"), strings.HasPrefix(addr, "https://"):
		if _, err := url.Parse(addr); err != nil {
			return nil, fmt.Errorf("server address %q: %w", addr, err)
		}
		c.base = strings.TrimRight(addr, "/")
		if strings.HasPrefix(addr, "https://") {
			cfg, err := pinnedTLS(opts.CertSHA256)
			if err != nil {
				return nil, err
			}
			tr.TLSClientConfig = cfg
		}
	default:
		return nil, fmt.Errorf("server address %q: want unix:///path or https://host:port", addr)
	}
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		c.token = strings.TrimSpace(string(b))
	}
	c.http = &http.Client{Transport: tr}
	return c, nil
}

// Do sends in as JSON (nil for none) and decodes the answer into out.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+"/"+Version+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBodyBytes))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return &StatusError{Code: resp.StatusCode, Msg: e.Error}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
	}
	return nil
}

func (c *Client) Version(ctx context.Context) (VersionInfo, error) {
	var v VersionInfo
	err := c.Do(ctx, "GET", "/version", nil, &v)
	return v, err
}

func (c *Client) CreateApp(ctx context.Context, app *dataflow.App, tasks []dataflow.Message) (int64, error) {
	var out Created
	err := c.Do(ctx, "POST", "/apps", CreateApp{App: app, Tasks: tasks}, &out)
	return out.AppID, err
}

func (c *Client) Apps(ctx context.Context) ([]dataflow.AppInfo, error) {
	var out []dataflow.AppInfo
	err := c.Do(ctx, "GET", "/apps", nil, &out)
	return out, err
}

func (c *Client) App(ctx context.Context, id int64) (*dataflow.AppInfo, error) {
	var out dataflow.AppInfo
	err := c.Do(ctx, "GET", fmt.Sprintf("/apps/%d", id), nil, &out)
	return &out, err
}

// Wait blocks until the app ends or wait passes, and returns its status.
func (c *Client) Wait(ctx context.Context, id int64, wait time.Duration) (*dataflow.AppInfo, error) {
	var out dataflow.AppInfo
	err := c.Do(ctx, "GET", fmt.Sprintf("/apps/%d/wait?timeout=%s", id, wait), nil, &out)
	return &out, err
}

func (c *Client) SetStatus(ctx context.Context, id int64, s dataflow.AppStatus, result string) error {
	return c.Do(ctx, "POST", fmt.Sprintf("/apps/%d/status", id), SetStatus{Status: s, Result: result}, nil)
}

func (c *Client) AddTasks(ctx context.Context, id int64, msgs []dataflow.Message) (int, error) {
	var out Added
	err := c.Do(ctx, "POST", fmt.Sprintf("/apps/%d/tasks", id), AddTasks{Messages: msgs}, &out)
	return out.Added, err
}

// TaskQuery filters a task listing.
type TaskQuery struct {
	Module string
	State  string
	Limit  int
	After  int64
}

func (c *Client) Tasks(ctx context.Context, id int64, q TaskQuery) ([]dataflow.TaskInfo, error) {
	v := url.Values{}
	if q.Module != "" {
		v.Set("module", q.Module)
	}
	if q.State != "" {
		v.Set("state", q.State)
	}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	if q.After > 0 {
		v.Set("after", fmt.Sprint(q.After))
	}
	var out []dataflow.TaskInfo
	err := c.Do(ctx, "GET", fmt.Sprintf("/apps/%d/tasks?%s", id, v.Encode()), nil, &out)
	return out, err
}

func (c *Client) Task(ctx context.Context, taskID int64) (*dataflow.TaskInfo, error) {
	var out dataflow.TaskInfo
	err := c.Do(ctx, "GET", fmt.Sprintf("/tasks/%d", taskID), nil, &out)
	return &out, err
}

func (c *Client) StateOp(ctx context.Context, appID int64, op dataflow.StateOp) (string, error) {
	var out StateResult
	err := c.Do(ctx, "POST", fmt.Sprintf("/apps/%d/state", appID), op, &out)
	return out.Value, err
}

// Semaphores lists semaphores by name prefix, or by a regular expression
// matched against the whole name when regex is set.
func (c *Client) Semaphores(ctx context.Context, appID int64, prefix, regex string) (map[string]int64, error) {
	v := url.Values{"prefix": {prefix}}
	if regex != "" {
		v.Set("regex", regex)
	}
	var out map[string]int64
	err := c.Do(ctx, "GET", fmt.Sprintf("/apps/%d/semaphores?%s", appID, v.Encode()), nil, &out)
	return out, err
}

func (c *Client) Variables(ctx context.Context, appID int64, prefix string) (map[string]string, error) {
	var out map[string]string
	err := c.Do(ctx, "GET", fmt.Sprintf("/apps/%d/variables?prefix=%s", appID, url.QueryEscape(prefix)), nil, &out)
	return out, err
}

func (c *Client) Register(ctx context.Context, r Register) (*Registered, error) {
	var out Registered
	err := c.Do(ctx, "POST", "/pilots", r, &out)
	return &out, err
}

func (c *Client) Lease(ctx context.Context, pilotID int64, l Lease) (*Leased, error) {
	var out Leased
	err := c.Do(ctx, "POST", fmt.Sprintf("/pilots/%d/lease", pilotID), l, &out)
	return &out, err
}

func (c *Client) Report(ctx context.Context, pilotID int64, r Report) (*Reported, error) {
	var out Reported
	err := c.Do(ctx, "POST", fmt.Sprintf("/pilots/%d/report", pilotID), r, &out)
	return &out, err
}

func (c *Client) Heartbeat(ctx context.Context, pilotID int64, h Heartbeat) (*Beat, error) {
	var out Beat
	err := c.Do(ctx, "POST", fmt.Sprintf("/pilots/%d/heartbeat", pilotID), h, &out)
	return &out, err
}

func (c *Client) Leave(ctx context.Context, pilotID int64, l Leave) error {
	return c.Do(ctx, "POST", fmt.Sprintf("/pilots/%d/leave", pilotID), l, nil)
}

func (c *Client) Pilots(ctx context.Context, appID int64) ([]dataflow.PilotInfo, error) {
	var out []dataflow.PilotInfo
	err := c.Do(ctx, "GET", fmt.Sprintf("/apps/%d/pilots", appID), nil, &out)
	return out, err
}

// NewInProcessClient returns a client whose requests go to rt (for
// example a handler in the same process).
func NewInProcessClient(rt http.RoundTripper) *Client {
	return &Client{base: "http://in-process", http: &http.Client{Transport: rt}}
}

// pinnedTLS accepts exactly the certificate with the given fingerprint.
// Name and chain checks are replaced by the pin, which is stronger for a
// self-signed head certificate.
func pinnedTLS(pin string) (*tls.Config, error) {
	pin = strings.ToLower(strings.ReplaceAll(strings.TrimSpace(pin), ":", ""))
	if len(pin) != 64 {
		return nil, fmt.Errorf("https server needs the head certificate's SHA-256 fingerprint (64 hex digits, --server-cert-sha256 or SCALEBOX_SERVER_CERT_SHA256), got %q", pin)
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by VerifyPeerCertificate below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return errors.New("server sent no certificate")
			}
			sum := sha256.Sum256(raw[0])
			if got := hex.EncodeToString(sum[:]); got != pin {
				return fmt.Errorf("server certificate SHA-256 %s does not match the pinned %s", got, pin)
			}
			return nil
		},
	}, nil
}
