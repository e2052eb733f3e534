package dataflow

import (
	"strings"
	"testing"
	"time"
)

func TestParseTimeLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{"", 0, false},
		{"2", 2 * time.Minute, false},
		{"2:30", 2*time.Minute + 30*time.Second, false},
		{"1:00:00", time.Hour, false},
		{"1-12", 36 * time.Hour, false},
		{"1-00:30", 24*time.Hour + 30*time.Minute, false},
		{"2-01:02:03", 49*time.Hour + 2*time.Minute + 3*time.Second, false},
		{"1:2:3:4", 0, true},
		{"abc", 0, true},
		{"-5", 0, true},
		{"1-2-3", 0, true},
	} {
		got, err := ParseTimeLimit(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseTimeLimit(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestParseMemMB(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		bad  bool
	}{
		{"", 0, false}, {"4000", 4000, false}, {"4000M", 4000, false}, {"16G", 16384, false},
		{"1.5g", 1536, false}, {"1T", 1 << 20, false}, {"512K", 1, false}, {"lots", 0, true}, {"-1G", 0, true},
	} {
		got, err := ParseMemMB(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseMemMB(%q) = %v, %v", tc.in, got, err)
		}
	}
}

func TestPoolSettingsAreChecked(t *testing.T) {
	src := `name: p
clusters:
  ci:
    pools:
      main:
        time: "1:2:3:4"
        mem: lots
        min: 3
        max: 2
        idle_timeout: soon
modules:
  m:
    base_image: host
    slots: ["main:2"]
`
	app, diags := ParseApp("app.yaml", []byte(src), Env{})
	if app != nil {
		t.Fatal("bad pool accepted")
	}
	want := []string{`app.yaml:6:15: error: pool "main": time`, `app.yaml:7:14: error: pool "main": mem`, "min 3 is more than max 2", `app.yaml:10:23: error: pool "main": idle_timeout`}
	got := diags.Errors().Error()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("diagnostics lack %q:\n%s", w, got)
		}
	}
	good := strings.NewReplacer(`"1:2:3:4"`, `"2"`, "mem: lots", "mem: 4G", "min: 3", "min: 1", "soon", "90s").Replace(src)
	app, diags = ParseApp("app.yaml", []byte(good), Env{})
	if app == nil {
		t.Fatalf("good pool refused: %v", diags)
	}
	pl := app.Clusters["ci"].Pools["main"]
	if pl.TimeLimit() != 2*time.Minute || app.Modules[0].Slots[0].Pool != "main" || app.Modules[0].Slots[0].Count != 2 {
		t.Fatalf("pool %+v slots %+v", pl, app.Modules[0].Slots)
	}
}
