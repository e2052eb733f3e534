package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/local"
	"github.com/scalebox-hpc/scalebox/server"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "create an app and run it to completion",
		ArgsUsage: "[DIR|app.yaml] [START_TASK...|-]",
		Description: `With no --server, starts an embedded server on --state-dir and --pilots
local pilot processes (no Slurm needed). Extra arguments are start tasks for
the main router (or the first module); "-" reads them from stdin, one
message line each. Exits 0 only if the app FINISHED.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "pilots", Value: runtime.NumCPU(), Usage: "local pilot processes (embedded mode)"},
			&cli.StringFlag{Name: "env-file", Usage: "variables file to use instead of DIR/scalebox.env"},
			&cli.DurationFlag{Name: "timeout", Usage: "cancel the app if it runs longer (0: no limit)"},
			&cli.StringFlag{Name: "synchronous", Value: "FULL", Usage: "SQLite synchronous mode of the embedded server (FULL or NORMAL)"},
			&cli.DurationFlag{Name: "lease-ttl", Value: 30 * time.Second, Usage: "embedded server: how long a lease survives without a heartbeat"},
			reproduceFlag,
			&cli.StringFlag{Name: "cluster", Usage: "run the app's pools as Slurm pilot jobs on this cluster (defined in app.yaml or ~/.scalebox/clusters.yaml); the router stays on this host"},
			&cli.StringFlag{Name: "listen", Value: ":0", Usage: "with --cluster: TCP address pilots connect to (TLS)"},
			&cli.StringFlag{Name: "advertise", Usage: "with --cluster: https URL pilots use to reach this head (default https://HOSTNAME:PORT)"},
			jsonFlag,
		},
		Action: runAction,
	}
}

func runAction(c *cli.Context) error {
	app, extra, err := appFromArgs(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	debug.SetGCPercent(400) // see pilot_cmd.go
	var client *api.Client
	var pilots *local.BatchSystem
	var srv *server.Server
	stateDir := c.String("state-dir")
	var slurmFor func(string, *dataflow.Cluster) (dataflow.BatchSystem, error)
	listen := ""
	if name := c.String("cluster"); name != "" {
		if c.String("server") != "" {
			return usageErr("--cluster is for the embedded server; a running server uses its own clusters")
		}
		if err := mergeUserClusters(app); err != nil {
			return err
		}
		if app.Clusters[name] == nil {
			return usageErr("--cluster %s: no such cluster; defined: %s", name, clusterNames(app))
		}
		if app.Cluster == "" {
			app.Cluster = name
		}
		// Check every cluster definition now, before anything starts.
		for n, def := range app.Clusters {
			if _, err := clusterBatch(n, def, stateDir, c.String("log-level")); err != nil {
				return usageErr("cluster %s: %v", n, err)
			}
		}
		slurmFor = func(n string, def *dataflow.Cluster) (dataflow.BatchSystem, error) {
			return clusterBatch(n, def, stateDir, c.String("log-level"))
		}
		listen = c.String("listen")
	}
	if addr := c.String("server"); addr != "" {
		client, err = api.NewClient(addr, clientOptions(c))
		if err != nil {
			return withCode(exitUsage, err)
		}
	} else {
		if c.Int("pilots") < 1 {
			return usageErr("--pilots must be at least 1")
		}
		self, err := os.Executable()
		if err != nil {
			return err
		}
		pilots = &local.BatchSystem{Binary: self, LogDir: filepath.Join(stateDir, "pilots"),
			Args: []string{"--log-level", c.String("log-level")}}
		opts := server.Options{StateDir: stateDir, Synchronous: c.String("synchronous"), Version: version,
			LeaseTTL: c.Duration("lease-ttl"), ReproduceAfter: c.Duration("reproduce-after"), Listen: listen, Advertise: c.String("advertise"),
			Log: slog.Default().With("component", "server")}
		if slurmFor != nil {
			opts.Slurm, opts.HeadPilots = slurmFor, pilots
		}
		srv, err = server.Open(ctx, opts)
		if err != nil {
			return withCode(exitNoServer, err)
		}
		defer srv.Close()
		srv.Start()
		if err := srv.Listen(); err != nil {
			return withCode(exitNoServer, err)
		}
		client, err = api.NewClient("unix://"+server.SocketPath(stateDir), api.ClientOptions{})
		if err != nil {
			return err
		}
	}
	id, err := client.CreateApp(ctx, app, extra)
	if err != nil {
		return fmt.Errorf("create app: %w", err)
	}
	started := time.Now()
	fmt.Fprintf(c.App.ErrWriter, "app %d (%s) created\n", id, app.Name)
	if pilots != nil {
		sock, _ := filepath.Abs(server.SocketPath(stateDir))
		n := c.Int("pilots")
		if slurmFor != nil {
			n = 0 // Slurm pilots do the work; the server starts the router's head pilot
		}
		for i := 0; i < n; i++ {
			if _, err := pilots.Submit(ctx, dataflow.PilotRequest{AppID: id, Server: "unix://" + sock, Head: i == 0, Name: app.Name}); err != nil {
				return err
			}
		}
	}
	var alive func() bool
	if pilots != nil && slurmFor == nil {
		alive = func() bool {
			st, _ := pilots.Status(ctx, pilots.IDs())
			for _, s := range st {
				if s == dataflow.JobRunning {
					return true
				}
			}
			return false
		}
	}
	info, err := waitApp(ctx, c, client, id, c.Duration("timeout"), alive)
	if pilots != nil {
		// Pilots leave by themselves once the app ended; give them a moment
		// to deliver their last reports, then stop any that linger.
		wctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		if werr := pilots.Wait(wctx); werr != nil {
			pilots.Cancel(context.Background(), pilots.IDs())
		}
		cancel()
		if slurmFor != nil {
			sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
			if serr := srv.SettlePools(sctx, id); serr != nil {
				slog.Warn("pilot jobs of the ended app", "err", serr)
			}
			scancel()
		}
		if info != nil {
			if fresh, ferr := client.App(context.Background(), id); ferr == nil {
				info = fresh
			}
		}
	}
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := printJSON(c, info); err != nil {
			return err
		}
	} else {
		printSummary(c.App.Writer, info, time.Since(started))
	}
	return appExit(info)
}

// appExit maps an ended app to the exit code of run and app wait.
func appExit(info *dataflow.AppInfo) error {
	switch info.Status {
	case dataflow.AppFinished:
		return nil
	case dataflow.AppFailed:
		return withCode(exitFailed, fmt.Errorf("app %d FAILED: %d tasks failed (see `scalebox task list --state failed`)", info.ID, info.Tasks[dataflow.TaskFailed]))
	default:
		return withCode(exitFailed, fmt.Errorf("app %d ended %s", info.ID, info.Status))
	}
}

// appFromArgs reads `[DIR|app.yaml] [START_TASK...|-]` (run, app create).
func appFromArgs(c *cli.Context) (*dataflow.App, []dataflow.Message, error) {
	path := "."
	args := c.Args().Slice()
	if len(args) > 0 {
		path, args = args[0], args[1:]
	}
	app, err := loadApp(c, path)
	if err != nil {
		return nil, nil, err
	}
	extra, err := startTasks(c, args)
	if err != nil {
		return nil, nil, err
	}
	return app, extra, nil
}

func loadApp(c *cli.Context, path string) (*dataflow.App, error) {
	app, diags := dataflow.LoadApp(path, dataflow.LoadOptions{EnvFile: c.String("env-file"), Environ: os.Environ()})
	for _, d := range diags.Warnings() {
		fmt.Fprintln(c.App.ErrWriter, d.String())
	}
	if errs := diags.Errors(); len(errs) > 0 {
		return nil, withCode(exitUsage, fmt.Errorf("%d error(s) in the app definition:\n%s", len(errs), errs.Error()))
	}
	return app, nil
}

func startTasks(c *cli.Context, args []string) ([]dataflow.Message, error) {
	var msgs []dataflow.Message
	for _, a := range args {
		if a == "-" {
			m, err := dataflow.ParseMessages("stdin", bufio.NewReader(os.Stdin))
			if err != nil {
				return nil, withCode(exitUsage, err)
			}
			msgs = append(msgs, m...)
			continue
		}
		msgs = append(msgs, dataflow.Message{Body: a})
	}
	return msgs, nil
}

// waitApp polls the app to its end, drawing a progress line on a terminal.
// alive, when set, reports whether any local pilot still runs: if none
// does, nothing can make progress and waiting would hang.
func waitApp(ctx context.Context, c *cli.Context, client *api.Client, id int64, timeout time.Duration, alive func() bool) (*dataflow.AppInfo, error) {
	tty := false
	if f, ok := c.App.ErrWriter.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	for {
		wait := 30 * time.Second
		if tty {
			wait = 500 * time.Millisecond
		}
		info, err := client.Wait(ctx, id, wait)
		if err != nil {
			if ctx.Err() != nil {
				client.SetStatus(context.Background(), id, dataflow.AppCancelled, "interrupted")
				return nil, withCode(exitFailed, fmt.Errorf("interrupted: app %d cancelled", id))
			}
			return nil, err
		}
		if tty {
			fmt.Fprintf(c.App.ErrWriter, "\r\033[K%s", progressLine(info))
		}
		if info.Status.Done() {
			if tty {
				fmt.Fprintln(c.App.ErrWriter)
			}
			return info, nil
		}
		if alive != nil && !alive() {
			// Look once more: the last pilot may have left because the app ended.
			if info, err = client.App(ctx, id); err == nil && info.Status.Done() {
				return info, nil
			}
			client.SetStatus(context.Background(), id, dataflow.AppCancelled, "all local pilots exited")
			return nil, withCode(exitFailed, fmt.Errorf("app %d cancelled: every local pilot exited before it ended; see %s", id,
				filepath.Join(c.String("state-dir"), "pilots")))
		}
		select {
		case <-deadline:
			client.SetStatus(context.Background(), id, dataflow.AppCancelled, "timeout")
			return nil, withCode(exitFailed, fmt.Errorf("app %d cancelled after --timeout %s", id, timeout))
		default:
		}
	}
}

func progressLine(info *dataflow.AppInfo) string {
	t := info.Tasks
	return fmt.Sprintf("[%s] %s  succeeded %d  on pilots %d  ready %d  retrying %d  failed %d",
		info.Name, info.Status, t[dataflow.TaskSucceeded], t[dataflow.TaskRunning]+t[dataflow.TaskLeased],
		t[dataflow.TaskReady], t[dataflow.TaskRetrying], t[dataflow.TaskFailed])
}

func printSummary(w io.Writer, info *dataflow.AppInfo, took time.Duration) {
	fmt.Fprintf(w, "app %d %s: %s", info.ID, info.Name, info.Status)
	if took > 0 {
		fmt.Fprintf(w, " in %s", took.Round(time.Millisecond))
	}
	fmt.Fprintln(w)
	if info.Result != "" {
		fmt.Fprintf(w, "result: %s\n", info.Result)
	}
	states := []dataflow.TaskState{dataflow.TaskSucceeded, dataflow.TaskFailed, dataflow.TaskRunning, dataflow.TaskReady, dataflow.TaskRetrying, dataflow.TaskCancelled}
	fmt.Fprintf(w, "%-16s", "module")
	for _, s := range states {
		fmt.Fprintf(w, " %10s", s)
	}
	fmt.Fprintln(w)
	for _, name := range sortedKeys(info.Modules) {
		counts := info.Modules[name]
		fmt.Fprintf(w, "%-16s", name)
		for _, s := range states {
			n := counts[s]
			if s == dataflow.TaskRunning {
				n += counts[dataflow.TaskLeased]
			}
			fmt.Fprintf(w, " %10d", n)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "tasks: %d succeeded, %d failed\n", info.Tasks[dataflow.TaskSucceeded], info.Tasks[dataflow.TaskFailed])
	if len(info.Semaphores) > 0 {
		var parts []string
		for _, k := range sortedKeys(info.Semaphores) {
			parts = append(parts, fmt.Sprintf("%s=%d", k, info.Semaphores[k]))
		}
		fmt.Fprintf(w, "semaphores: %s\n", strings.Join(parts, " "))
	}
	if len(info.Variables) > 0 {
		var parts []string
		for _, k := range sortedKeys(info.Variables) {
			parts = append(parts, fmt.Sprintf("%s=%s", k, info.Variables[k]))
		}
		fmt.Fprintf(w, "variables: %s\n", strings.Join(parts, " "))
	}
	for _, why := range info.Why {
		fmt.Fprintf(w, "note: %s\n", why)
	}
}
