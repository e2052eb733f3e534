package dataflow

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// MaxAppFileBytes bounds app.yaml and start-task files.
const MaxAppFileBytes = 16 << 20

// LoadOptions select the environment of a load.
type LoadOptions struct {
	EnvFile string   // replaces DIR/scalebox.env when set
	Environ []string // process environment, highest precedence; nil means none
	// Files overrides EnvSources (tests).
	Files []string
}

// LoadApp reads DIR/app.yaml (or the named file), expands variables and
// parses and validates it. All problems are returned together; the App is
// nil when any of them is an error.
func LoadApp(path string, opts LoadOptions) (*App, Diagnostics) {
	file := path
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		file = filepath.Join(path, "app.yaml")
	}
	abs, err := filepath.Abs(file)
	if err == nil {
		file = abs
	}
	data, err := readBounded(file)
	if err != nil {
		return nil, Diagnostics{{File: file, Msg: err.Error()}}
	}
	dir := filepath.Dir(file)
	files := opts.Files
	if files == nil {
		files = EnvSources(dir, opts.EnvFile)
	}
	var diags Diagnostics
	if opts.EnvFile != "" {
		if _, err := os.Stat(opts.EnvFile); err != nil {
			diags = append(diags, Diagnostic{File: opts.EnvFile, Msg: err.Error()})
		}
	}
	env, d := LoadEnv(files, opts.Environ)
	diags = append(diags, d...)
	app, d := ParseApp(file, data, env)
	diags = append(diags, d...)
	if len(diags.Errors()) > 0 {
		return nil, diags
	}
	return app, diags
}

func readBounded(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := buf.ReadFrom(&limitReader{f, MaxAppFileBytes + 1})
	if err != nil {
		return nil, err
	}
	if n > MaxAppFileBytes {
		return nil, fmt.Errorf("file larger than %d bytes", MaxAppFileBytes)
	}
	return buf.Bytes(), nil
}

type limitReader struct {
	f interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errEOF
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}

// ParseApp parses app.yaml text (file names positions and anchors relative
// paths). It never panics on any input.
func ParseApp(file string, data []byte, env Env) (app *App, diags Diagnostics) {
	defer func() {
		if r := recover(); r != nil {
			app = nil
			diags = append(diags, Diagnostic{File: file, Msg: fmt.Sprintf("internal error parsing: %v", r)})
		}
	}()
	p := &parser{file: file, dir: filepath.Dir(file), pos: map[string]*yaml.Node{}}
	text, d := Expand(file, string(data), env)
	p.diags = append(p.diags, d...)
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil {
		line := 0
		msg := err.Error()
		// yaml.v3 errors read "yaml: line N: ..."
		if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
			if num, tail, ok := strings.Cut(rest, ":"); ok {
				if n, e := strconv.Atoi(num); e == nil {
					line, msg = n, strings.TrimSpace(tail)
				}
			}
		}
		p.diags = append(p.diags, Diagnostic{File: file, Line: line, Col: 1, Msg: "YAML syntax: " + msg})
		return nil, p.diags
	}
	if len(doc.Content) == 0 {
		p.diags = append(p.diags, Diagnostic{File: file, Line: 1, Col: 1, Msg: "empty app definition"})
		return nil, p.diags
	}
	a := p.app(doc.Content[0])
	if len(p.diags.Errors()) > 0 {
		return nil, p.diags
	}
	return a, p.diags
}

type parser struct {
	file  string
	dir   string
	diags Diagnostics
	pos   map[string]*yaml.Node
}

func (p *parser) errf(n *yaml.Node, format string, args ...any) {
	d := Diagnostic{File: p.file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		d.Line, d.Col = n.Line, n.Column
	}
	p.diags = append(p.diags, d)
}

func (p *parser) warnf(n *yaml.Node, format string, args ...any) {
	p.errf(n, format, args...)
	p.diags[len(p.diags)-1].Severity = SevWarning
}

// field is one accepted key of a mapping.
type field struct {
	set func(key, val *yaml.Node)
}

