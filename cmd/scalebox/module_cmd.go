package main

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/apptainer"
	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/pilot"
	"github.com/scalebox-hpc/scalebox/templates"
)

func moduleCommand() *cli.Command {
	return &cli.Command{
		Name:  "module",
		Usage: "build, inspect and test module images",
		Subcommands: []*cli.Command{
			{
				Name:      "build",
				Usage:     "build a module image (SIF) from a module directory and a local base image or root filesystem",
				ArgsUsage: "DIR",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "base", Required: true, Usage: "local base: a SIF file or a root filesystem directory (no network is used)"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "image to write (default: DIR.sif next to DIR)"},
					&cli.StringFlag{Name: "name", Usage: "module name label (default: the directory's name)"},
					&cli.StringSliceFlag{Name: "label", Usage: "extra label k=v (repeatable), e.g. org.scalebox.env.GROUP_SIZE=100"},
					&cli.BoolFlag{Name: "print", Usage: "print the definition file and build nothing"},
					&cli.StringFlag{Name: "apptainer", EnvVars: []string{apptainer.EnvBinary}, Usage: "apptainer executable"},
				},
				Action: moduleBuild,
			},
			{
				Name:      "inspect",
				Usage:     "show the labels, scripts and environment a module image declares",
				ArgsUsage: "IMAGE",
				Flags:     []cli.Flag{jsonFlag},
				Action:    moduleInspect,
			},
			{
				Name:      "test",
				Usage:     "run one module against test messages without a server; print each exec record and its emitted messages",
				ArgsUsage: "DIR",
				Flags: []cli.Flag{
					&cli.StringSliceFlag{Name: "body", Usage: "a test message body (repeatable)"},
					&cli.StringSliceFlag{Name: "header", Aliases: []string{"H"}, Usage: "header k=v for every --body message (repeatable)"},
					&cli.StringFlag{Name: "headers", Usage: "headers as a JSON object, for every --body message"},
					&cli.StringFlag{Name: "messages", Usage: "file of messages, one per line (sink-tasks line formats: body or body,{json})"},
					&cli.StringFlag{Name: "image", Usage: "run inside this image (default: on this node, as base_image: host)"},
					&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "module environment KEY=VALUE (repeatable)"},
					&cli.IntFlag{Name: "task-max-seconds", Usage: "kill a task after this many seconds (exit 124)"},
					&cli.StringFlag{Name: "apptainer", EnvVars: []string{apptainer.EnvBinary}, Usage: "apptainer executable"},
					&cli.StringFlag{Name: "agent-binary", EnvVars: []string{pilot.AgentBinaryEnv}, Usage: "static scalebox bound into the image"},
					jsonFlag,
				},
				Action: moduleTest,
			},
		},
	}
}

func moduleBuild(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr("module build: want one module directory")
	}
	dir, err := filepath.Abs(c.Args().First())
	if err != nil {
		return withCode(exitUsage, err)
	}
	if st, err := os.Stat(filepath.Join(dir, pilot.RunScript)); err != nil || st.IsDir() {
		return usageErr("module build: %s has no %s", dir, pilot.RunScript)
	}
	base, err := filepath.Abs(c.String("base"))
	if err != nil {
		return withCode(exitUsage, err)
	}
	if _, err := os.Stat(base); err != nil {
		return usageErr("module build: --base %s: %v", base, err)
	}
	name := c.String("name")
	if name == "" {
		name = filepath.Base(dir)
	}
	out := c.String("output")
	if out == "" {
		out = dir + ".sif"
	}
	labels := map[string]string{}
	for _, kv := range c.StringSlice("label") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usageErr("--label %q: want key=value", kv)
		}
		labels[k] = v
	}
	files := map[string]string{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		files[p] = apptainer.AppBin + "/" + filepath.ToSlash(rel)
		return nil
	})
	if err != nil {
		return withCode(exitUsage, fmt.Errorf("module build: %w", err))
	}
	def, err := templates.ModuleDefinition(templates.ModuleDef{Base: base, Name: name, Files: files, Labels: labels})
	if err != nil {
		return withCode(exitUsage, err)
	}
	if c.Bool("print") {
		fmt.Fprint(c.App.Writer, def)
		return nil
	}
	bin, err := apptainer.Find(c.String("apptainer"))
	if err != nil {
		return withCode(exitUsage, err)
	}
	defFile, err := os.CreateTemp("", "scalebox-module-*.def")
	if err != nil {
		return err
	}
	defer os.Remove(defFile.Name())
	if _, err := defFile.WriteString(def); err != nil {
		return err
	}
	defFile.Close()
	args := []string{"build", "--force"}
	if os.Geteuid() != 0 {
		// %files needs root in the image; unprivileged builds map it.
		args = append(args, "--fakeroot")
	}
	// Written next to the target and renamed, so a failed build never
	// leaves a broken image under the final name.
	tmp := out + ".building"
	args = append(args, tmp, defFile.Name())
	cmd := exec.CommandContext(c.Context, bin, args...)
	cmd.Stdout, cmd.Stderr = c.App.ErrWriter, c.App.ErrWriter
	fmt.Fprintf(c.App.ErrWriter, "building %s from %s (base %s)\n", out, dir, base)
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("module build: apptainer build: %w", err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, out)
	return nil
}

