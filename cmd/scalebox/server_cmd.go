package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/local"
	"github.com/scalebox-hpc/scalebox/server"
)

// reproduceFlag sets server.Options.ReproduceAfter.
var reproduceFlag = &cli.DurationFlag{Name: "reproduce-after", Value: 10 * time.Minute,
	Usage: "when a node has had no active pilot of an app this long, run again the tasks that produced the node-local input its waiting tasks need (0: never)"}

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run the head daemon on --state-dir",
		Description: `Serves the API on STATE_DIR/scalebox.sock (owner only) and on --listen
with the bearer token of STATE_DIR/token. The state dir must be on the head
node's local disk: SQLite's WAL does not work on NFS, Lustre or GPFS.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:8650", Usage: "TCP address for pilots on other nodes (\"\" for none)"},
			&cli.DurationFlag{Name: "lease-ttl", Value: 30 * time.Second, Usage: "how long a lease survives without a heartbeat"},
			reproduceFlag,
			&cli.StringFlag{Name: "advertise", Usage: "https URL Slurm pilots use to reach this server (default https://HOSTNAME:PORT of --listen)"},
			&cli.BoolFlag{Name: "no-slurm", Usage: "do not submit pilot jobs for apps' pools (pilots are started by hand)"},
			&cli.StringFlag{Name: "synchronous", Value: "FULL", Usage: "SQLite synchronous mode: FULL (no commit lost on power loss) or NORMAL (faster; a power loss may lose the last commits, a crash never does)"},
		},
		Action: func(c *cli.Context) error {
			// Daemons allocate many short-lived objects per task; a higher GC
			// target trades some memory for less collector CPU.
			debug.SetGCPercent(400)
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			stateDir := c.String("state-dir")
			opts := server.Options{StateDir: stateDir, Listen: c.String("listen"), Advertise: c.String("advertise"),
				LeaseTTL: c.Duration("lease-ttl"), ReproduceAfter: c.Duration("reproduce-after"), Synchronous: c.String("synchronous"), Version: version, Log: slog.Default()}
			if !c.Bool("no-slurm") {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				opts.Slurm = func(n string, def *dataflow.Cluster) (dataflow.BatchSystem, error) {
					return clusterBatch(n, def, stateDir, c.String("log-level"))
				}
				opts.HeadPilots = &local.BatchSystem{Binary: self, LogDir: filepath.Join(stateDir, "pilots"),
					Args: []string{"--log-level", c.String("log-level")}}
			}
			srv, err := server.Open(ctx, opts)
			if err != nil {
				return withCode(exitNoServer, err)
			}
			defer srv.Close()
			srv.Start()
			if err := srv.Listen(); err != nil {
				return withCode(exitNoServer, err)
			}
			slog.Info("scalebox server ready", "state_dir", c.String("state-dir"), "socket", server.SocketPath(c.String("state-dir")), "tcp", srv.TCPAddr())
			fmt.Fprintf(c.App.ErrWriter, "scalebox server: unix socket %s, tcp %s\n", server.SocketPath(c.String("state-dir")), srv.TCPAddr())
			<-ctx.Done()
			slog.Info("scalebox server stopping")
			return nil
		},
	}
}
