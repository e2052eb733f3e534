package templates

import (
	"bytes"
	"fmt"
	"strings"
	"text/template"
)

// Pilot describes one pilot job script.
type Pilot struct {
	AppID      int64
	AppName    string
	Cluster    string
	Pool       string
	Server     string // https://head:port
	CertSHA256 string
	TokenFile  string // on a filesystem the nodes share, mode 0600
	Binary     string // scalebox on the nodes
	LogLevel   string
	Output     string
	// Directives are sbatch options ("--partition=debug"), one #SBATCH line each.
	Directives []string
	// TimeLimitSeconds is the job's walltime (0: none known).
	TimeLimitSeconds int64
}

var pilotTmpl = template.Must(template.New("pilot.sh.tmpl").Funcs(template.FuncMap{}).ParseFS(files, "sbatch/pilot.sh.tmpl"))

// PilotScript renders the sbatch script of a pilot job. Every value that
// reaches the shell is single-quoted; a newline anywhere is refused, since
// it would end an #SBATCH line or a command.
func PilotScript(p Pilot) (string, error) {
	q := p
	for _, f := range []*string{&q.AppName, &q.Cluster, &q.Pool, &q.Server, &q.CertSHA256, &q.TokenFile, &q.Binary, &q.LogLevel, &q.Output} {
		if strings.ContainsAny(*f, "\n\r") {
			return "", fmt.Errorf("pilot script: value %q has a newline", *f)
		}
	}
	for _, d := range p.Directives {
		if strings.ContainsAny(d, "\n\r") {
			return "", fmt.Errorf("pilot script: sbatch option %q has a newline", d)
		}
	}
	if q.LogLevel == "" {
		q.LogLevel = "info"
	}
	for _, f := range []*string{&q.Cluster, &q.Pool, &q.Server, &q.CertSHA256, &q.TokenFile, &q.Binary, &q.LogLevel} {
		*f = ShellQuote(*f)
	}
	var b bytes.Buffer
	if err := pilotTmpl.Execute(&b, q); err != nil {
		return "", fmt.Errorf("pilot script: %w", err)
	}
	return b.String(), nil
}

// ShellQuote quotes s for a POSIX shell.
func ShellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=+,@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
