package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/templates"
)

// Commands `make install` uses to write the files of an HPC installation.

func modulefileCommand() *cli.Command {
	return &cli.Command{
		Name:      "modulefile",
		Usage:     "print an Lmod (lua) or Environment Modules (tcl) modulefile for an installation",
		ArgsUsage: "--prefix DIR lua|tcl",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "prefix", Required: true, Usage: "installation prefix (holds bin/scalebox)"},
		},
		Action: func(c *cli.Context) error {
			text, err := templates.Modulefile(c.Args().First(), c.String("prefix"), version)
			if err != nil {
				return usageErr("modulefile: %v", err)
			}
			fmt.Fprint(c.App.Writer, text)
			return nil
		},
	}
}

func manCommand() *cli.Command {
	return &cli.Command{
		Name:  "man",
		Usage: "print the scalebox(1) man page (roff)",
		Action: func(c *cli.Context) error {
			page, err := c.App.ToManWithSection(1)
			if err != nil {
				return err
			}
			fmt.Fprint(c.App.Writer, page)
			return nil
		},
	}
}
