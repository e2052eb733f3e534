package dataflow

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v3"
)

// setting returns a module setting from parameters (preferred) or
// arguments, with its node for positions.
func (p *parser) setting(m *Module, key string) (string, *yaml.Node, bool) {
	for _, sec := range []struct {
		vals map[string]string
		name string
	}{{m.Parameters, "parameters"}, {m.Arguments, "arguments"}} {
		if v, ok := sec.vals[key]; ok {
			return v, p.pos[m.Name+"/"+sec.name+"/"+key], true
		}
	}
	return "", nil, false
}

func (p *parser) intSetting(m *Module, key string, min int, dst *int) {
	s, n, ok := p.setting(m, key)
	if !ok {
		return
	}
	v, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		p.errf(n, "module %q: %s must be an integer, got %q", m.Name, key, s)
		return
	}
	if v < min {
		p.errf(n, "module %q: %s must be >= %d, got %d", m.Name, key, min, v)
		return
	}
	*dst = v
}

// moduleSettings turns the raw arguments and parameters into typed fields.
func (p *parser) moduleSettings(m *Module) {
	if s, n, ok := p.setting(m, "code_path"); ok {
		path := s
		if !filepath.IsAbs(path) {
			path = filepath.Join(p.dir, path)
		}
		if st, err := os.Stat(path); err != nil || !st.IsDir() {
			p.errf(n, "module %q: code_path %q is not a directory", m.Name, s)
		}
		m.CodePath = path
	}
	p.intSetting(m, "task_max_seconds", 0, &m.TaskMaxSeconds)
	p.intSetting(m, "task_batch_size", 1, &m.TaskBatchSize)
	p.intSetting(m, "slot_max_tasks", 0, &m.SlotMaxTasks)
	if s, n, ok := p.setting(m, "task_dist_mode"); ok {
		mode := strings.ToUpper(strings.TrimSpace(s))
		switch mode {
		case DistDefault, DistHostBound, DistSlotBound:
			m.DistMode = mode
		default:
			p.errf(n, "module %q: task_dist_mode %q must be DEFAULT, HOST-BOUND or SLOT-BOUND", m.Name, s)
		}
	}
	if s, n, ok := p.setting(m, "retry_rules"); ok {
		rules, err := ParseRetryRules(SplitRuleList(s))
		if err != nil {
			p.errf(n, "module %q: %v", m.Name, err)
		}
		m.RetryRules = rules
	}
	if s, n, ok := p.setting(m, "retry_backoff"); ok {
		d, err := parseSeconds(s)
		if err != nil {
			p.errf(n, "module %q: retry_backoff %q: want a duration such as 2s or 500ms", m.Name, s)
		}
		m.RetryBackoff = Duration(d)
	}
	if s, _, ok := p.setting(m, "slot_options"); ok {
		for _, o := range strings.Split(strings.Trim(s, "[]"), ",") {
			if strings.Trim(strings.TrimSpace(o), `'"`) == "slot_on_head" {
				m.SlotOnHead = true
			}
		}
	}
	if s, n, ok := p.setting(m, "start_task"); ok {
		p.startTasks(m, s, n)
	}
	m.StageCache = true
	if s, n, ok := p.setting(m, "stage_cache"); ok {
		switch strings.ToLower(strings.TrimSpace(s)) {
		case "yes", "true", "on":
		case "no", "false", "off":
			m.StageCache = false
		default:
			p.errf(n, "module %q: stage_cache %q must be yes or no", m.Name, s)
		}
	}
	for key, dst := range map[string]*map[string]float64{"free_space_gb": &m.FreeSpaceGB, "dir_quota_gb": &m.DirQuotaGB} {
		if s, n, ok := p.setting(m, key); ok {
			v, err := ParseSpaceMap(s)
			if err != nil {
				p.errf(n, "module %q: %s: %v", m.Name, key, err)
			}
			*dst = v
		}
	}
}

// ParseSpaceMap parses free_space_gb or dir_quota_gb: a JSON object of
// directory -> GB (Scalebox's form), where a directory is absolute or a
// node tier (local:, mem:, optionally with a path in the tier).
func ParseSpaceMap(s string) (map[string]float64, error) {
	var raw map[string]any
	if err := json.Unmarshal([]byte(s), &raw); err != nil {
		return nil, fmt.Errorf("want a JSON object of directory -> GB, such as {\"local:\": 20}: %v", err)
	}
	out := make(map[string]float64, len(raw))
	for dir, v := range raw {
		var gb float64
		switch x := v.(type) {
		case float64:
			gb = x
		case string:
			f, err := strconv.ParseFloat(x, 64)
			if err != nil {
				return nil, fmt.Errorf("%q: %q is not a number of GB", dir, x)
			}
			gb = f
		default:
			return nil, fmt.Errorf("%q: %v is not a number of GB", dir, v)
		}
		if gb < 0 {
			return nil, fmt.Errorf("%q: %v GB is negative", dir, gb)
		}
		l := strings.ToLower(dir)
		tier := strings.HasPrefix(l, "local:") || strings.HasPrefix(l, "mem:")
		if !tier && !filepath.IsAbs(dir) {
			return nil, fmt.Errorf("%q: want an absolute directory or local:/mem: (a node tier)", dir)
		}
		if strings.Contains(dir, "..") {
			return nil, fmt.Errorf("%q: .. is not allowed", dir)
		}
		out[dir] = gb
	}
	return out, nil
}

