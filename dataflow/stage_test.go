package dataflow

import (
	"strings"
	"testing"
)

func TestParseStageSpec(t *testing.T) {
	for _, tc := range []struct {
		in      string
		stageIn bool
		want    StageSpec
		err     string
	}{
		{"sftp://u@h:22/data/{body}.fits", true, StageSpec{"sftp://u@h:22/data/{body}.fits", "{body}.fits"}, ""},
		{"file:///shared/{body} -> in/raw.dat", true, StageSpec{"file:///shared/{body}", "in/raw.dat"}, ""},
		{"out/{body}.txt -> local:run/{body}.txt", false, StageSpec{"out/{body}.txt", "local:run/{body}.txt"}, ""},
		{"out.txt", false, StageSpec{}, "want WORK_DIR_PATH -> URL"},
		{"/etc/passwd -> local:x", false, StageSpec{}, "relative to WORK_DIR"},
		{"local:x -> ../x", true, StageSpec{}, "leaves WORK_DIR"},
		{"http://h/x", true, StageSpec{}, "not a file://, local:, mem: or sftp:// URL"},
		{"{header.source_url}/{body} -> in/{body}", true, StageSpec{"{header.source_url}/{body}", "in/{body}"}, ""},
		{"local:{bdy}", true, StageSpec{}, "unknown placeholder {bdy}"},
		{"local:{body", true, StageSpec{}, "unclosed {"},
		{"local:x ->", true, StageSpec{}, "want FROM -> TO"},
	} {
		got, err := ParseStageSpec(tc.in, tc.stageIn)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestExpandTemplate(t *testing.T) {
	env := map[string]string{"SOURCE_URL": "sftp://u@h:22/src"}
	getenv := func(k string) string { return env[k] }
	h := Headers{"night": "2026-12-03"}
	for _, tc := range []struct{ tmpl, want, err string }{
		{"local:{header.night}/{body}.dat", "local:2026-12-03/f1.dat", ""},
		{"{header.source_url}/{body}", "sftp://u@h:22/src/f1", ""}, // env fallback, upper-cased
		{"local:{header.missing}/x", "", `no header "missing" (nor env MISSING)`},
		{"local:plain", "local:plain", ""},
	} {
		got, err := ExpandTemplate(tc.tmpl, "f1", h, getenv)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %q, %v; want error with %q", tc.tmpl, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.tmpl, got, err, tc.want)
		}
	}
}

func TestTaskStageSpecsFromHeaders(t *testing.T) {
	m := &Module{StageIn: []StageSpec{{"local:a", "a"}}}
	in, out, err := TaskStageSpecs(m, Headers{HeaderStageIn: "local:b; mem:c -> c2", HeaderStageOut: "r.txt -> local:r/{body}"})
	if err != nil {
		t.Fatal(err)
	}
	if len(in) != 3 || in[1] != (StageSpec{"local:b", "b"}) || in[2] != (StageSpec{"mem:c", "c2"}) {
		t.Errorf("stage_in %+v", in)
	}
	if len(out) != 1 || out[0] != (StageSpec{"r.txt", "local:r/{body}"}) {
		t.Errorf("stage_out %+v", out)
	}
	if len(m.StageIn) != 1 {
		t.Errorf("the module's list was changed: %+v", m.StageIn)
	}
	if _, _, err := TaskStageSpecs(m, Headers{HeaderStageOut: "../x -> local:x"}); err == nil || !strings.Contains(err.Error(), "header stage_out") {
		t.Errorf("bad header entry: %v", err)
	}
}

func TestParseSpaceMap(t *testing.T) {
	got, err := ParseSpaceMap(`{"local:": 20, "/scratch/x": "1.5", "mem:shm": 0}`)
	if err != nil || got["local:"] != 20 || got["/scratch/x"] != 1.5 || got["mem:shm"] != 0 || len(got) != 3 {
		t.Fatalf("%v, %v", got, err)
	}
	for in, want := range map[string]string{
		`[1]`:                   "JSON object",
		`{"rel/dir": 1}`:        "absolute directory",
		`{"/x": -1}`:            "negative",
		`{"/x": "lots"}`:        "not a number",
		`{"local:../up": 1}`:    ".. is not allowed",
		`{"/x": {"nested": 1}}`: "not a number",
	} {
		if _, err := ParseSpaceMap(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", in, err, want)
		}
	}
}
