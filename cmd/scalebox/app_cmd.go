package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/pilot"
)

func appCommand() *cli.Command {
	return &cli.Command{
		Name:  "app",
		Usage: "create, list, inspect and end apps",
		Subcommands: []*cli.Command{
			{
				Name: "create", Usage: "create an app from DIR/app.yaml and print its id", ArgsUsage: "[DIR|app.yaml] [START_TASK...]",
				Flags: []cli.Flag{&cli.StringFlag{Name: "env-file", Usage: "variables file instead of DIR/scalebox.env"},
					&cli.StringFlag{Name: "cluster", Usage: "default cluster of the app's modules (its pools run there as Slurm pilot jobs)"}, jsonFlag},
				Action: func(c *cli.Context) error {
					app, extra, err := appFromArgs(c)
					if err != nil {
						return err
					}
					if err := mergeUserClusters(app); err != nil {
						return err
					}
					if name := c.String("cluster"); name != "" {
						if app.Clusters[name] == nil {
							return usageErr("--cluster %s: no such cluster; defined: %s", name, clusterNames(app))
						}
						app.Cluster = name
					}
					s, err := connect(c)
					if err != nil {
						return err
					}
					defer s.Close()
					id, err := s.client.CreateApp(c.Context, app, extra)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, map[string]int64{"app_id": id})
					}
					fmt.Fprintln(c.App.Writer, id)
					return nil
				},
			},
			{
				Name: "list", Usage: "list apps", Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					s, err := connect(c)
					if err != nil {
						return err
					}
					defer s.Close()
					apps, err := s.client.Apps(c.Context)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, apps)
					}
					w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "ID\tNAME\tSTATUS\tSUCCEEDED\tFAILED\tACTIVE\tCREATED")
					for _, a := range apps {
						active := a.Tasks[dataflow.TaskReady] + a.Tasks[dataflow.TaskLeased] + a.Tasks[dataflow.TaskRunning] + a.Tasks[dataflow.TaskRetrying]
						fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\t%d\t%s\n", a.ID, a.Name, a.Status, a.Tasks[dataflow.TaskSucceeded],
							a.Tasks[dataflow.TaskFailed], active, a.CreatedAt.Local().Format(time.DateTime))
					}
					return w.Flush()
				},
			},
			{
				Name: "status", Usage: "per-module task counts, and why nothing runs", ArgsUsage: "[APP_ID]", Flags: []cli.Flag{appFlag, jsonFlag},
				Action: func(c *cli.Context) error {
					s, id, err := sessionApp(c)
					if err != nil {
						return err
					}
					defer s.Close()
					info, err := s.client.App(c.Context, id)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, info)
					}
					printSummary(c.App.Writer, info, 0)
					return nil
				},
			},
			{
				Name: "wait", Usage: "wait for an app to end; exit 0 only if it FINISHED", ArgsUsage: "[APP_ID]",
				Flags: []cli.Flag{appFlag, jsonFlag, &cli.DurationFlag{Name: "timeout", Usage: "give up after this long (exit 1; the app goes on)"}},
				Action: func(c *cli.Context) error {
					s, id, err := sessionApp(c)
					if err != nil {
						return err
					}
					defer s.Close()
					var deadline time.Time
					if d := c.Duration("timeout"); d > 0 {
						deadline = time.Now().Add(d)
					}
					for {
						wait := 30 * time.Second
						if !deadline.IsZero() {
							wait = min(wait, time.Until(deadline))
						}
						info, err := s.client.Wait(c.Context, id, max(wait, 0))
						if err != nil {
							return err
						}
						if info.Status.Done() {
							if c.Bool("json") {
								if err := printJSON(c, info); err != nil {
									return err
								}
							} else {
								printSummary(c.App.Writer, info, 0)
							}
							return appExit(info)
						}
						if !deadline.IsZero() && time.Now().After(deadline) {
							return withCode(exitFailed, fmt.Errorf("app %d still %s after %s", id, info.Status, c.Duration("timeout")))
						}
					}
				},
			},
			statusChange("start", "dispatch an INITIAL or PAUSED app", dataflow.AppRunning),
			statusChange("pause", "stop dispatching new tasks (running ones finish)", dataflow.AppPaused),
			statusChange("cancel", "end an app now: its unfinished tasks are cancelled", dataflow.AppCancelled),
			{
				Name: "set-finished", Usage: "end an app as FINISHED with a result text; inside a slot, when the task succeeds",
				ArgsUsage: "[RESULT]", Flags: []cli.Flag{appFlag},
				Action: func(c *cli.Context) error {
					result := strings.Join(c.Args().Slice(), " ")
					if inSlot() {
						return appendDeferred(dataflow.StateOp{Kind: "app", Op: "set-finished", Name: "app", Value: result})
					}
					s, id, err := sessionApp(c)
					if err != nil {
						return err
					}
					defer s.Close()
					return s.client.SetStatus(c.Context, id, dataflow.AppFinished, result)
				},
			},
		},
	}
}

func statusChange(name, usage string, st dataflow.AppStatus) *cli.Command {
	return &cli.Command{
		Name: name, Usage: usage, ArgsUsage: "[APP_ID]", Flags: []cli.Flag{appFlag},
		Action: func(c *cli.Context) error {
			s, id, err := sessionApp(c)
			if err != nil {
				return err
			}
			defer s.Close()
			return s.client.SetStatus(c.Context, id, st, "")
		},
	}
}

// sessionApp connects and resolves the app from a positional APP_ID,
// --app, $APP_ID or the newest app.
func sessionApp(c *cli.Context) (*session, int64, error) {
	if c.Args().Len() > 0 && c.String("app") == "" {
		c.Set("app", c.Args().First())
	}
	s, err := connect(c)
	if err != nil {
		return nil, 0, err
	}
	id, err := appID(c, s)
	if err != nil {
		s.Close()
		return nil, 0, err
	}
	return s, id, nil
}

// appendDeferred records a change to apply when the current task succeeds.
func appendDeferred(op dataflow.StateOp) error {
	if !inSlot() {
		return usageErr("--on-success only works inside a slot (TASK_ID and WORK_DIR set)")
	}
	b, err := json.Marshal(op)
	if err != nil {
		return err
	}
	return appendLine(os.Getenv("WORK_DIR")+"/"+pilot.DeferredOpsFile, string(b))
}

// appendLine adds one line with a single write, so concurrent writers in
// one task do not interleave within a line.
func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
