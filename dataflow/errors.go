package dataflow

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}

// Severity of a Diagnostic.
type Severity int

const (
	SevError Severity = iota
	SevWarning
)

// Diagnostic is one problem found in an app definition, with its position.
type Diagnostic struct {
	File     string
	Line     int
	Col      int
	Severity Severity
	Msg      string
}

func (d Diagnostic) String() string {
	kind := "error"
	if d.Severity == SevWarning {
		kind = "warning"
	}
	pos := d.File
	if d.Line > 0 {
		pos = fmt.Sprintf("%s:%d:%d", d.File, d.Line, d.Col)
	}
	return fmt.Sprintf("%s: %s: %s", pos, kind, d.Msg)
}

// Diagnostics is every problem of one definition. As an error it reports
// the errors only; warnings are for display.
type Diagnostics []Diagnostic

// Errors returns only the error-severity entries.
func (ds Diagnostics) Errors() Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		if d.Severity == SevError {
			out = append(out, d)
		}
	}
	return out
}

// Warnings returns only the warnings.
func (ds Diagnostics) Warnings() Diagnostics {
	var out Diagnostics
	for _, d := range ds {
		if d.Severity == SevWarning {
			out = append(out, d)
		}
	}
	return out
}

func (ds Diagnostics) sorted() Diagnostics {
	out := append(Diagnostics(nil), ds...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].File != out[j].File {
			return out[i].File < out[j].File
		}
		if out[i].Line != out[j].Line {
			return out[i].Line < out[j].Line
		}
		return out[i].Col < out[j].Col
	})
	return out
}

// Error lists the errors one per line.
func (ds Diagnostics) Error() string {
	var b strings.Builder
	for i, d := range ds.Errors().sorted() {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(d.String())
	}
	return b.String()
}
