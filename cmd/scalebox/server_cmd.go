package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/server"
)

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
			&cli.StringFlag{Name: "synchronous", Value: "FULL", Usage: "SQLite synchronous mode: FULL (no commit lost on power loss) or NORMAL (faster; a power loss may lose the last commits, a crash never does)"},
		},
		Action: func(c *cli.Context) error {
			// Daemons allocate many short-lived objects per task; a higher GC
			// target trades some memory for less collector CPU.
			debug.SetGCPercent(400)
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			srv, err := server.Open(ctx, server.Options{StateDir: c.String("state-dir"), Listen: c.String("listen"),
				LeaseTTL: c.Duration("lease-ttl"), Synchronous: c.String("synchronous"), Version: version, Log: slog.Default()})
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
