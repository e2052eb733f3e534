// Package rest is the slurmrestd backend of slurm.Client: our own small
// client for the endpoints pilots need (ping, job submit, jobs, cancel),
// speaking REST API v0.0.38 (Slurm 22.05) and v0.0.40-v0.0.42 (Slurm
// 23.11-24.11), and choosing the newest version the server offers.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/scalebox-hpc/scalebox/slurm"
)

// Versions are the API versions this client speaks, newest first.
var Versions = []string{"v0.0.42", "v0.0.41", "v0.0.40", "v0.0.38"}

// Client talks to one slurmrestd.
type Client struct {
	base  string
	user  string
	token TokenSource
	http  *http.Client

	mu      sync.Mutex
	version string // negotiated; "" until the first call
	codec   codec
}

var _ slurm.Client = (*Client)(nil)

// New returns a client for the slurmrestd at baseURL (http://host:6820)
// authenticating as user with JWTs from token. version forces an API
// version ("" chooses the newest the server offers).
func New(baseURL, user string, token TokenSource, version string) (*Client, error) {
	if user == "" {
		return nil, errors.New("slurmrestd client: a user name is required (X-SLURM-USER-NAME)")
	}
	if token == nil {
		return nil, errors.New("slurmrestd client: a token source is required")
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), user: user, token: token,
		http: &http.Client{Timeout: 60 * time.Second}}
	if version != "" {
		cd, ok := codecFor(version)
		if !ok {
			return nil, fmt.Errorf("slurmrestd client: API version %q not supported (have %s)", version, strings.Join(Versions, ", "))
		}
		c.version, c.codec = version, cd
	}
	return c, nil
}

// APIError is an answer from slurmrestd that is not a success. Slurm
// reports its own problems (a bad partition, a bad token) in errors[]
// with HTTP 500 as often as with 4xx.
type APIError struct {
	Method, Path string
	Status       int
	Messages     []string
}

func (e *APIError) Error() string {
	msg := strings.Join(e.Messages, "; ")
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	return fmt.Sprintf("slurmrestd %s %s: HTTP %d: %s", e.Method, e.Path, e.Status, msg)
}

// TokenSource yields the JWT for each request.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// TokenFile reads the token from a file on every call, so a token renewed
// on disk is picked up. The file must not be readable by others.
type TokenFile string

