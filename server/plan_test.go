package server

import (
	"fmt"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/broker"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

func TestPlan(t *testing.T) {
	app := &dataflow.App{Name: "p", Modules: []*dataflow.Module{
		{Name: "router", SlotOnHead: true},
		{Name: "any"},
		{Name: "gpu", Slots: []dataflow.SlotSpec{{Pool: "gpu", Count: 2}}},
		{Name: "cpu", Slots: []dataflow.SlotSpec{{Pool: "default", Count: 4}, {Host: "n1", Count: 1}}},
		{Name: "far", Cluster: "trixie"},
	}}
	for _, tc := range []struct {
		name string
		reg  api.Register
		want map[string]int
	}{
		{"local pilot runs everything but the router", api.Register{Host: "laptop"},
			map[string]int{"any": 1, "gpu": 2, "cpu": 4, "far": 1}},
		{"local head pilot adds the router", api.Register{Host: "laptop", Head: true},
			map[string]int{"router": 1, "any": 1, "gpu": 2, "cpu": 4, "far": 1}},
		{"head-only pilot runs just the router", api.Register{Host: "login", Head: true, HeadOnly: true},
			map[string]int{"router": 1}},
		{"pool pilot runs its pool's modules and unslotted ones", api.Register{Host: "n2", Cluster: "ci", Pool: "default"},
			map[string]int{"any": 1, "cpu": 4}},
		{"host entries add to pool entries", api.Register{Host: "n1", Cluster: "ci", Pool: "default"},
			map[string]int{"any": 1, "cpu": 5}},
		{"another pool", api.Register{Host: "g1", Cluster: "ci", Pool: "gpu"},
			map[string]int{"any": 1, "gpu": 2}},
		{"a module pinned to a cluster runs only there", api.Register{Host: "t1", Cluster: "trixie", Pool: "default"},
			map[string]int{"any": 1, "cpu": 4, "far": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := map[string]int{}
			for _, pm := range Plan(app, tc.reg) {
				got[pm.Module.Name] = pm.Slots
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("plan %v, want %v", keys(got), tc.want)
			}
		})
	}
	// With a default cluster, unpinned modules stay on it.
	app.Cluster = "ci"
	got := map[string]int{}
	for _, pm := range Plan(app, api.Register{Host: "t1", Cluster: "trixie", Pool: "default"}) {
		got[pm.Module.Name] = pm.Slots
	}
	if want := map[string]int{"far": 1}; !reflect.DeepEqual(got, want) {
		t.Fatalf("trixie pilot of an app on ci: plan %v, want %v", keys(got), want)
	}
}

func keys(m map[string]int) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s:%d", k, v))
	}
	sort.Strings(out)
	return out
}

func TestWantedJobs(t *testing.T) {
	counts := func(ready, held int) *dataflow.AppInfo {
		return &dataflow.AppInfo{Modules: map[string]dataflow.ModuleCounts{"m": {dataflow.TaskReady: ready, dataflow.TaskRunning: held}}}
	}
	for _, tc := range []struct {
		pool         dataflow.Pool
		slots        int
		ready, held  int
		active, want int
	}{
		{dataflow.Pool{Max: 3}, 4, 0, 0, 0, 0},
		{dataflow.Pool{Max: 3, Min: 1}, 4, 0, 0, 0, 1},
		{dataflow.Pool{Max: 3}, 4, 5, 0, 0, 2},
		{dataflow.Pool{Max: 3}, 4, 100, 0, 0, 3},
		{dataflow.Pool{}, 4, 100, 0, 0, 1}, // no max: one job, never a storm
		{dataflow.Pool{Max: 10, Nodes: 2}, 4, 17, 0, 0, 3},
		{dataflow.Pool{Max: 3}, 4, 0, 4, 1, 1}, // running tasks keep their job
		{dataflow.Pool{Max: 3}, 1, 0, 2, 1, 1}, // a busy job's buffered task wants no new job
		{dataflow.Pool{Max: 3}, 1, 0, 2, 0, 0}, // held by jobs that no longer count (expiring)
		{dataflow.Pool{Max: 3}, 1, 1, 2, 2, 3}, // busy jobs plus one for the ready task
	} {
		p := &poolRef{spec: &tc.pool, modules: map[string]int{"m": tc.slots}}
		if got := wantedJobs(p, counts(tc.ready, tc.held), tc.active); got != tc.want {
			t.Errorf("pool %+v, %d slots, %d ready %d held, %d active: %d jobs, want %d", tc.pool, tc.slots, tc.ready, tc.held, tc.active, got, tc.want)
		}
	}
}

func TestSubmitBackoff(t *testing.T) {
	prev := SubmitBackoff(1)
	if prev <= 0 {
		t.Fatal("no wait after a failure")
	}
	for n := 2; n <= 20; n++ {
		d := SubmitBackoff(n)
		if d < prev {
			t.Fatalf("backoff shrank: %v after %v", d, prev)
		}
		prev = d
	}
	if prev > SubmitBackoff(100) || SubmitBackoff(100).Minutes() > 2 {
		t.Fatalf("backoff not capped at 2 minutes: %v", SubmitBackoff(100))
	}
}

func TestExpiring(t *testing.T) {
	app := &dataflow.App{Modules: []*dataflow.Module{{Name: "m", TaskMaxSeconds: 50}}}
	p := &poolRef{spec: &dataflow.Pool{Time: "2"}, modules: map[string]int{"m": 1}}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	job := broker.PilotJob{StartedAt: &start}
	// 120 s walltime - 50 s longest task - 30 s lead: from 40 s on.
	if expiring(job, p, app, start.Add(39*time.Second)) {
		t.Error("expiring at 39 s")
	}
	if !expiring(job, p, app, start.Add(41*time.Second)) {
		t.Error("not expiring at 41 s")
	}
	if expiring(broker.PilotJob{}, p, app, start.Add(time.Hour)) {
		t.Error("a job not yet started is expiring")
	}
	if expiring(job, &poolRef{spec: &dataflow.Pool{}, modules: p.modules}, app, start.Add(time.Hour)) {
		t.Error("a pool without a time limit expires")
	}
}
