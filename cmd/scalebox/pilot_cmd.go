package main

import (
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/apptainer"
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
			&cli.StringFlag{Name: "host-name", EnvVars: []string{"SLURMD_NODENAME"}, Usage: "node name to register (default: Slurm's node name, else the host name)"},
			&cli.BoolFlag{Name: "head-only", Usage: "with --head: run only the slot_on_head modules (the others run on Slurm pilots)"},
			&cli.StringFlag{Name: "cluster", Usage: "Slurm cluster this pilot runs on"},
			&cli.StringFlag{Name: "pool", Usage: "pool this pilot job belongs to: the pilot runs the modules whose slots name it"},
			&cli.Int64Flag{Name: "end-time", Usage: "Unix time the batch job ends (walltime): no task is leased that cannot finish before it"},
			&cli.StringFlag{Name: "work-root", Usage: "directory for slot work dirs (default: $TMPDIR/scalebox-APP-pilot-ID)"},
			&cli.DurationFlag{Name: "head-timeout", Value: 10 * time.Minute, Usage: "stop when the head has not answered for this long (0: never)"},
			&cli.StringFlag{Name: "slot-binary", EnvVars: []string{"SCALEBOX_SLOT_BINARY"}, Usage: "scalebox executable that module scripts call (default: this one)"},
			&cli.StringFlag{Name: "apptainer", EnvVars: []string{apptainer.EnvBinary}, Usage: "apptainer executable for modules with an image (default: apptainer on PATH)"},
			&cli.StringFlag{Name: "agent-binary", EnvVars: []string{pilot.AgentBinaryEnv}, Usage: "static scalebox executable bound into module containers as their agent (default: this one)"},
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
				TokenFile: c.String("token-file"), CertSHA256: c.String("server-cert-sha256"), Binary: self,
				HeadTimeout: c.Duration("head-timeout"), Cluster: c.String("cluster"), Pool: c.String("pool"), HeadOnly: c.Bool("head-only"),
				EndTime: unixOrZero(c.Int64("end-time")), Apptainer: c.String("apptainer"), AgentBinary: c.String("agent-binary"),
			})
		},
	}
}

func unixOrZero(sec int64) time.Time {
	if sec <= 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

// agentCommand is the slot agent inside a module container; the pilot
// starts it with `apptainer exec instance://...` and talks to it over its
// stdin and stdout.
func agentCommand() *cli.Command {
	return &cli.Command{
		Name:   "agent",
		Usage:  "run module scripts inside a slot's container (started by the pilot)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			return pilot.RunAgent(os.Stdin, os.Stdout)
		},
	}
}