// mapping visits the keys of n. aliases maps legacy names to current ones
// (a warning each). Unknown keys are errors with the nearest known key.
func (p *parser) mapping(n *yaml.Node, what string, fields map[string]func(key, val *yaml.Node), aliases map[string]string) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.errf(n, "%s must be a mapping, got %s", what, kindName(n))
		return
	}
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		if to, ok := aliases[name]; ok {
			p.warnf(k, "%q is the legacy Scalebox name of %q; accepted", name, to)
			name = to
		}
		if prev, dup := seen[name]; dup {
			p.errf(k, "%s: key %q given twice (first at line %d)", what, name, prev.Line)
			continue
		}
		seen[name] = k
		set, ok := fields[name]
		if !ok {
			known := make([]string, 0, len(fields))
			for f := range fields {
				known = append(known, f)
			}
			if s := nearest(name, known); s != "" {
				p.errf(k, "%s: unknown key %q (did you mean %q?)", what, name, s)
			} else {
				p.errf(k, "%s: unknown key %q", what, name)
			}
			continue
		}
		set(k, v)
	}
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n == nil {
		return &yaml.Node{}
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%q", n.Value)
	}
	return "nothing"
}

func (p *parser) str(dst *string) func(k, v *yaml.Node) {
	return func(k, v *yaml.Node) {
		v = resolve(v)
		if v.Kind != yaml.ScalarNode {
			p.errf(v, "%s must be a string, got %s", k.Value, kindName(v))
			return
		}
		*dst = v.Value
	}
}

func (p *parser) integer(dst *int, min int) func(k, v *yaml.Node) {
	return func(k, v *yaml.Node) {
		v = resolve(v)
		n, err := strconv.Atoi(strings.TrimSpace(v.Value))
		if v.Kind != yaml.ScalarNode || err != nil {
			p.errf(v, "%s must be an integer, got %s", k.Value, kindName(v))
			return
		}
		if n < min {
			p.errf(v, "%s must be >= %d, got %d", k.Value, min, n)
			return
		}
		*dst = n
	}
}

// strList accepts a list of scalars, or one scalar (a one-item list, or
// Scalebox's "['a','b']" string form when bracketed).
func (p *parser) strList(k, v *yaml.Node) ([]string, bool) {
	v = resolve(v)
	switch v.Kind {
	case yaml.ScalarNode:
		s := strings.TrimSpace(v.Value)
		if s == "" {
			return nil, true
		}
		if strings.HasPrefix(s, "[") {
			var out []string
			for _, it := range SplitRuleList(s) {
				out = append(out, strings.Trim(strings.TrimSpace(it), `'"`))
			}
			return out, true
		}
		return []string{s}, true
	case yaml.SequenceNode:
		out := make([]string, 0, len(v.Content))
		for _, it := range v.Content {
			it = resolve(it)
			if it.Kind != yaml.ScalarNode {
				p.errf(it, "%s: items must be strings, got %s", k.Value, kindName(it))
				return nil, false
			}
			out = append(out, it.Value)
		}
		return out, true
	}
	p.errf(v, "%s must be a list, got %s", k.Value, kindName(v))
	return nil, false
}

