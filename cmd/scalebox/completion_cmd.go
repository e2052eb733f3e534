package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/templates"
)

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash or zsh)",
		ArgsUsage: "bash|zsh",
		Description: `Add to ~/.bashrc:  source <(scalebox completion bash)
or for zsh:        source <(scalebox completion zsh)`,
		Action: func(c *cli.Context) error {
			shell := c.Args().First()
			script, err := templates.Completion(shell)
			if err != nil {
				return usageErr("completion: %v", err)
			}
			fmt.Fprint(c.App.Writer, script)
			return nil
		},
	}
}
