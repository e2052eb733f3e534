package broker

import (
	"context"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// A pilot gets the ready tasks whose input its node caches first (the
// head learns that from completions), then any; an eviction reported
// ends the preference.
func TestLeasePrefersCachedInput(t *testing.T) {
	ctx := context.Background()
	b, _ := openTest(t)
	mod := &dataflow.Module{Name: "m", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistDefault, StageCache: true,
		StageIn: []dataflow.StageSpec{{From: "file:///data/{body}", To: "{body}"}}}
	app, err := b.CreateApp(ctx, &dataflow.App{Name: "loc", Parameters: dataflow.AppParameters{InitialStatus: dataflow.AppRunning},
		Modules: []*dataflow.Module{mod}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h1"})
	p2, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h2"})
	var msgs []dataflow.Message
	for _, body := range []string{"a", "b", "c", "d"} {
		msgs = append(msgs, dataflow.Message{Module: "m", Body: body})
	}
	if _, err := b.AddTasks(ctx, app, msgs); err != nil {
		t.Fatal(err)
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE data_key = ?", mod.DataKey("c", nil)); n != 1 {
		t.Fatalf("%d tasks with c's data key, want 1", n)
	}
	lease := func(pilot int64, host string) dataflow.LeasedTask {
		t.Helper()
		got, err := b.Lease(ctx, LeaseRequest{AppID: app, PilotID: pilot, Host: host, Wants: []dataflow.Want{{Module: "m", Max: 1}}, TTL: time.Minute})
		if err != nil || len(got) != 1 {
			t.Fatalf("lease on %s: %v, %d tasks", host, err, len(got))
		}
		return got[0]
	}
	complete := func(pilot int64, host string, task dataflow.LeasedTask, cached, uncached []string) {
		t.Helper()
		now := time.Now()
		if _, err := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{{TaskID: task.ID, Gen: task.Gen, Host: host,
			StartedAt: now, EndedAt: now, Cached: cached, Uncached: uncached}}}); err != nil {
			t.Fatal(err)
		}
	}
	first := lease(p2, "h2") // a: the oldest; h2 caches nothing yet
	if first.Body != "a" {
		t.Fatalf("first lease got %s, want a", first.Body)
	}
	complete(p2, "h2", first, []string{mod.DataKey("a", nil), mod.DataKey("c", nil)}, nil)
	if got := lease(p2, "h2"); got.Body != "c" {
		t.Errorf("h2, which caches c's input, got %s before it", got.Body)
	} else {
		complete(p2, "h2", got, nil, []string{mod.DataKey("c", nil)})
	}
	if got := lease(p1, "h1"); got.Body != "b" {
		t.Errorf("h1, which caches nothing, got %s, want the oldest (b)", got.Body)
	}
	if n := count(t, b, "SELECT count(*) FROM cached WHERE host = 'h2'"); n != 1 {
		t.Errorf("%d cache records for h2 after one eviction, want 1 (a)", n)
	}
	plan := queryPlan(t, b, leasePickCached, 1, "h", 5, 1)
	if !contains(plan, "tasks_ready_data") || contains(plan, "SCAN t\n") {
		t.Errorf("the cached-input pick scans tasks:\n%s", plan)
	}
}

// Quiet and full exec records (two insert statements) read back alike.
func TestExecRecordsLeanAndFull(t *testing.T) {
	ctx := context.Background()
	b, _ := openTest(t)
	app, err := b.CreateApp(ctx, testApp(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	pilot, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h"})
	b.AddTasks(ctx, app, []dataflow.Message{{Module: "b", Body: "quiet"}, {Module: "b", Body: "loud"}})
	got, err := b.Lease(ctx, LeaseRequest{AppID: app, PilotID: pilot, Host: "h", Wants: []dataflow.Want{{Module: "b", Max: 2}}, TTL: time.Minute})
	if err != nil || len(got) != 2 {
		t.Fatalf("lease: %v, %d", err, len(got))
	}
	now := time.Now()
	var cs []dataflow.Completion
	for _, l := range got {
		c := dataflow.Completion{TaskID: l.ID, Gen: l.Gen, Host: "h", Slot: "s1", StartedAt: now, EndedAt: now}
		if l.Body == "loud" {
			c.StdoutTail, c.InputBytes, c.Stage = "out", 7, dataflow.Stage{StageInBytes: 5, StageOutMS: 3}
		}
		cs = append(cs, c)
	}
	if _, err := b.Complete(ctx, Report{PilotID: pilot, Completions: cs}); err != nil {
		t.Fatal(err)
	}
	for _, l := range got {
		ex, err := b.Execs(ctx, l.ID)
		if err != nil || len(ex) != 1 {
			t.Fatalf("%s: %v, %d execs", l.Body, err, len(ex))
		}
		e := ex[0]
		if e.Host != "h" || e.Slot != "s1" || e.Attempt != 1 || e.Gen != l.Gen || e.PilotID != pilot {
			t.Errorf("%s: %+v", l.Body, e)
		}
		loud := l.Body == "loud"
		if (e.StdoutTail == "out") != loud || (e.InputBytes == 7) != loud || (e.StageInBytes == 5) != loud || (e.StageOutMS == 3) != loud {
			t.Errorf("%s: optional fields %+v", l.Body, e)
		}
	}
}