func (p *parser) app(root *yaml.Node) *App {
	a := &App{Dir: p.dir, File: p.file, Parameters: AppParameters{InitialStatus: AppRunning}}
	var modulesNode *yaml.Node
	var routerNode *yaml.Node
	p.mapping(root, "app", map[string]func(k, v *yaml.Node){
		"name":    p.str(&a.Name),
		"label":   p.str(&a.Label),
		"version": p.str(&a.Version),
		"cluster": p.str(&a.Cluster),
		"parameters": func(k, v *yaml.Node) {
			var status string
			p.mapping(v, "parameters", map[string]func(k, v *yaml.Node){
				"main_router":        func(k, v *yaml.Node) { routerNode = v; p.str(&a.Parameters.MainRouter)(k, v) },
				"initial_status":     func(k, v *yaml.Node) { p.str(&status)(k, v); p.initialStatus(v, status, &a.Parameters.InitialStatus) },
				"default_idle_polls": p.integer(&a.Parameters.DefaultIdlePolls, 0),
				"slot_group":         p.str(&a.Parameters.SlotGroup),
			}, map[string]string{"message_router": "main_router"})
		},
		"modules":  func(k, v *yaml.Node) { modulesNode = v },
		"clusters": func(k, v *yaml.Node) { a.Clusters = p.clusters(v) },
	}, map[string]string{"jobs": "modules"})

	if a.Name == "" {
		p.errf(root, "app: missing required key \"name\"")
	} else if !validModuleName(a.Name) {
		p.errf(root, "app: name %q must be letters, digits, '.', '_' or '-'", a.Name)
	}
	if modulesNode == nil {
		p.errf(root, "app: missing required key \"modules\"")
		return a
	}
	mn := resolve(modulesNode)
	if mn.Kind != yaml.MappingNode {
		p.errf(mn, "modules must be a mapping of module name to definition, got %s", kindName(mn))
		return a
	}
	sinkNodes := map[*Module][]*yaml.Node{}
	seen := map[string]bool{}
	for i := 0; i+1 < len(mn.Content); i += 2 {
		k, v := mn.Content[i], mn.Content[i+1]
		if !validModuleName(k.Value) {
			p.errf(k, "module name %q must be letters, digits, '.', '_' or '-'", k.Value)
			continue
		}
		if seen[k.Value] {
			p.errf(k, "module %q defined twice", k.Value)
			continue
		}
		seen[k.Value] = true
		m, sinks := p.module(k, v)
		a.Modules = append(a.Modules, m)
		sinkNodes[m] = sinks
	}
	if len(a.Modules) == 0 {
		p.errf(mn, "modules: at least one module is required")
	}
	for _, m := range a.Modules {
		for i, s := range m.SinkModules {
			if !seen[s] {
				p.errf(sinkNodes[m][i], "module %q: sink module %q does not exist%s", m.Name, s, suggest(s, a.moduleNames()))
			}
		}
	}
	a.ResolvePools()
	if r := a.Parameters.MainRouter; r != "" {
		if !seen[r] {
			p.errf(routerNode, "main_router %q does not exist%s", r, suggest(r, a.moduleNames()))
		} else {
			a.Module(r).SlotOnHead = true
		}
	}
	return a
}

// stageSpecs parses a module's stage_in or stage_out list.
func (p *parser) stageSpecs(what string, dst *[]StageSpec, in bool) func(k, v *yaml.Node) {
	return func(k, v *yaml.Node) {
		items, _ := p.strList(k, v)
		for i, it := range items {
			sp, err := ParseStageSpec(it, in)
			if err != nil {
				p.errf(itemNode(v, i), "%s: %v", what, err)
				continue
			}
			*dst = append(*dst, sp)
		}
	}
}

func (p *parser) initialStatus(v *yaml.Node, s string, dst *AppStatus) {
	st := AppStatus(strings.ToUpper(s))
	switch st {
	case AppRunning, AppInitial, AppPaused:
		*dst = st
	default:
		p.errf(v, "initial_status %q must be RUNNING, INITIAL or PAUSED", s)
	}
}

func (a *App) moduleNames() []string {
	out := make([]string, len(a.Modules))
	for i, m := range a.Modules {
		out[i] = m.Name
	}
	return out
}

func suggest(s string, known []string) string {
	if n := nearest(s, known); n != "" {
		return fmt.Sprintf(" (did you mean %q?)", n)
	}
	return ""
}

// Known keys of a module's arguments and parameters. Scalebox keys we store
// but do not act on yet are accepted so existing apps load.
var (
	argumentKeys  = []string{"code_path", "task_max_seconds", "task_batch_size", "slot_max_seconds", "repeated"}
	parameterKeys = []string{"task_dist_mode", "start_task", "retry_rules", "retry_backoff", "slot_max_tasks",
		"key_group_regex", "key_group_index", "dir_quota_gb", "free_space_gb", "node_progress_gap",
		"vtask_role", "vtask_size", "slot_options", "initial_task_status", "initial_slot_status", "sort_tag",
		"task_max_seconds", "task_batch_size", "stage_cache"}
)

