package main

import (
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/pilot"
)

func pilotCommand() *cli.Command {
	return &cli.Command{
		Name:  "pilot",
		Usage: "run the node agent for one app (started by a pilot job or by `scalebox run`)",
		Flags: []cli.Flag{
			&cli.Int64Flag{Name: "app", Required: true, Usage: "app id"},
			&cli.BoolFlag{Name: "head", Usage: "this pilot is on the head node and hosts slot_on_head modules (the main router)"},
			&cli.StringFlag{Name: "job-id", Usage: "batch job id, for the record"},
			&cli.StringFlag{Name: "host-name", Usage: "node name to register (default: the host name)"},
			&cli.StringFlag{Name: "work-root", Usage: "directory for slot work dirs (default: $TMPDIR/scalebox-APP-pilot-ID)"},
			&cli.DurationFlag{Name: "head-timeout", Value: 10 * time.Minute, Usage: "stop when the head has not answered for this long (0: never)"},
			&cli.StringFlag{Name: "slot-binary", EnvVars: []string{"SCALEBOX_SLOT_BINARY"}, Usage: "scalebox executable that module scripts call (default: this one)"},
		},
		Action: func(c *cli.Context) error {
			addr := c.String("server")
			if addr == "" {
				return usageErr("pilot: --server (or $SCALEBOX_SERVER) is required")
			}
			client, err := api.NewClient(addr, clientOptions(c))
			if err != nil {
				return withCode(exitUsage, err)
			}
			// Daemons allocate many short-lived objects per task; a higher GC
			// target trades some memory for less collector CPU.
			debug.SetGCPercent(400)
			ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
			defer stop()
			self := c.String("slot-binary")
			if self == "" {
				self, _ = os.Executable()
			}
			return pilot.Run(ctx, pilot.Config{
				Client: client, AppID: c.Int64("app"), Host: c.String("host-name"), Head: c.Bool("head"),
				JobID: c.String("job-id"), WorkRoot: c.String("work-root"), Server: addr,
				TokenFile: c.String("token-file"), Binary: self, HeadTimeout: c.Duration("head-timeout"),
			})
		},
	}
}
