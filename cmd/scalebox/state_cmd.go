package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

var onSuccessFlag = &cli.BoolFlag{Name: "on-success", Usage: "inside a slot: apply when the current task succeeds, in its completion transaction (exactly once)"}

func semaphoreCommand() *cli.Command {
	change := func(name, usage, args string, nargs int, value func(c *cli.Context) string) *cli.Command {
		return &cli.Command{
			Name: name, Usage: usage, ArgsUsage: args, Flags: []cli.Flag{appFlag, onSuccessFlag},
			Action: func(c *cli.Context) error {
				if c.Args().Len() != nargs {
					return usageErr("semaphore %s: want %s", name, args)
				}
				v := value(c)
				if name != "delete" && name != "increment" && name != "decrement" {
					if _, err := strconv.ParseInt(v, 10, 64); err != nil {
						return usageErr("semaphore %s: value %q is not an integer", name, v)
					}
				}
				return stateChange(c, dataflow.StateOp{Kind: "semaphore", Op: name, Name: c.Args().First(), Value: v})
			},
		}
	}
	second := func(c *cli.Context) string { return c.Args().Get(1) }
	none := func(c *cli.Context) string { return "" }
	return &cli.Command{
		Name:  "semaphore",
		Usage: "app-scoped atomic integers",
		Subcommands: []*cli.Command{
			change("create", "create (or reset) a semaphore", "NAME VALUE", 2, second),
			change("increment", "add 1 and print the new value", "NAME", 1, none),
			change("decrement", "subtract 1 and print the new value", "NAME", 1, none),
			change("add-value", "add N (may be negative) and print the new value", "NAME N", 2, second),
			change("delete", "remove a semaphore", "NAME", 1, none),
			{
				Name: "get", Usage: "print a value; a regular expression prints a JSON map of the matches (exit 2 when none)", ArgsUsage: "NAME|REGEX",
				Flags: []cli.Flag{appFlag},
				Action: func(c *cli.Context) error {
					if c.Args().Len() != 1 {
						return usageErr("semaphore get: want NAME")
					}
					name := c.Args().First()
					s, id, err := sessionApp0(c)
					if err != nil {
						return err
					}
					defer s.Close()
					exact, err := s.client.Semaphores(c.Context, id, "", regexp.QuoteMeta(name))
					if err != nil {
						return err
					}
					if v, ok := exact[name]; ok {
						fmt.Fprintln(c.App.Writer, v)
						return nil
					}
					if _, err := regexp.Compile(name); err == nil {
						m, err := s.client.Semaphores(c.Context, id, "", name)
						if err != nil {
							return err
						}
						if len(m) > 0 {
							return printJSON(c, m)
						}
					}
					return withCode(exitUsage, fmt.Errorf("semaphore %q not found", name))
				},
			},
			{
				Name: "list", Usage: "list semaphores", Flags: []cli.Flag{appFlag, jsonFlag, &cli.StringFlag{Name: "prefix"}},
				Action: func(c *cli.Context) error {
					s, id, err := sessionApp0(c)
					if err != nil {
						return err
					}
					defer s.Close()
					m, err := s.client.Semaphores(c.Context, id, c.String("prefix"), "")
					if err != nil {
						return err
					}
					return printNameValues(c, m)
				},
			},
		},
	}
}

func variableCommand() *cli.Command {
	return &cli.Command{
		Name:  "variable",
		Usage: "app-scoped named strings",
		Subcommands: []*cli.Command{
			{
				Name: "set", Usage: "set a variable", ArgsUsage: "NAME VALUE", Flags: []cli.Flag{appFlag, onSuccessFlag},
				Action: func(c *cli.Context) error {
					if c.Args().Len() != 2 {
						return usageErr("variable set: want NAME VALUE")
					}
					return stateChange(c, dataflow.StateOp{Kind: "variable", Op: "set", Name: c.Args().First(), Value: c.Args().Get(1)})
				},
			},
			{
				Name: "delete", Usage: "remove a variable", ArgsUsage: "NAME", Flags: []cli.Flag{appFlag, onSuccessFlag},
				Action: func(c *cli.Context) error {
					if c.Args().Len() != 1 {
						return usageErr("variable delete: want NAME")
					}
					return stateChange(c, dataflow.StateOp{Kind: "variable", Op: "delete", Name: c.Args().First()})
				},
			},
			{
				Name: "get", Usage: "print a variable (exit 2 when absent)", ArgsUsage: "NAME", Flags: []cli.Flag{appFlag},
				Action: func(c *cli.Context) error {
					if c.Args().Len() != 1 {
						return usageErr("variable get: want NAME")
					}
					s, id, err := sessionApp0(c)
					if err != nil {
						return err
					}
					defer s.Close()
					m, err := s.client.Variables(c.Context, id, c.Args().First())
					if err != nil {
						return err
					}
					v, ok := m[c.Args().First()]
					if !ok {
						return withCode(exitUsage, fmt.Errorf("variable %q not found", c.Args().First()))
					}
					fmt.Fprintln(c.App.Writer, v)
					return nil
				},
			},
			{
				Name: "list", Usage: "list variables", Flags: []cli.Flag{appFlag, jsonFlag, &cli.StringFlag{Name: "prefix"}},
				Action: func(c *cli.Context) error {
					s, id, err := sessionApp0(c)
					if err != nil {
						return err
					}
					defer s.Close()
					m, err := s.client.Variables(c.Context, id, c.String("prefix"))
					if err != nil {
						return err
					}
					return printNameValues(c, m)
				},
			},
		},
	}
}

// stateChange applies a semaphore or variable change and prints the new
// value; with --on-success inside a slot it is deferred to the task's end.
// The request id makes a retried request (or a retried task) apply once.
func stateChange(c *cli.Context, op dataflow.StateOp) error {
	if c.Bool("on-success") {
		return appendDeferred(op)
	}
	rid, err := requestID()
	if err != nil {
		return err
	}
	op.RequestID = rid
	s, id, err := sessionApp0(c)
	if err != nil {
		return err
	}
	defer s.Close()
	var v string
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		v, err = s.client.StateOp(c.Context, id, op)
		if err == nil || api.IsClientError(err) || attempt == 8 || errors.Is(err, context.Canceled) {
			break
		}
		time.Sleep(delay) // a transient head outage; same request id, so applied once
		delay *= 2
	}
	if err != nil {
		if api.IsNotFound(err) {
			return withCode(exitUsage, fmt.Errorf("%s %q not found", op.Kind, op.Name))
		}
		return err
	}
	if op.Op != "delete" {
		fmt.Fprintln(c.App.Writer, v)
	}
	return nil
}

// printNameValues prints a semaphore or variable listing, as JSON with --json.
func printNameValues[V any](c *cli.Context, m map[string]V) error {
	if c.Bool("json") {
		return printJSON(c, m)
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NAME\tVALUE")
	for _, k := range sortedKeys(m) {
		fmt.Fprintf(w, "%s\t%v\n", k, m[k])
	}
	return w.Flush()
}