func (p *parser) module(k, v *yaml.Node) (*Module, []*yaml.Node) {
	m := &Module{Name: k.Value, TaskBatchSize: 1, DistMode: DistDefault, RetryBackoff: DefaultRetryBackoff,
		Arguments: map[string]string{}, Parameters: map[string]string{}}
	var sinkNodes []*yaml.Node
	var imageNode *yaml.Node
	what := fmt.Sprintf("module %q", m.Name)
	p.mapping(v, what, map[string]func(k, v *yaml.Node){
		"label":      p.str(&m.Label),
		"base_image": func(k, v *yaml.Node) { imageNode = v; p.str(&m.BaseImage)(k, v) },
		"cluster":    p.str(&m.Cluster),
		"arguments": func(k, v *yaml.Node) {
			p.freeMap(v, what+" arguments", m.Name+"/arguments/", argumentKeys, m.Arguments, map[string]string{"task_timeout_seconds": "task_max_seconds"})
		},
		"parameters": func(k, v *yaml.Node) {
			p.freeMap(v, what+" parameters", m.Name+"/parameters/", parameterKeys, m.Parameters, map[string]string{"start_message": "start_task", "task_timeout_seconds": "task_max_seconds"})
		},
		"environments": func(k, v *yaml.Node) { p.environments(m, k, v) },
		"volumes": func(k, v *yaml.Node) {
			items, ok := p.strList(k, v)
			for i, it := range items {
				vol, err := ParseVolume(it)
				if err != nil {
					p.errf(itemNode(v, i), "%s: %v", what, err)
					continue
				}
				if !filepath.IsAbs(vol.Host) {
					vol.Host = filepath.Join(p.dir, vol.Host)
				}
				m.Volumes = append(m.Volumes, vol)
			}
			_ = ok
		},
		"stage_in":  p.stageSpecs(what, &m.StageIn, true),
		"stage_out": p.stageSpecs(what, &m.StageOut, false),
		"slots": func(k, v *yaml.Node) {
			items, _ := p.strList(k, v)
			for i, it := range items {
				s, err := ParseSlotSpec(it)
				if err != nil {
					p.errf(itemNode(v, i), "%s: %v", what, err)
					continue
				}
				m.Slots = append(m.Slots, s)
			}
		},
		"sink_modules": func(k, v *yaml.Node) {
			items, _ := p.strList(k, v)
			for i, it := range items {
				for _, s := range strings.Split(it, ",") {
					if s = strings.TrimSpace(s); s != "" {
						m.SinkModules = append(m.SinkModules, s)
						sinkNodes = append(sinkNodes, itemNode(v, i))
					}
				}
			}
		},
	}, map[string]string{"variables": "arguments", "hosts": "slots", "sink_jobs": "sink_modules", "paths": "volumes"})
	if m.BaseImage == "" {
		p.errf(k, "%s: missing required key \"base_image\" (an image path, or %q to run on the node)", what, HostImage)
	} else if strings.HasPrefix(m.BaseImage, BuiltinPrefix) {
		switch b := m.Builtin(); b {
		case BuiltinDirList, BuiltinFileCopy:
		default:
			p.errf(imageNode, "%s: unknown built-in module %q (want %s%s or %s%s)", what, b, BuiltinPrefix, BuiltinDirList, BuiltinPrefix, BuiltinFileCopy)
		}
	} else if m.BaseImage != HostImage {
		// An image path is relative to the app's directory. Slots start it
		// on the nodes, so a missing file here is a warning (the nodes may
		// see another filesystem), and there a start failure (exit 125).
		if !filepath.IsAbs(m.BaseImage) {
			m.BaseImage = filepath.Join(p.dir, m.BaseImage)
		}
		if _, err := os.Stat(m.BaseImage); err != nil {
			p.warnf(imageNode, "%s: base_image %s: no such image here; its slots will fail to start (exit 125) on nodes that do not have it", what, m.BaseImage)
		}
	}
	p.moduleSettings(m)
	if b := m.Builtin(); b != "" && m.TaskBatchSize > 1 {
		p.errf(imageNode, "%s: built-in %s takes one task at a time (task_batch_size %d)", what, b, m.TaskBatchSize)
	}
	return m, sinkNodes
}

