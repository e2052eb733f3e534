package rest

import (
	"context"
	"os/user"
	"testing"

	"github.com/scalebox-hpc/scalebox/slurm/slurmtest"
)

func liveClient(t *testing.T, cl slurmtest.Cluster, version string) *Client {
	t.Helper()
	slurmtest.NeedREST(t, cl)
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cl.RestURL, u.Username, &ScontrolToken{User: u.Username, Prefix: cl.Prefix}, version)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConformanceCI(t *testing.T) {
	c := liveClient(t, slurmtest.CI, "")
	v, err := c.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v != "v0.0.38" {
		t.Fatalf("Slurm 22.05 negotiated %s, want v0.0.38 (the newest it serves)", v)
	}
	slurmtest.Conformance(t, c, slurmtest.CI)
}

func TestConformanceTrixie(t *testing.T) {
	c := liveClient(t, slurmtest.Trixie, "")
	v, err := c.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if v != "v0.0.42" {
		t.Fatalf("Slurm 24.11 negotiated %s, want v0.0.42 (the newest it serves)", v)
	}
	slurmtest.Conformance(t, c, slurmtest.Trixie)
}

// Every v0.0.4x version the 24.11 daemon serves works, not just the newest.
func TestConformanceTrixieV40(t *testing.T) {
	slurmtest.Conformance(t, liveClient(t, slurmtest.Trixie, "v0.0.40"), slurmtest.Trixie)
}

func TestBadTokenIsAnError(t *testing.T) {
	slurmtest.NeedREST(t, slurmtest.CI)
	c, err := New(slurmtest.CI.RestURL, "root", staticToken("not-a-jwt"), "v0.0.38")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Ping(context.Background()); err == nil {
		t.Fatal("ping with a bad token succeeded")
	}
}

type staticToken string

func (s staticToken) Token(context.Context) (string, error) { return string(s), nil }
