package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/scalebox-hpc/scalebox/staging"
)

func stageCommand() *cli.Command {
	sftpFlags := func() []cli.Flag {
		return []cli.Flag{
			&cli.StringFlag{Name: "key", EnvVars: []string{"SCALEBOX_SFTP_KEY"}, Usage: "private key for sftp (else the ssh agent)"},
			&cli.StringFlag{Name: "host-key", EnvVars: []string{"SCALEBOX_SFTP_HOST_KEY"}, Usage: "pinned sftp host key (authorized_keys format)"},
			&cli.StringFlag{Name: "known-hosts", Usage: "known_hosts file for sftp (default ~/.ssh/known_hosts)"},
			jsonFlag,
		}
	}
	return &cli.Command{
		Name:  "stage",
		Usage: "move data between tiers (file://, local:, mem:, sftp://)",
		Subcommands: []*cli.Command{{
			Name:      "cp",
			Usage:     "copy one file, verified (SHA-256) and resumable; the target appears only when complete",
			ArgsUsage: "SRC DST",
			Flags:     sftpFlags(),
			Action:    stageCopy,
		}, {
			Name:      "ls",
			Usage:     "list a directory of a tier or a remote site (what builtin:dir-list would emit, with -r)",
			ArgsUsage: "URL",
			Flags:     append(sftpFlags(), &cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Usage: "list the files of the whole tree"}),
			Action:    stageList,
		}},
	}
}

// nodeTiers are this node's tiers with the command's sftp credentials.
func nodeTiers(c *cli.Context) staging.Tiers {
	tiers := staging.NodeTiers(os.Getenv("HOST_NAME")) // inside a slot: the pilot's node name
	tiers.SFTP = staging.SFTPAuth{KeyFile: c.String("key"), HostKey: c.String("host-key"), KnownHosts: c.String("known-hosts")}
	return tiers
}

// listEntry is one line of `stage ls`.
type listEntry struct {
	Name    string    `json:"name"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	Dir     bool      `json:"dir,omitempty"`
}

func stageList(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr("stage ls: want one URL")
	}
	u, err := staging.ParseURL(c.Args().First())
	if err != nil {
		return withCode(exitUsage, err)
	}
	st, err := nodeTiers(c).OpenDir(c.Context, u, u.Path, staging.Read)
	if err != nil {
		return fmt.Errorf("stage ls: %w", err)
	}
	defer st.Close()
	var out []listEntry
	add := func(name string, e staging.Info) error {
		out = append(out, listEntry{Name: name, Size: e.Size, ModTime: e.ModTime, Dir: e.IsDir})
		return nil
	}
	if c.Bool("recursive") {
		err = staging.Walk(c.Context, st, ".", add)
	} else {
		var ents []staging.Info
		if ents, err = st.List(c.Context, "."); err == nil {
			for _, e := range ents {
				add(e.Name, e)
			}
		}
	}
	if err != nil {
		return fmt.Errorf("stage ls %s: %w", u, err)
	}
	if c.Bool("json") {
		if out == nil {
			out = []listEntry{}
		}
		return printJSON(c, out)
	}
	for _, e := range out {
		name := e.Name
		if e.Dir {
			name += "/"
		}
		fmt.Fprintf(c.App.Writer, "%12d  %s  %s\n", e.Size, e.ModTime.UTC().Format(time.RFC3339), name)
	}
	return nil
}

// openURL opens the store holding raw's file and the file's name in it.
func openURL(ctx context.Context, raw string, tiers staging.Tiers, a staging.Access) (staging.Store, string, error) {
	u, err := staging.ParseURL(raw)
	if err != nil {
		return nil, "", err
	}
	return tiers.Open(ctx, u, a)
}

func stageCopy(c *cli.Context) error {
	if c.NArg() != 2 {
		return usageErr("stage cp: want SRC and DST URLs")
	}
	tiers := nodeTiers(c)
	src, from, err := openURL(c.Context, c.Args().Get(0), tiers, staging.Read)
	if err != nil {
		return withCode(exitUsage, err)
	}
	defer src.Close()
	dst, to, err := openURL(c.Context, c.Args().Get(1), tiers, staging.Write)
	if err != nil {
		return withCode(exitUsage, err)
	}
	defer dst.Close()
	var progress staging.Progress
	if f, ok := c.App.ErrWriter.(*os.File); ok && term.IsTerminal(int(f.Fd())) && !c.Bool("json") {
		var bar *progressbar.ProgressBar
		progress = func(done, total int64) {
			if bar == nil {
				bar = progressbar.DefaultBytes(total, "copy "+to)
			}
			bar.Set64(done)
		}
	}
	res, err := staging.Copy(c.Context, src, from, dst, to, progress)
	if err != nil {
		return fmt.Errorf("stage cp: %w", err)
	}
	if c.Bool("json") {
		return printJSON(c, res)
	}
	fmt.Fprintf(c.App.Writer, "%s  %d bytes (%d resumed)  sha256 %s  verified %s\n", c.Args().Get(1), res.Size, res.Resumed, res.SHA256, res.Verified)
	return nil
}
