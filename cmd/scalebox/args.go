package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// flagsFirst lets flags follow a command's positional arguments
// (`scalebox module test DIR --body B`): urfave/cli stops reading flags at
// the first argument, so the known flags of the leaf command found after
// it are moved in front of its arguments. Tokens that are not one of that
// command's flags, and everything after "--", stay where they are.
func flagsFirst(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	cmds := app.Commands
	i := 1
	var leaf *cli.Command
	for i < len(args) {
		a := args[i]
		if strings.HasPrefix(a, "-") {
			if takesValue(app.Flags, a) && !strings.Contains(a, "=") {
				i++
			}
			i++
			continue
		}
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(a) {
				next = c
			}
		}
		if next == nil {
			break
		}
		leaf, cmds = next, next.Subcommands
		i++
		if len(cmds) == 0 {
			break
		}
	}
	if leaf == nil || len(leaf.Subcommands) > 0 || leaf.SkipFlagParsing {
		return args
	}
	var flags, rest []string
	for j := i; j < len(args); j++ {
		a := args[j]
		if a == "--" {
			rest = append(rest, args[j:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" || !known(leaf.Flags, a) {
			rest = append(rest, a)
			continue
		}
		flags = append(flags, a)
		if takesValue(leaf.Flags, a) && !strings.Contains(a, "=") && j+1 < len(args) {
			j++
			flags = append(flags, args[j])
		}
	}
	out := append(append([]string{}, args[:i]...), flags...)
	return append(out, rest...)
}

func flagName(token string) string {
	name := strings.TrimLeft(token, "-")
	name, _, _ = strings.Cut(name, "=")
	return name
}

func lookupFlag(flags []cli.Flag, token string) cli.Flag {
	name := flagName(token)
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func known(flags []cli.Flag, token string) bool { return lookupFlag(flags, token) != nil }

func takesValue(flags []cli.Flag, token string) bool {
	f := lookupFlag(flags, token)
	if f == nil {
		return false
	}
	_, isBool := f.(*cli.BoolFlag)
	return !isBool
}
