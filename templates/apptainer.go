package templates

import (
	"bytes"
	"fmt"
	"sort"
	"strings"
	"text/template"
)

// ModuleDef is what a module image is built from.
type ModuleDef struct {
	// Base is a local SIF or a root filesystem directory.
	Base string
	// Name is the module's name (a label).
	Name string
	// Files maps paths on the host to paths in the image.
	Files map[string]string
	// Labels are extra labels (org.scalebox.* and the user's).
	Labels map[string]string
}

// ModuleDefinition renders the Apptainer definition file of a module
// image. Apptainer splits %files and %labels lines on white space, so a
// path or label with white space or a newline is refused, not mangled.
func ModuleDefinition(d ModuleDef) (string, error) {
	bad := func(what, s string) error {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			return fmt.Errorf("module definition: %s %q is empty or has white space", what, s)
		}
		return nil
	}
	if err := bad("base", d.Base); err != nil {
		return "", err
	}
	if err := bad("module name", d.Name); err != nil {
		return "", err
	}
	var lines []string
	for src, dst := range d.Files {
		if err := bad("file", src); err != nil {
			return "", err
		}
		if err := bad("image path", dst); err != nil {
			return "", err
		}
		lines = append(lines, src+" "+dst)
	}
	sort.Strings(lines)
	for k, v := range d.Labels {
		if err := bad("label", k); err != nil {
			return "", err
		}
		if strings.ContainsAny(v, "\r\n") {
			return "", fmt.Errorf("module definition: label %s value has a newline", k)
		}
	}
	t, err := template.ParseFS(files, "apptainer/module.def.tmpl")
	if err != nil {
		return "", err
	}
	var b bytes.Buffer
	err = t.Execute(&b, struct {
		Base, Name string
		Files      []string
		Labels     map[string]string
	}{d.Base, d.Name, lines, d.Labels})
	return b.String(), err
}
