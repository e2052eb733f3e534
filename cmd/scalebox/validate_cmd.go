package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

func validateCommand() *cli.Command {
	return &cli.Command{
		Name:      "validate",
		Usage:     "check an app definition and print every problem as file:line:col",
		ArgsUsage: "[DIR|app.yaml]",
		Flags:     []cli.Flag{&cli.StringFlag{Name: "env-file", Usage: "variables file instead of DIR/scalebox.env"}},
		Action: func(c *cli.Context) error {
			path := "."
			if c.Args().Len() > 0 {
				path = c.Args().First()
			}
			app, diags := dataflow.LoadApp(path, dataflow.LoadOptions{EnvFile: c.String("env-file"), Environ: os.Environ()})
			for _, d := range diags {
				fmt.Fprintln(c.App.ErrWriter, d.String())
			}
			if n := len(diags.Errors()); n > 0 {
				return withCode(exitUsage, fmt.Errorf("%s: %d error(s)", path, n))
			}
			fmt.Fprintf(c.App.Writer, "%s: app %q is valid (%d modules)\n", app.File, app.Name, len(app.Modules))
			return nil
		},
	}
}