// Token implements TokenSource.
func (f TokenFile) Token(ctx context.Context) (string, error) {
	st, err := os.Stat(string(f))
	if err != nil {
		return "", fmt.Errorf("slurm token: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("slurm token file %s has mode %v: make it private (chmod 600)", f, st.Mode().Perm())
	}
	b, err := os.ReadFile(string(f))
	if err != nil {
		return "", fmt.Errorf("slurm token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	tok = strings.TrimPrefix(tok, "SLURM_JWT=")
	if tok == "" {
		return "", fmt.Errorf("slurm token file %s is empty", f)
	}
	return tok, nil
}

// ScontrolToken asks `scontrol token` for a token and keeps it until a
// tenth of its lifespan is left.
type ScontrolToken struct {
	User     string        // username= (needs SlurmUser or root); "" for the caller
	Lifespan time.Duration // default 1 h
	Prefix   []string      // e.g. a chroot or ssh command

	mu      sync.Mutex
	tok     string
	expires time.Time
}

// Token implements TokenSource.
func (s *ScontrolToken) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tok != "" && time.Now().Before(s.expires) {
		return s.tok, nil
	}
	life := s.Lifespan
	if life <= 0 {
		life = time.Hour
	}
	args := append(append([]string{}, s.Prefix...), "scontrol", "token", fmt.Sprintf("lifespan=%d", int(life.Seconds())))
	if s.User != "" {
		args = append(args, "username="+s.User)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scontrol token: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	tok := strings.TrimPrefix(strings.TrimSpace(out.String()), "SLURM_JWT=")
	if tok == "" {
		return "", errors.New("scontrol token printed nothing")
	}
	s.tok, s.expires = tok, time.Now().Add(life-life/10)
	return tok, nil
}

// Version returns the API version in use, negotiating it if needed.
func (c *Client) Version(ctx context.Context) (string, error) {
	_, v, err := c.negotiate(ctx)
	return v, err
}

func (c *Client) negotiate(ctx context.Context) (codec, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != "" {
		return c.codec, c.version, nil
	}
	var tried []string
	for _, v := range Versions {
		cd, _ := codecFor(v)
		status, _, err := c.do(ctx, http.MethodGet, cd.pingPath(v), nil)
		if err != nil && status == 0 {
			return nil, "", fmt.Errorf("slurmrestd %s: %w", c.base, err)
		}
		if status == http.StatusOK {
			c.version, c.codec = v, cd
			return cd, v, nil
		}
		tried = append(tried, fmt.Sprintf("%s: HTTP %d", v, status))
		if status != http.StatusNotFound {
			// A version the server has but refuses (bad token): that is
			// the answer, not a reason to try an older version.
			return nil, "", err
		}
	}
	return nil, "", fmt.Errorf("slurmrestd %s offers none of the API versions this scalebox speaks (%s)", c.base, strings.Join(tried, ", "))
}

// do sends one request and returns the status and body; err is an
// *APIError for a non-2xx answer, or the transport error (status 0).
func (c *Client) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	tok, err := c.token.Token(ctx)
	if err != nil {
		return 0, nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-SLURM-USER-NAME", c.user)
	req.Header.Set("X-SLURM-USER-TOKEN", tok)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, data, &APIError{Method: method, Path: path, Status: resp.StatusCode, Messages: errorMessages(data)}
	}
	return resp.StatusCode, data, nil
}

// errorMessages pulls errors[].error/description out of any version's
// answer; a body that is not JSON is returned as text.
func errorMessages(data []byte) []string {
	var e struct {
		Errors []struct {
			Error       string `json:"error"`
			Description string `json:"description"`
			ErrorNumber int    `json:"error_number"`
			ErrNo       int    `json:"errno"`
		} `json:"errors"`
	}
	if json.Unmarshal(data, &e) != nil {
		if s := strings.TrimSpace(string(data)); s != "" {
			if len(s) > 500 {
				s = s[:500] + "..."
			}
			return []string{s}
		}
		return nil
	}
	var out []string
	for _, x := range e.Errors {
		parts := []string{}
		if x.Description != "" {
			parts = append(parts, x.Description)
		}
		if x.Error != "" && x.Error != x.Description {
			parts = append(parts, x.Error)
		}
		if len(parts) > 0 {
			out = append(out, strings.Join(parts, ": "))
		}
	}
	return out
}

// Submit implements slurm.Client.
func (c *Client) Submit(ctx context.Context, job *slurm.Job) (string, error) {
	if len(job.ExtraArgs) > 0 {
		return "", fmt.Errorf("submit %s: sbatch_args %q cannot be sent through slurmrestd; use pool fields or the CLI backend", job.Name, job.ExtraArgs)
	}
	cd, v, err := c.negotiate(ctx)
	if err != nil {
		return "", fmt.Errorf("submit %s: %w", job.Name, err)
	}
	_, data, err := c.do(ctx, http.MethodPost, "/slurm/"+v+"/job/submit", cd.submitBody(job))
	if err != nil {
		return "", fmt.Errorf("submit %s: %w", job.Name, err)
	}
	id, err := cd.submitID(data)
	if err != nil {
		return "", fmt.Errorf("submit %s: %w", job.Name, err)
	}
	return id, nil
}

// Jobs implements slurm.Client with one GET of all jobs, filtered here.
func (c *Client) Jobs(ctx context.Context, ids []string) (map[string]slurm.JobStatus, error) {
	out := make(map[string]slurm.JobStatus, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	cd, v, err := c.negotiate(ctx)
	if err != nil {
		return nil, fmt.Errorf("job status: %w", err)
	}
	_, data, err := c.do(ctx, http.MethodGet, cd.jobsPath(v), nil)
	if err != nil {
		return nil, fmt.Errorf("job status: %w", err)
	}
	all, err := cd.jobs(data)
	if err != nil {
		return nil, fmt.Errorf("job status: %w", err)
	}
	return slurm.Pick(all, ids), nil
}

// Cancel implements slurm.Client, one DELETE per job.
func (c *Client) Cancel(ctx context.Context, ids []string) error {
	_, v, err := c.negotiate(ctx)
	if err != nil {
		return fmt.Errorf("cancel: %w", err)
	}
	var errs []error
	for _, id := range ids {
		_, _, err := c.do(ctx, http.MethodDelete, "/slurm/"+v+"/job/"+id, nil)
		var ae *APIError
		if errors.As(err, &ae) && alreadyEnded(ae.Messages) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cancel %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func alreadyEnded(msgs []string) bool {
	for _, m := range msgs {
		m = strings.ToLower(m)
		if strings.Contains(m, "already completing or completed") || strings.Contains(m, "invalid job id") {
			return true
		}
	}
	return false
}

// Ping implements slurm.Client.
func (c *Client) Ping(ctx context.Context) (slurm.Info, error) {
	cd, v, err := c.negotiate(ctx)
	if err != nil {
		return slurm.Info{}, fmt.Errorf("ping: %w", err)
	}
	_, data, err := c.do(ctx, http.MethodGet, cd.pingPath(v), nil)
	if err != nil {
		return slurm.Info{}, fmt.Errorf("ping: %w", err)
	}
	info, err := cd.ping(data)
	if err != nil {
		return slurm.Info{}, fmt.Errorf("ping: %w", err)
	}
	info.API = v
	return info, nil
}