func parseSeconds(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 {
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		err = fmt.Errorf("negative")
	}
	return d, err
}

// startTasks reads a start_task: a body, or FILE:path of message lines.
func (p *parser) startTasks(m *Module, s string, n *yaml.Node) {
	s = strings.TrimSpace(s)
	if s == "" {
		return
	}
	rel, isFile := strings.CutPrefix(s, "FILE:")
	if !isFile {
		m.StartTasks = append(m.StartTasks, Message{Module: m.Name, Body: s})
		return
	}
	path := rel
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.dir, path)
	}
	f, err := os.Open(path)
	if err != nil {
		p.errf(n, "module %q: start_task: %v", m.Name, err)
		return
	}
	defer f.Close()
	msgs, err := ParseMessages(path, &limitReader{f, MaxAppFileBytes})
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			p.diags = append(p.diags, Diagnostic{File: path, Line: lineOf(line), Col: 1, Msg: "start_task: " + line})
		}
	}
	for _, msg := range msgs {
		if msg.Module == "" {
			msg.Module = m.Name
		}
		m.StartTasks = append(m.StartTasks, msg)
	}
}

// lineOf extracts N from "file:N: msg".
func lineOf(s string) int {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) >= 2 {
		if n, err := strconv.Atoi(parts[1]); err == nil {
			return n
		}
	}
	return 0
}

func (p *parser) clusters(v *yaml.Node) map[string]*Cluster {
	v = resolve(v)
	if v.Kind != yaml.MappingNode {
		p.errf(v, "clusters must be a mapping, got %s", kindName(v))
		return nil
	}
	out := map[string]*Cluster{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		name := v.Content[i].Value
		c := &Cluster{Slurm: map[string]string{}, Pools: map[string]*Pool{}}
		out[name] = c
		what := fmt.Sprintf("cluster %q", name)
		p.mapping(v.Content[i+1], what, map[string]func(k, v *yaml.Node){
			"slurm": func(k, v *yaml.Node) {
				fields := map[string]func(k, v *yaml.Node){}
				for _, key := range []string{"mode", "rest_url", "token_file", "ssh", "user", "shared_dir", "binary", "api_version", "command_prefix"} {
					key := key
					fields[key] = func(k, v *yaml.Node) { var s string; p.str(&s)(k, v); c.Slurm[key] = s }
				}
				p.mapping(v, what+" slurm", fields, nil)
			},
			"pools": func(k, v *yaml.Node) {
				v = resolve(v)
				if v.Kind != yaml.MappingNode {
					p.errf(v, "%s pools must be a mapping", what)
					return
				}
				for j := 0; j+1 < len(v.Content); j += 2 {
					pl := &Pool{}
					c.Pools[v.Content[j].Value] = pl
					p.pool(pl, fmt.Sprintf("pool %q", v.Content[j].Value), v.Content[j+1])
				}
			},
		}, nil)
	}
	return out
}

func (p *parser) pool(pl *Pool, what string, v *yaml.Node) {
	p.mapping(v, what, map[string]func(k, v *yaml.Node){
		"partition": p.str(&pl.Partition),
		"account":   p.str(&pl.Account),
		"qos":       p.str(&pl.QOS),
		"time": func(k, v *yaml.Node) {
			p.str(&pl.Time)(k, v)
			if _, err := ParseTimeLimit(pl.Time); err != nil {
				p.errf(v, "%s: %v", what, err)
			}
		},
		"nodes": p.integer(&pl.Nodes, 1),
		"cpus":  p.integer(&pl.CPUs, 1),
		"mem": func(k, v *yaml.Node) {
			p.str(&pl.Mem)(k, v)
			if _, err := ParseMemMB(pl.Mem); err != nil {
				p.errf(v, "%s: %v", what, err)
			}
		},
		"gres":        p.str(&pl.Gres),
		"constraint":  p.str(&pl.Constraint),
		"sbatch_args": func(k, v *yaml.Node) { pl.SbatchArgs, _ = p.strList(k, v) },
		"min":         p.integer(&pl.Min, 0),
		"max":         p.integer(&pl.Max, 0),
		"idle_timeout": func(k, v *yaml.Node) {
			p.str(&pl.IdleTimeout)(k, v)
			if _, err := ParseIdleTimeout(pl.IdleTimeout); err != nil {
				p.errf(v, "%s: %v", what, err)
			}
		},
	}, nil)
	if pl.Max > 0 && pl.Min > pl.Max {
		p.errf(v, "%s: min %d is more than max %d", what, pl.Min, pl.Max)
	}
}

// nearest returns the known word closest to s, if it is close enough to be
// a plausible typo.
func nearest(s string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		d := levenshtein(s, k)
		if d < bestD || d == bestD && k < best {
			best, bestD = k, d
		}
	}
	limit := len(s) / 2
	if limit < 2 {
		limit = 2
	}
	if bestD <= limit {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
