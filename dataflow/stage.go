package dataflow

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// StageSpec is one transfer a module declares. For stage_in, From is a
// URL template and To a path in the slot's WORK_DIR that run.sh reads;
// for stage_out, From is a WORK_DIR path template and To a URL template,
// copied after run.sh succeeds. Written "FROM -> TO"; a stage_in without
// "-> TO" lands under the URL's base name.
type StageSpec struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// stageSchemes are the URL schemes of DESIGN §10; the staging package
// checks a URL in full once its template is filled in.
var stageSchemes = []string{"file://", "local:", "mem:", "sftp://"}

// ParseStageSpec parses one stage_in (in) or stage_out entry.
func ParseStageSpec(s string, in bool) (StageSpec, error) {
	from, to, arrow := strings.Cut(s, "->")
	sp := StageSpec{From: strings.TrimSpace(from), To: strings.TrimSpace(to)}
	url, file := &sp.From, &sp.To
	if !in {
		url, file = &sp.To, &sp.From
	}
	switch {
	case sp.From == "" || arrow && sp.To == "":
		return sp, fmt.Errorf("stage entry %q: want FROM -> TO", s)
	case !in && !arrow:
		return sp, fmt.Errorf("stage_out entry %q: want WORK_DIR_PATH -> URL", s)
	}
	// A URL that starts with a placeholder ({header.source_url}/...) gets
	// its scheme from the task; it is checked once filled in.
	if !hasStageScheme(*url) && !strings.HasPrefix(*url, "{") {
		return sp, fmt.Errorf("stage entry %q: %q is not a file://, local:, mem: or sftp:// URL", s, *url)
	}
	if in && !arrow {
		*file = (*url)[strings.LastIndexAny(*url, "/:")+1:]
	}
	if err := CheckWorkPath(*file); err != nil {
		return sp, fmt.Errorf("stage entry %q: %v", s, err)
	}
	for _, t := range []string{sp.From, sp.To} {
		if _, err := expand(t, "x", nil, nil, true); err != nil {
			return sp, fmt.Errorf("stage entry %q: %v", s, err)
		}
	}
	return sp, nil
}

func hasStageScheme(s string) bool {
	for _, p := range stageSchemes {
		if strings.HasPrefix(strings.ToLower(s), p) {
			return true
		}
	}
	return false
}

// CheckWorkPath refuses a WORK_DIR path that could leave the work dir.
// Templates are checked when parsed, and their expansions again (a body
// may hold "..").
func CheckWorkPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") {
		return fmt.Errorf("%q must be a path relative to WORK_DIR", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("%q leaves WORK_DIR (..)", p)
		}
	}
	return nil
}

// ExpandTemplate fills a stage template: {body} is the task's body,
// {header.NAME} its header NAME, falling back (as Scalebox does for
// missing headers) to the environment variable of NAME upper-cased. A
// placeholder with no value, or an unknown one, is an error: a transfer
// to a half-filled name would put data where nobody looks for it.
func ExpandTemplate(tmpl, body string, h Headers, env func(string) string) (string, error) {
	return expand(tmpl, body, h, env, false)
}

// expand is ExpandTemplate; checkOnly checks the syntax, filling headers
// with a stand-in.
func expand(tmpl, body string, h Headers, env func(string) string, checkOnly bool) (string, error) {
	var b strings.Builder
	rest := tmpl
	for {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("template %q: unclosed {", tmpl)
		}
		b.WriteString(rest[:i])
		name := rest[i+1 : i+j]
		rest = rest[i+j+1:]
		switch {
		case name == "body":
			b.WriteString(body)
		case strings.HasPrefix(name, "header.") && len(name) > len("header."):
			key := name[len("header."):]
			v, ok := h[key]
			if !ok && env != nil {
				v = env(strings.ToUpper(key))
				ok = v != ""
			}
			if checkOnly {
				v, ok = "x", true
			}
			if !ok {
				return "", fmt.Errorf("template %q: task has no header %q (nor env %s)", tmpl, key, strings.ToUpper(key))
			}
			b.WriteString(v)
		default:
			return "", fmt.Errorf("template %q: unknown placeholder {%s} (want {body} or {header.NAME})", tmpl, name)
		}
	}
}

// TaskStageSpecs returns a task's transfers: the module's, then those its
// headers add (header stage_in / stage_out, entries separated by ';').
func TaskStageSpecs(m *Module, h Headers) (in, out []StageSpec, err error) {
	in = append(in, m.StageIn...)
	out = append(out, m.StageOut...)
	for key, dst := range map[string]*[]StageSpec{HeaderStageIn: &in, HeaderStageOut: &out} {
		for _, e := range strings.Split(h[key], ";") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			sp, perr := ParseStageSpec(e, key == HeaderStageIn)
			if perr != nil {
				return nil, nil, fmt.Errorf("header %s: %v", key, perr)
			}
			*dst = append(*dst, sp)
		}
	}
	return in, out, nil
}

// ReadsNodeTier reports whether the module stages in from a tier of the
// node it runs on (local:, mem:), so its tasks must run where that data
// was written.
func (m *Module) ReadsNodeTier() bool {
	for _, sp := range m.StageIn {
		if l := strings.ToLower(sp.From); strings.HasPrefix(l, "local:") || strings.HasPrefix(l, "mem:") {
			return true
		}
	}
	return false
}

// DataKey names a task's first cacheable input (a stage_in from a shared
// or remote URL) for the head's record of which node caches what: a hash
// of the URL as its template expands from the module's definition and the
// task's headers. "" when the module caches nothing, or the template
// needs a value only a node has (an environment variable there).
func (m *Module) DataKey(body string, h Headers) string {
	if !m.StageCache {
		return ""
	}
	in, _, err := TaskStageSpecs(m, h)
	if err != nil {
		return ""
	}
	for _, sp := range in {
		u, err := ExpandTemplate(sp.From, body, h, m.Env)
		if err != nil {
			return ""
		}
		if l := strings.ToLower(u); strings.HasPrefix(l, "file://") || strings.HasPrefix(l, "sftp://") {
			return DataKeyOf(u)
		}
	}
	return ""
}

// DataKeyOf is the key of an expanded stage_in URL.
func DataKeyOf(url string) string {
	sum := sha256.Sum256([]byte(url))
	return hex.EncodeToString(sum[:12])
}