func moduleInspect(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr("module inspect: want one image")
	}
	md, err := apptainer.Inspect(c.Args().First())
	if err != nil {
		return withCode(exitUsage, err)
	}
	if c.Bool("json") {
		return printJSON(c, md)
	}
	w := c.App.Writer
	fmt.Fprintf(w, "image:       %s\n", md.Path)
	if md.Arch != "" {
		fmt.Fprintf(w, "arch:        %s\n", md.Arch)
	}
	if md.Module != "" {
		fmt.Fprintf(w, "module:      %s\n", md.Module)
	}
	if md.Description != "" {
		fmt.Fprintf(w, "description: %s\n", md.Description)
	}
	for _, k := range sortedKeys(md.Scripts) {
		fmt.Fprintf(w, "script:      %s = %s\n", k, md.Scripts[k])
	}
	for _, k := range sortedKeys(md.Env) {
		fmt.Fprintf(w, "env:         %s=%s\n", k, md.Env[k])
	}
	if md.MaxSeconds > 0 {
		fmt.Fprintf(w, "task_max_seconds: %d\n", md.MaxSeconds)
	}
	fmt.Fprintln(w, "labels:")
	for _, k := range sortedKeys(md.Labels) {
		fmt.Fprintf(w, "  %s: %s\n", k, md.Labels[k])
	}
	for _, p := range md.Problems {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", p)
	}
	return nil
}

func moduleTest(c *cli.Context) error {
	if c.NArg() != 1 {
		return usageErr("module test: want one module directory")
	}
	dir, err := filepath.Abs(c.Args().First())
	if err != nil {
		return withCode(exitUsage, err)
	}
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return usageErr("module test: %s is not a directory", dir)
	}
	h, err := parseHeaderFlags(c)
	if err != nil {
		return err
	}
	var msgs []dataflow.Message
	for _, b := range c.StringSlice("body") {
		if b == "" {
			return usageErr("--body: empty body")
		}
		msgs = append(msgs, dataflow.Message{Body: b, Headers: h})
	}
	if f := c.String("messages"); f != "" {
		fh, err := os.Open(f)
		if err != nil {
			return withCode(exitUsage, fmt.Errorf("--messages: %w", err))
		}
		parsed, err := dataflow.ParseMessages(f, bufio.NewReader(fh))
		fh.Close()
		if err != nil {
			return withCode(exitUsage, err)
		}
		msgs = append(msgs, parsed...)
	}
	if len(msgs) == 0 {
		return usageErr("module test: give --body or --messages")
	}
	m := &dataflow.Module{Name: filepath.Base(dir), BaseImage: dataflow.HostImage, CodePath: dir, TaskBatchSize: 1,
		DistMode: dataflow.DistDefault, TaskMaxSeconds: c.Int("task-max-seconds"), Environments: c.StringSlice("env")}
	if img := c.String("image"); img != "" {
		if m.BaseImage, err = filepath.Abs(img); err != nil {
			return withCode(exitUsage, err)
		}
	}
	self, _ := os.Executable()
	type record struct {
		Body     string             `json:"body"`
		Headers  dataflow.Headers   `json:"headers,omitempty"`
		Exec     dataflow.Exec      `json:"exec"`
		Emitted  []dataflow.Message `json:"emitted"`
		Deferred []dataflow.StateOp `json:"deferred,omitempty"`
	}
	var records []record
	failed := 0
	err = pilot.RunModuleTest(c.Context, pilot.ModuleTest{Module: m, Messages: msgs, Binary: self,
		Apptainer: c.String("apptainer"), AgentBinary: c.String("agent-binary")}, func(r pilot.TestRun) {
		e := r.Exec
		started := e.StartedAt
		rec := record{Body: r.Message.Body, Headers: r.Message.Headers, Emitted: e.Messages, Deferred: e.Deferred,
			Exec: dataflow.Exec{TaskID: e.TaskID, Attempt: 1, Slot: e.Slot, Host: e.Host, ExitCode: e.ExitCode, StartedAt: &started,
				EndedAt: e.EndedAt, StdoutTail: e.StdoutTail, StderrTail: e.StderrTail, Auxout: e.Auxout, Note: e.Note,
				Timestamps: e.Timestamps, InputBytes: e.InputBytes, OutputBytes: e.OutputBytes, Emitted: len(e.Messages), Image: e.Image}}
		if e.ExitCode != 0 {
			failed++
		}
		if !c.Bool("json") {
			printTestRun(c, rec.Body, rec.Exec, rec.Emitted)
		}
		records = append(records, rec)
	})
	if err != nil {
		return withCode(exitFailed, err)
	}
	if c.Bool("json") {
		if err := printJSON(c, records); err != nil {
			return err
		}
	}
	if failed > 0 {
		return withCode(exitFailed, fmt.Errorf("module test: %d of %d messages failed", failed, len(records)))
	}
	return nil
}

func printTestRun(c *cli.Context, body string, e dataflow.Exec, emitted []dataflow.Message) {
	w := c.App.Writer
	fmt.Fprintf(w, "== message %d: %q\n", e.TaskID, body)
	where := "host"
	if e.Image != "" {
		where = e.Image
	}
	fmt.Fprintf(w, "exit_code: %d   duration: %s   runtime: %s\n", e.ExitCode, e.EndedAt.Sub(*e.StartedAt).Round(1e6), where)
	if e.Note != "" {
		fmt.Fprintf(w, "note: %s\n", e.Note)
	}
	for _, tail := range []struct{ name, s string }{{"stdout", e.StdoutTail}, {"stderr", e.StderrTail}} {
		if s := strings.TrimRight(tail.s, "\n"); s != "" {
			fmt.Fprintf(w, "%s:\n  %s\n", tail.name, strings.ReplaceAll(s, "\n", "\n  "))
		}
	}
	fmt.Fprintf(w, "emitted: %d\n", len(emitted))
	for _, m := range emitted {
		to := m.Module
		if to == "" {
			to = "(default sink)"
		}
		fmt.Fprintf(w, "  -> %s %q headers %s\n", to, m.Body, m.Headers.JSON())
	}
}
