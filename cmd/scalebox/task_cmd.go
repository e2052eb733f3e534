package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/pilot"
)

func taskCommand() *cli.Command {
	return &cli.Command{
		Name:  "task",
		Usage: "add, list and show tasks",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "add tasks; inside a slot, emit messages sent when the current task succeeds",
				ArgsUsage: "BODY...",
				Flags: []cli.Flag{
					appFlag,
					&cli.StringFlag{Name: "sink-module", Aliases: []string{"m", "module"}, Usage: "target module (default: the sender's sink, or the entry module)"},
					&cli.StringSliceFlag{Name: "header", Aliases: []string{"H"}, Usage: "header k=v (repeatable)"},
					&cli.StringFlag{Name: "headers", Usage: "headers as a JSON object"},
				},
				Action: taskAdd,
			},
			{
				Name: "list", Usage: "list tasks",
				Flags: []cli.Flag{appFlag, jsonFlag,
					&cli.StringFlag{Name: "module", Aliases: []string{"m"}},
					&cli.StringFlag{Name: "state", Usage: "one of " + statesList()},
					&cli.IntFlag{Name: "limit", Value: 1000, Usage: "at most this many (0: all)"},
					&cli.Int64Flag{Name: "after", Usage: "only tasks with a larger id (paging)"},
				},
				Action: func(c *cli.Context) error {
					s, id, err := sessionApp(c)
					if err != nil {
						return err
					}
					defer s.Close()
					tasks, err := s.client.Tasks(c.Context, id, api.TaskQuery{Module: c.String("module"), State: c.String("state"), Limit: c.Int("limit"), After: c.Int64("after")})
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, tasks)
					}
					w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
					fmt.Fprintln(w, "ID\tMODULE\tSTATE\tATTEMPTS\tEXIT\tBODY")
					for _, t := range tasks {
						exit := "-"
						if t.ExitCode != nil {
							exit = strconv.Itoa(*t.ExitCode)
						}
						fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%s\t%s\n", t.ID, t.Module, t.State, t.Attempts, exit, t.Body)
					}
					return w.Flush()
				},
			},
			{
				Name: "show", Usage: "a task with its attempts", ArgsUsage: "TASK_ID", Flags: []cli.Flag{jsonFlag},
				Action: func(c *cli.Context) error {
					tid, err := strconv.ParseInt(c.Args().First(), 10, 64)
					if err != nil || tid <= 0 {
						return usageErr("task show: TASK_ID %q is not a positive integer", c.Args().First())
					}
					s, err := connect(c)
					if err != nil {
						return err
					}
					defer s.Close()
					t, err := s.client.Task(c.Context, tid)
					if err != nil {
						return err
					}
					if c.Bool("json") {
						return printJSON(c, t)
					}
					printTask(c, t)
					return nil
				},
			},
		},
	}
}

func statesList() string {
	var s []string
	for _, st := range dataflow.AllTaskStates {
		s = append(s, string(st))
	}
	return strings.Join(s, ", ")
}

func parseHeaderFlags(c *cli.Context) (dataflow.Headers, error) {
	h := dataflow.Headers{}
	if js := c.String("headers"); js != "" {
		parsed, err := dataflow.ParseHeaders(js)
		if err != nil {
			return nil, usageErr("--headers: %v", err)
		}
		h = parsed
	}
	for _, kv := range c.StringSlice("header") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usageErr("-H %q: want key=value", kv)
		}
		h[k] = v
	}
	return h, nil
}

func taskAdd(c *cli.Context) error {
	if c.Args().Len() == 0 {
		return usageErr("task add: give at least one BODY")
	}
	h, err := parseHeaderFlags(c)
	if err != nil {
		return err
	}
	mod := c.String("sink-module")
	var msgs []dataflow.Message
	for _, body := range c.Args().Slice() {
		msgs = append(msgs, dataflow.Message{Module: mod, Body: body, Headers: h})
	}
	if inSlot() {
		var b strings.Builder
		for _, m := range msgs {
			line, err := dataflow.FormatMessageLine(m)
			if err != nil {
				return usageErr("task add: %v", err)
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
		return appendLine(filepath.Join(os.Getenv("WORK_DIR"), pilot.SinkTasksFile), strings.TrimSuffix(b.String(), "\n"))
	}
	s, id, err := sessionApp0(c)
	if err != nil {
		return err
	}
	defer s.Close()
	n, err := s.client.AddTasks(c.Context, id, msgs)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.ErrWriter, "%d task(s) added, %d duplicate(s) ignored\n", n, len(msgs)-n)
	return nil
}

// sessionApp0 is sessionApp without a positional app id (args are bodies).
func sessionApp0(c *cli.Context) (*session, int64, error) {
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

func printTask(c *cli.Context, t *dataflow.TaskInfo) {
	w := c.App.Writer
	fmt.Fprintf(w, "task %d  app %d  module %s  state %s  attempts %d\n", t.ID, t.AppID, t.Module, t.State, t.Attempts)
	fmt.Fprintf(w, "body: %s\nheaders: %s\n", t.Body, t.Headers.JSON())
	if t.ParentID != 0 {
		fmt.Fprintf(w, "emitted by task %d\n", t.ParentID)
	}
	if t.LostHost != "" {
		fmt.Fprintf(w, "held: its input was on %s, which was lost; it runs when its producer has made the input again\n", t.LostHost)
	}
	for _, e := range t.Execs {
		fmt.Fprintf(w, "\nattempt %d: exit %d on %s slot %s", e.Attempt, e.ExitCode, e.Host, e.Slot)
		if e.StartedAt != nil {
			fmt.Fprintf(w, ", %s", e.EndedAt.Sub(*e.StartedAt))
		}
		fmt.Fprintf(w, ", %d message(s) emitted\n", e.Emitted)
		if e.Note != "" {
			fmt.Fprintf(w, "  note: %s\n", e.Note)
		}
		if e.StderrTail != "" {
			fmt.Fprintf(w, "  stderr (tail):\n%s\n", indent(e.StderrTail))
		}
		if e.StdoutTail != "" {
			fmt.Fprintf(w, "  stdout (tail):\n%s\n", indent(e.StdoutTail))
		}
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}
