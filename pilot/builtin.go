package pilot

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
	"github.com/scalebox-hpc/scalebox/staging"
)

// builtinExecutor runs a built-in module (base_image builtin:NAME) in the
// pilot itself: no script, no process per task. It follows Scalebox's
// transfer-module conventions: headers source_url and target_url, falling
// back to the module's SOURCE_URL and TARGET_URL.
type builtinExecutor struct {
	s    *slot
	name string
}

func (b *builtinExecutor) dirs() slotDirs { return b.s.host }

func (b *builtinExecutor) script(name string) string {
	if name == RunScript {
		return dataflow.BuiltinPrefix + b.name
	}
	return ""
}

func (b *builtinExecutor) broken() error                   { return nil }
func (b *builtinExecutor) close(ctx context.Context) error { return nil }

// maxListed bounds one dir-list task's messages, as sink-tasks.txt is
// bounded: a tree larger than that is listed one subdirectory per task.
const maxListed = maxMessages

func (b *builtinExecutor) run(ctx context.Context, r request) response {
	res := Result{Started: time.Now()}
	var out Outputs
	var err error
	if len(r.Args) != 2 {
		err = fmt.Errorf("built-in %s: want a body and headers", b.name)
	} else {
		var h dataflow.Headers
		if err = json.Unmarshal([]byte(r.Args[1]), &h); err == nil {
			switch b.name {
			case dataflow.BuiltinDirList:
				out, err = b.dirList(ctx, r.Args[0], h)
			case dataflow.BuiltinFileCopy:
				out, err = b.fileCopy(ctx, r.Args[0], h)
			default:
				err = fmt.Errorf("unknown built-in module %q", b.name)
			}
		}
	}
	res.Ended = time.Now()
	if err != nil {
		res.ExitCode, res.SystemErr = dataflow.ExitRuntime, fmt.Sprintf("built-in %s: %v", b.name, err)
	}
	return response{Result: res, Outputs: out}
}

// url is header key's URL (else the env default) joined with rel.
func (b *builtinExecutor) url(key, rel string, h dataflow.Headers) (staging.URL, error) {
	base, err := dataflow.ExpandTemplate("{header."+key+"}", "", h, b.s.headerEnv)
	if err != nil {
		return staging.URL{}, err
	}
	return staging.JoinURL(base, rel)
}

// passOn are the headers a built-in's messages carry, resolved, so the
// next module sees where the data came from and went.
func (b *builtinExecutor) passOn(h dataflow.Headers) dataflow.Headers {
	out := dataflow.Headers{}
	for _, k := range []string{"source_url", "target_url"} {
		if v, err := dataflow.ExpandTemplate("{header."+k+"}", "", h, b.s.headerEnv); err == nil {
			out[k] = v
		}
	}
	return out
}

// dirList lists the files under source_url/body, recursively, and emits
// each one's path relative to source_url.
func (b *builtinExecutor) dirList(ctx context.Context, body string, h dataflow.Headers) (Outputs, error) {
	var out Outputs
	rel := path.Clean(body)
	u, err := b.url("source_url", rel, h)
	if err != nil {
		return out, err
	}
	st, err := b.s.p.tiers.OpenDir(ctx, u, u.Path, staging.Read)
	if err != nil {
		return out, err
	}
	defer st.Close()
	var files []string
	err = staging.Walk(ctx, st, ".", func(name string, e staging.Info) error {
		if strings.HasPrefix(e.Name, ".") && strings.HasSuffix(e.Name, ".part") || strings.HasSuffix(e.Name, ".part.json") {
			return nil // a copy in progress, not a file yet
		}
		if len(files) == maxListed {
			return fmt.Errorf("more than %d files under %s: list its subdirectories as separate tasks", maxListed, u)
		}
		files = append(files, path.Join(rel, name))
		return nil
	})
	if err != nil {
		return out, err
	}
	sort.Strings(files)
	if len(files) > 0 && b.s.pm.SinkModule == "" {
		return out, fmt.Errorf("%d files listed but the module has no sink_modules (and the app no main_router)", len(files))
	}
	pass := b.passOn(h)
	for _, f := range files {
		out.Messages = append(out.Messages, dataflow.Message{Body: strings.TrimPrefix(f, "./"), Headers: pass})
	}
	return out, nil
}

// fileCopy copies source_url/body to target_url/body, verified and
// resumable, and emits body to the sink module if there is one.
func (b *builtinExecutor) fileCopy(ctx context.Context, body string, h dataflow.Headers) (Outputs, error) {
	var out Outputs
	from, err := b.url("source_url", body, h)
	if err != nil {
		return out, err
	}
	to, err := b.url("target_url", body, h)
	if err != nil {
		return out, err
	}
	n, err := b.s.copy(ctx, from, to)
	if err != nil {
		return out, fmt.Errorf("%s -> %s: %w", from, to, err)
	}
	out.InputBytes, out.OutputBytes = n, n
	out.DataOnNode = to.OnNode()
	if b.s.pm.SinkModule != "" {
		out.Messages = []dataflow.Message{{Body: body, Headers: b.passOn(h)}}
	}
	return out, nil
}
