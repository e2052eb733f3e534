// Command scalebox is the one binary of Scalebox for Slurm: the CLI, the
// head daemon (server) and the node agent (pilot). This is the only place
// where concrete adapters are wired together.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/scalebox-hpc/scalebox/api"
)

// version is set by the linker (make build).
var version = "dev"

// Exit codes. They are documented in README.md; scripts rely on them.
const (
	exitOK       = 0
	exitFailed   = 1 // the app FAILED or was CANCELLED, or an operation failed
	exitUsage    = 2 // bad flags or input, invalid app definition, or not found
	exitNoServer = 3 // the server cannot be reached or the state dir is locked
)

// exitError carries an exit code up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

func usageErr(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

func main() {
	// SCALEBOX_CPUPROFILE=PREFIX writes PREFIX.PID.pprof and, at exit,
	// PREFIX.PID.rusage: the CPU of this process and of the children it
	// reaped (a pilot's are its tasks), which a profile does not split.
	prefix := os.Getenv("SCALEBOX_CPUPROFILE")
	if prefix != "" {
		if f, err := os.Create(fmt.Sprintf("%s.%d.pprof", prefix, os.Getpid())); err == nil {
			pprof.StartCPUProfile(f)
		}
	}
	app := newApp()
	err := app.Run(flagsFirst(app, os.Args))
	if prefix != "" {
		pprof.StopCPUProfile()
		writeRusage(fmt.Sprintf("%s.%d.rusage", prefix, os.Getpid()), os.Args)
	}
	os.Exit(report(err))
}

func writeRusage(path string, args []string) {
	var self, children syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &self) != nil || syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children) != nil {
		return
	}
	sec := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	_ = os.WriteFile(path, fmt.Appendf(nil, "%s\nself user %.3f sys %.3f\nchildren user %.3f sys %.3f\n",
		strings.Join(args, " "), sec(self.Utime), sec(self.Stime), sec(children.Utime), sec(children.Stime)), 0o644)
}

// report prints err to stderr and maps it to an exit code.
func report(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	code := exitFailed
	if errors.As(err, &ee) {
		code = ee.code
	} else if api.IsNotFound(err) || api.IsClientError(err) {
		code = exitUsage
	}
	if msg := err.Error(); msg != "" {
		fmt.Fprintln(os.Stderr, "scalebox: "+strings.TrimPrefix(msg, "scalebox: "))
	}
	return code
}

func newApp() *cli.App {
	return &cli.App{
		Name:                 "scalebox",
		Usage:                "run container-packed algorithms as streaming dataflow pipelines on HPC clusters",
		Version:              version,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state-dir", Value: ".scalebox", EnvVars: []string{"SCALEBOX_STATE_DIR"}, Usage: "directory of the head's state (database, socket, token)"},
			&cli.StringFlag{Name: "server", EnvVars: []string{"SCALEBOX_SERVER"}, Usage: "server address: unix:///path/scalebox.sock or https://host:port (default: the server of --state-dir)"},
			&cli.StringFlag{Name: "server-cert-sha256", EnvVars: []string{"SCALEBOX_SERVER_CERT_SHA256"}, Usage: "SHA-256 fingerprint of an https server's certificate (server.json cert_sha256)"},
			&cli.StringFlag{Name: "token-file", EnvVars: []string{"SCALEBOX_TOKEN_FILE"}, Usage: "file holding the bearer token for a TCP server"},
			&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"SCALEBOX_LOG_LEVEL"}, Usage: "debug, info, warn or error"},
		},
		Before: func(c *cli.Context) error {
			var lvl slog.Level
			if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
				return usageErr("--log-level %q: %v", c.String("log-level"), err)
			}
			slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})))
			return nil
		},
		ExitErrHandler: func(*cli.Context, error) {}, // main reports
		Commands: []*cli.Command{
			runCommand(),
			serverCommand(),
			pilotCommand(),
			agentCommand(),
			moduleCommand(),
			stageCommand(),
			appCommand(),
			taskCommand(),
			semaphoreCommand(),
			variableCommand(),
			validateCommand(),
			versionCommand(),
			completionCommand(),
			modulefileCommand(),
			manCommand(),
		},
	}
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version",
		Action: func(c *cli.Context) error {
			fmt.Fprintf(c.App.Writer, "scalebox %s (API %s)\n", version, api.Version)
			return nil
		},
	}
}
