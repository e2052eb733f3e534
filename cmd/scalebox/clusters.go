package main

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strings"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/slurm"
	"github.com/scalebox-hpc/scalebox/slurm/rest"
	"github.com/scalebox-hpc/scalebox/slurm/sbatch"
)

// userClustersFile holds cluster definitions shared by all of a user's
// apps, so app files stay portable between sites.
func userClustersFile() string {
	if f := os.Getenv("SCALEBOX_CLUSTERS"); f != "" {
		return f
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}
	return filepath.Join(home, ".scalebox", "clusters.yaml")
}

// mergeUserClusters adds the clusters of ~/.scalebox/clusters.yaml that the
// app does not define itself.
func mergeUserClusters(app *dataflow.App) error {
	f := userClustersFile()
	if f == "" {
		return nil
	}
	data, err := os.ReadFile(f)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	cl, diags := dataflow.ParseClusters(f, data)
	if errs := diags.Errors(); len(errs) > 0 {
		return withCode(exitUsage, fmt.Errorf("%s", errs))
	}
	if app.Clusters == nil {
		app.Clusters = map[string]*dataflow.Cluster{}
	}
	for name, c := range cl {
		if app.Clusters[name] == nil {
			app.Clusters[name] = c
		}
	}
	app.ResolvePools()
	return nil
}

func clusterNames(app *dataflow.App) string {
	var names []string
	for n := range app.Clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none (add a clusters: section to app.yaml or " + userClustersFile() + ")"
	}
	return strings.Join(names, ", ")
}

func clusterBatch(name string, c *dataflow.Cluster, stateDir, logLevel string) (*slurm.Cluster, error) {
	cfg := c.Slurm
	var client slurm.Client
	var prefix []string
	if h := cfg["ssh"]; h != "" {
		prefix = []string{"ssh", "-o", "BatchMode=yes", h}
	}
	// command_prefix runs Slurm's commands (and `scontrol token`) some
	// other way, e.g. "chroot /srv/slurm24" or "sudo -u svc".
	if p := strings.Fields(cfg["command_prefix"]); len(p) > 0 {
		prefix = append(prefix, p...)
	}
	switch mode := cfg["mode"]; mode {
	case "", "cli":
		client = &sbatch.Client{Prefix: prefix}
	case "rest":
		u := cfg["user"]
		if u == "" {
			cur, err := user.Current()
			if err != nil {
				return nil, err
			}
			u = cur.Username
		}
		if cfg["rest_url"] == "" {
			return nil, fmt.Errorf("slurm mode rest needs rest_url (e.g. http://slurmrestd:6820)")
		}
		var tok rest.TokenSource = &rest.ScontrolToken{User: u, Prefix: prefix}
		if f := cfg["token_file"]; f != "" {
			tok = rest.TokenFile(f)
		}
		rc, err := rest.New(cfg["rest_url"], u, tok, cfg["api_version"])
		if err != nil {
			return nil, err
		}
		client = rc
	default:
		return nil, fmt.Errorf("slurm mode %q: want cli or rest", mode)
	}
	shared := cfg["shared_dir"]
	if shared == "" {
		abs, err := filepath.Abs(stateDir)
		if err != nil {
			return nil, err
		}
		shared = filepath.Join(abs, "clusters", name)
	}
	bin := cfg["binary"]
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		bin = self
	}
	return &slurm.Cluster{Name: name, Client: client, Dir: shared, Binary: bin, LogLevel: logLevel,
		Directives: func(j *slurm.Job) []string { return slurm.DirectivesFrom(sbatch.Args(j)) }}, nil
}