// freeMap reads a map of scalar settings with a known key set. Positions
// are kept (under prefix+key) so moduleSettings can point at bad values.
func (p *parser) freeMap(v *yaml.Node, what, prefix string, keys []string, dst map[string]string, aliases map[string]string) {
	fields := map[string]func(k, v *yaml.Node){}
	for _, key := range keys {
		key := key
		fields[key] = func(k, v *yaml.Node) {
			v = resolve(v)
			switch v.Kind {
			case yaml.ScalarNode:
				dst[key] = v.Value
			case yaml.SequenceNode:
				items, _ := p.strList(k, v)
				dst[key] = "[" + strings.Join(quoteAll(items), ",") + "]"
			case yaml.MappingNode:
				// JSON maps such as free_space_gb may be written as YAML maps.
				var m map[string]any
				if err := v.Decode(&m); err != nil {
					p.errf(v, "%s: %s: %v", what, key, err)
					return
				}
				b, err := json.Marshal(m)
				if err != nil {
					p.errf(v, "%s: %s: %v", what, key, err)
					return
				}
				dst[key] = string(b)
			}
			p.pos[prefix+key] = v
		}
	}
	p.mapping(v, what, fields, aliases)
}

func quoteAll(items []string) []string {
	out := make([]string, len(items))
	for i, s := range items {
		out[i] = "'" + s + "'"
	}
	return out
}

func itemNode(v *yaml.Node, i int) *yaml.Node {
	v = resolve(v)
	if v.Kind == yaml.SequenceNode && i < len(v.Content) {
		return v.Content[i]
	}
	return v
}

func (p *parser) environments(m *Module, k, v *yaml.Node) {
	v = resolve(v)
	if v.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(v.Content); i += 2 {
			key, val := v.Content[i], resolve(v.Content[i+1])
			if !validVarName(key.Value) {
				p.errf(key, "module %q environments: %q is not a variable name", m.Name, key.Value)
				continue
			}
			m.Environments = append(m.Environments, key.Value+"="+val.Value)
		}
		return
	}
	items, _ := p.strList(k, v)
	for i, it := range items {
		name, _, ok := strings.Cut(it, "=")
		if !ok || !validVarName(name) {
			p.errf(itemNode(v, i), "module %q environments: %q is not KEY=VALUE", m.Name, it)
			continue
		}
		m.Environments = append(m.Environments, it)
	}
}

var errEOF = io.EOF

// ParseClusters reads a clusters file (~/.scalebox/clusters.yaml): a
// mapping of cluster names to the same settings as an app's `clusters:`.
func ParseClusters(file string, data []byte) (clusters map[string]*Cluster, diags Diagnostics) {
	defer func() {
		if r := recover(); r != nil {
			clusters = nil
			diags = append(diags, Diagnostic{File: file, Msg: fmt.Sprintf("internal error parsing: %v", r)})
		}
	}()
	p := &parser{file: file, dir: filepath.Dir(file), pos: map[string]*yaml.Node{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p.diags = append(p.diags, Diagnostic{File: file, Line: 1, Col: 1, Msg: "YAML syntax: " + err.Error()})
		return nil, p.diags
	}
	if len(doc.Content) == 0 {
		return map[string]*Cluster{}, nil
	}
	root := resolve(doc.Content[0])
	// Accept the file with or without a top-level "clusters:" key.
	if root.Kind == yaml.MappingNode && len(root.Content) == 2 && root.Content[0].Value == "clusters" {
		root = root.Content[1]
	}
	out := p.clusters(root)
	if len(p.diags.Errors()) > 0 {
		return nil, p.diags
	}
	return out, p.diags
}
