package dataflow

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// EnvValue is a variable's value and where it was defined.
type EnvValue struct {
	Value  string
	Source string // "file:line" or "environment"
}

// Env is the variable set used to expand ${VAR} in app.yaml.
type Env map[string]EnvValue

// EnvSources lists the files read for an app in increasing precedence.
// The process environment is applied last by LoadEnv.
func EnvSources(appDir, envFile string) []string {
	var files []string
	files = append(files, "/etc/scalebox/environments")
	if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".scalebox", "environments"))
	}
	if envFile != "" {
		files = append(files, envFile)
	} else {
		files = append(files, filepath.Join(appDir, "scalebox.env"))
	}
	return files
}

// LoadEnv reads the given files (missing ones are skipped, except an
// explicit one the caller must check) and then the process environment.
func LoadEnv(files []string, environ []string) (Env, Diagnostics) {
	env := Env{}
	var diags Diagnostics
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if !os.IsNotExist(err) {
				diags = append(diags, Diagnostic{File: f, Severity: SevError, Msg: err.Error()})
			}
			continue
		}
		diags = append(diags, ParseEnvFile(f, string(data), env)...)
	}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k != "" {
			env[k] = EnvValue{Value: v, Source: "environment"}
		}
	}
	return env, diags
}

// ParseEnvFile reads KEY=VALUE lines into env. '#' starts a comment line,
// "export " is allowed, and a value may be wrapped in single or double quotes.
func ParseEnvFile(name, data string, env Env) Diagnostics {
	var diags Diagnostics
	sc := bufio.NewScanner(strings.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), MaxLineBytes)
	n := 0
	for sc.Scan() {
		n++
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		col := strings.Index(raw, strings.TrimSpace(raw)) + 1
		if !ok || !validVarName(k) {
			diags = append(diags, Diagnostic{File: name, Line: n, Col: col, Msg: fmt.Sprintf("expected KEY=VALUE, got %q", clip(line))})
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[k] = EnvValue{Value: v, Source: fmt.Sprintf("%s:%d", name, n)}
	}
	return diags
}

func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9' {
			continue
		}
		return false
	}
	return true
}

// Expand replaces ${VAR} and ${VAR:-default} in text. "$${" stands for a
// literal "${". Line numbers are preserved (values with newlines are
// refused) so YAML positions still point into the original file. Every
// undefined variable is reported with its position.
func Expand(file, text string, env Env) (string, Diagnostics) {
	var b strings.Builder
	var diags Diagnostics
	line, col := 1, 1
	for i := 0; i < len(text); {
		c := text[i]
		if c == '$' && strings.HasPrefix(text[i:], "$${") {
			b.WriteString("${")
			i += 3
			col += 3
			continue
		}
		if c == '$' && strings.HasPrefix(text[i:], "${") {
			end := strings.IndexAny(text[i+2:], "}\n")
			if end < 0 || text[i+2+end] != '}' {
				diags = append(diags, Diagnostic{File: file, Line: line, Col: col, Msg: "unterminated ${"})
				b.WriteString(text[i:])
				break
			}
			expr := text[i+2 : i+2+end]
			name, def, hasDef := strings.Cut(expr, ":-")
			v, ok := env[name]
			switch {
			case !validVarName(name):
				diags = append(diags, Diagnostic{File: file, Line: line, Col: col, Msg: fmt.Sprintf("invalid variable name %q", name)})
			case ok:
				if strings.ContainsAny(v.Value, "\n\r") {
					diags = append(diags, Diagnostic{File: file, Line: line, Col: col, Msg: fmt.Sprintf("variable %s (from %s) contains a newline", name, v.Source)})
				} else {
					b.WriteString(v.Value)
				}
			case hasDef:
				b.WriteString(def)
			default:
				diags = append(diags, Diagnostic{File: file, Line: line, Col: col, Msg: fmt.Sprintf("undefined variable ${%s}: set it in scalebox.env, ~/.scalebox/environments, /etc/scalebox/environments or the environment", name)})
			}
			n := end + 3
			i += n
			col += n
			continue
		}
		b.WriteByte(c)
		i++
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return b.String(), diags
}
