package templates

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"text/template"
)

// Modulefile renders the Lmod ("lua") or Environment Modules ("tcl")
// modulefile for an installation under prefix.
func Modulefile(kind, prefix, version string) (string, error) {
	if kind != "lua" && kind != "tcl" {
		return "", fmt.Errorf("modulefile kind %q: want lua or tcl", kind)
	}
	if !filepath.IsAbs(prefix) {
		return "", fmt.Errorf("modulefile prefix %q must be an absolute path", prefix)
	}
	if strings.ContainsAny(prefix+version, "\"\\\n\r[]$ {}") {
		return "", fmt.Errorf("modulefile: prefix %q or version %q has characters Lua or Tcl would interpret", prefix, version)
	}
	t, err := template.ParseFS(files, "modulefiles/scalebox."+kind+".tmpl")
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	if err := t.Execute(&b, struct{ Prefix, Version string }{prefix, version}); err != nil {
		return "", err
	}
	return b.String(), nil
}
