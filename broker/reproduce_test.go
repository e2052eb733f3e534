package broker

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// A pipeline a → b → c whose b and c read their input from the node tier
// of the node that produced it. Node h1 runs a(x) and b(x) and is then
// lost; c(x) waits for h1. After lostFor, the head holds c(x) and b(x)
// and runs a(x) again; as h2 runs the lineage again, each held task is
// released bound to h2, and the app finishes with every message once.
func TestLostNodeInputIsProducedAgain(t *testing.T) {
	ctx := context.Background()
	b, clk := openTest(t)
	local := []dataflow.StageSpec{{From: "local:{body}", To: "{body}"}}
	app, err := b.CreateApp(ctx, &dataflow.App{Name: "lineage", Parameters: dataflow.AppParameters{InitialStatus: dataflow.AppRunning},
		Modules: []*dataflow.Module{
			{Name: "a", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistDefault, SinkModules: []string{"b"}},
			{Name: "b", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistDefault, SinkModules: []string{"c"}, StageIn: local},
			{Name: "c", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistDefault, StageIn: local},
		}}, []dataflow.Message{{Body: "x"}, {Body: "y"}})
	if err != nil {
		t.Fatal(err)
	}
	p1, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h1"})
	p2, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h2"})
	run := func(pilot int64, host, module string, emit bool) (dataflow.LeasedTask, bool) {
		t.Helper()
		got, err := b.Lease(ctx, LeaseRequest{AppID: app, PilotID: pilot, Host: host, Wants: []dataflow.Want{{Module: module, Max: 1}}, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return dataflow.LeasedTask{}, false
		}
		c := dataflow.Completion{TaskID: got[0].ID, Gen: got[0].Gen, Host: host, DataOnNode: true}
		if emit {
			c.Messages = []dataflow.Message{{Body: got[0].Body}}
		}
		if _, err := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{c}}); err != nil {
			t.Fatal(err)
		}
		return got[0], true
	}
	state := func(module, body string) (st dataflow.TaskState, toHost, lost string) {
		t.Helper()
		if err := b.r.QueryRow(`SELECT t.state, t.to_host, t.lost_host FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = ? AND t.body = ?`,
			module, body).Scan(&st, &toHost, &lost); err != nil {
			t.Fatalf("%s(%s): %v", module, body, err)
		}
		return st, toHost, lost
	}
	// h1: a(x), b(x); h2: a(y), b(y), c(y). c(x) is bound to h1.
	for _, step := range []struct {
		pilot  int64
		host   string
		module string
	}{{p1, "h1", "a"}, {p1, "h1", "b"}, {p2, "h2", "a"}, {p2, "h2", "b"}, {p2, "h2", "c"}} {
		if _, ok := run(step.pilot, step.host, step.module, step.module != "c"); !ok {
			t.Fatalf("%s on %s found nothing to run", step.module, step.host)
		}
	}
	if _, ok := run(p2, "h2", "c", false); ok {
		t.Fatal("h2 ran c(x), whose input is on h1")
	}
	if st, to, _ := state("c", "x"); st != dataflow.TaskReady || to != "h1" {
		t.Fatalf("c(x) is %s on %q, want ready bound to h1", st, to)
	}

	// While h1 has an active pilot, or lost it less than lostFor ago,
	// nothing happens.
	const lostFor = 5 * time.Minute
	if rr, err := b.Reproduce(ctx, lostFor); err != nil || rr.Held+rr.Rerun != 0 {
		t.Fatalf("reproduce with h1 alive: %+v, %v", rr, err)
	}
	clk.t = clk.t.Add(time.Minute)
	if err := b.Heartbeat(ctx, p2, nil, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	if n, err := b.MarkLostPilots(ctx, 30*time.Second); err != nil || n != 1 {
		t.Fatalf("marked %d pilots lost (%v), want h1's", n, err)
	}
	if rr, err := b.Reproduce(ctx, lostFor); err != nil || rr.Held+rr.Rerun != 0 {
		t.Fatalf("reproduce a minute after h1 was lost: %+v, %v", rr, err)
	}
	clk.t = clk.t.Add(lostFor)
	b.Heartbeat(ctx, p2, nil, nil, time.Minute)
	rr, err := b.Reproduce(ctx, lostFor)
	if err != nil {
		t.Fatal(err)
	}
	if rr.Hosts != 1 || rr.Held != 2 || rr.Rerun != 1 || len(rr.Orphans) != 0 {
		t.Fatalf("reproduce: %+v, want 1 host, 2 held (c(x), b(x)), 1 rerun (a(x))", rr)
	}
	for _, want := range []struct {
		module string
		state  dataflow.TaskState
		lost   string
	}{{"c", dataflow.TaskInitial, "h1"}, {"b", dataflow.TaskInitial, "h1"}, {"a", dataflow.TaskReady, ""}} {
		if st, _, lost := state(want.module, "x"); st != want.state || lost != want.lost {
			t.Errorf("%s(x): %s (lost_host %q), want %s (%q)", want.module, st, lost, want.state, want.lost)
		}
	}
	// A second pass finds nothing new to do.
	if rr, err := b.Reproduce(ctx, lostFor); err != nil || rr.Held+rr.Rerun != 0 {
		t.Fatalf("second pass: %+v, %v", rr, err)
	}
	// The app does not finish while tasks are held.
	if st, err := b.FinishIfQuiescent(ctx, app); err != nil || st != "" {
		t.Fatalf("app ended (%q, %v) with tasks held", st, err)
	}

	// h2 runs the lineage again: each held task is released bound to h2.
	for _, module := range []string{"a", "b", "c"} {
		l, ok := run(p2, "h2", module, module != "c")
		if !ok || l.Body != "x" {
			t.Fatalf("h2 found no %s(x) to run (%v, %q)", module, ok, l.Body)
		}
		if module != "c" {
			next := map[string]string{"a": "b", "b": "c"}[module]
			if st, to, lost := state(next, "x"); st != dataflow.TaskReady || to != "h2" || lost != "" {
				t.Errorf("%s(x) after %s(x) ran again: %s on %q (lost_host %q), want ready on h2", next, module, st, to, lost)
			}
		}
	}
	if st, err := b.FinishIfQuiescent(ctx, app); err != nil || st != dataflow.AppFinished {
		t.Fatalf("app: %q, %v; want FINISHED", st, err)
	}
	// Every message once; a(x) and b(x) succeeded twice, c(x) once.
	if n := count(t, b, "SELECT count(*) FROM tasks"); n != 6 {
		t.Errorf("%d tasks, want 6 (no message made twice)", n)
	}
	for module, want := range map[string]int{"a": 2, "b": 2, "c": 1} {
		if n := count(t, b, `SELECT count(*) FROM task_execs e JOIN tasks t ON t.id = e.task_id JOIN modules m ON m.id = t.module_id
			WHERE m.name = ? AND t.body = 'x' AND e.exit_code = 0`, module); n != want {
			t.Errorf("%s(x): %d successful execs, want %d", module, n, want)
		}
	}
}

// A waiting task whose producer cannot run again is cancelled, with the
// reason, instead of waiting for a node that is gone.
func TestLostNodeInputWithoutARunnableProducer(t *testing.T) {
	ctx := context.Background()
	b, clk := openTest(t)
	_, _, l := producedOnH1(t, b, "orphan", 1)
	// a(x) is cancelled by hand, as an OVERWRITE re-run cancelled with
	// its app would be.
	if err := b.write(ctx, func(tx *wtx) error {
		for _, to := range []string{"ready", "cancelled"} {
			if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = ?, exit_code = NULL WHERE id = ?`, to, l.ID); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(time.Hour)
	if _, err := b.MarkLostPilots(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	rr, err := b.Reproduce(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if len(rr.Orphans) != 1 || rr.Held+rr.Rerun != 0 {
		t.Fatalf("reproduce: %+v, want one orphan", rr)
	}
	if n := count(t, b, "SELECT count(*) FROM tasks t JOIN modules m ON m.id = t.module_id WHERE m.name = 'b' AND t.state = 'cancelled'"); n != 1 {
		t.Errorf("b(x) not cancelled: %s", rr.Orphans)
	}
}

// Held tasks are released after the head restarts: which apps hold tasks
// is read back from the database when the broker opens.
func TestHeldTaskReleasedAfterARestart(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	path := filepath.Join(t.TempDir(), "s.db")
	b, err := Open(ctx, path, Options{Now: clk.now, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { b.Close() }()
	app, p1, l := producedOnH1(t, b, "restart", 1)
	if err := b.PilotLeft(ctx, p1); err != nil {
		t.Fatal(err)
	}
	clk.t = clk.t.Add(time.Hour)
	if rr, err := b.Reproduce(ctx, time.Minute); err != nil || rr.Held != 1 || rr.Rerun != 1 {
		t.Fatalf("reproduce: %+v, %v", rr, err)
	}
	b.Close()
	if b, err = Open(ctx, path, Options{Now: clk.now, Strict: true}); err != nil {
		t.Fatal(err)
	}
	p2, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h2"})
	l = leaseOne(t, b, app, p2, "a")
	if _, err := b.Complete(ctx, Report{PilotID: p2, Completions: []dataflow.Completion{{TaskID: l.ID, Gen: l.Gen, Host: "h2",
		Messages: []dataflow.Message{{Body: "x"}}}}}); err != nil {
		t.Fatal(err)
	}
	got, err := b.Lease(ctx, LeaseRequest{AppID: app, PilotID: p2, Host: "h2", Wants: []dataflow.Want{{Module: "b", Max: 1}}, TTL: time.Minute})
	if err != nil || len(got) != 1 || got[0].Headers[dataflow.HeaderToHost] != "h2" {
		t.Fatalf("b(x) after the restart: %v, %+v; want it released to h2", err, got)
	}
	countsConsistent(t, b)
}

// A producer that runs in batches is not re-run for one waiting task:
// the task keeps waiting for its node, and the pass says how many do.
func TestLostNodeInputOfABatchProducerWaits(t *testing.T) {
	ctx := context.Background()
	b, clk := openTest(t)
	_, p1, _ := producedOnH1(t, b, "batched", 2)
	b.PilotLeft(ctx, p1)
	clk.t = clk.t.Add(time.Hour)
	rr, err := b.Reproduce(ctx, time.Minute)
	if err != nil || rr.Batched != 1 || rr.Held+rr.Rerun+len(rr.Orphans) != 0 {
		t.Fatalf("reproduce: %+v, %v; want one task left waiting", rr, err)
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE to_host = 'h1' AND state = 'ready'"); n != 1 {
		t.Error("the waiting task did not stay ready for h1")
	}
}

// A held task whose producer ran again without emitting it (or failed)
// is cancelled on the next pass instead of holding the app forever.
func TestHeldTaskNotEmittedAgainIsCancelled(t *testing.T) {
	ctx := context.Background()
	b, clk := openTest(t)
	app, p1, l := producedOnH1(t, b, "fickle", 1)
	b.PilotLeft(ctx, p1)
	clk.t = clk.t.Add(time.Hour)
	if rr, err := b.Reproduce(ctx, time.Minute); err != nil || rr.Held != 1 || rr.Rerun != 1 {
		t.Fatalf("reproduce: %+v, %v", rr, err)
	}
	p2, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h2"})
	l = leaseOne(t, b, app, p2, "a")
	if _, err := b.Complete(ctx, Report{PilotID: p2, Completions: []dataflow.Completion{{TaskID: l.ID, Gen: l.Gen, Host: "h2"}}}); err != nil {
		t.Fatal(err)
	}
	rr, err := b.Reproduce(ctx, time.Minute)
	if err != nil || len(rr.Orphans) != 1 {
		t.Fatalf("pass after a(x) emitted nothing: %+v, %v; want b(x) cancelled", rr, err)
	}
	if st, err := b.FinishIfQuiescent(ctx, app); err != nil || st == "" {
		t.Fatalf("app still running (%q, %v) after its held task was cancelled", st, err)
	}
}

// A database made before lineage (schema 6) opens, gains the columns with
// its tasks kept, and its waiting tasks, which have no recorded parent,
// keep waiting rather than being re-produced.
func TestLineageMigrationKeepsOlderTasks(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	path := filepath.Join(t.TempDir(), "s.db")
	b, err := Open(ctx, path, Options{Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	_, p1, _ := producedOnH1(t, b, "old", 1)
	b.PilotLeft(ctx, p1)
	b.Close()
	// Back to schema 6: what a database of the previous release holds.
	db, err := sql.Open("sqlite3", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"DROP INDEX tasks_bound", "ALTER TABLE tasks DROP COLUMN lost_host", "ALTER TABLE tasks DROP COLUMN bound_to_data",
		"ALTER TABLE tasks DROP COLUMN parent_id", "PRAGMA user_version = 6"} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	if b, err = Open(ctx, path, Options{Now: clk.now}); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE parent_id IS NULL AND bound_to_data = 0 AND lost_host = ''"); n != 2 {
		t.Fatalf("%d of the 2 older tasks read back with empty lineage", n)
	}
	// Bound by the old head (to_host set, bound_to_data unknown = 0): not
	// the head's to re-produce, and nothing fails.
	clk.t = clk.t.Add(time.Hour)
	if rr, err := b.Reproduce(ctx, time.Minute); err != nil || rr.Held+rr.Rerun+len(rr.Orphans) != 0 {
		t.Fatalf("reproduce on the migrated database: %+v, %v", rr, err)
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE to_host = 'h1' AND state = 'ready'"); n != 1 {
		t.Error("the older bound task did not keep waiting")
	}
}

// producedOnH1 makes an app a → b (b HOST-BOUND, a in batches of batch)
// and runs a(x) on h1, which emits x: b(x) then waits for h1.
func producedOnH1(t *testing.T, b *Broker, name string, batch int) (app, pilot int64, a dataflow.LeasedTask) {
	t.Helper()
	ctx := context.Background()
	app, err := b.CreateApp(ctx, &dataflow.App{Name: name, Parameters: dataflow.AppParameters{InitialStatus: dataflow.AppRunning},
		Modules: []*dataflow.Module{
			{Name: "a", BaseImage: "host", TaskBatchSize: batch, DistMode: dataflow.DistDefault, SinkModules: []string{"b"}},
			{Name: "b", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistHostBound},
		}}, []dataflow.Message{{Body: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	pilot, _ = b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h1"})
	a = leaseOne(t, b, app, pilot, "a")
	if _, err := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{{TaskID: a.ID, Gen: a.Gen, Host: "h1",
		Messages: []dataflow.Message{{Body: "x"}}}}}); err != nil {
		t.Fatal(err)
	}
	return app, pilot, a
}

// An attempt that finds its node-tier input missing holds its task and
// re-runs the producer, without a retry charged, at most maxLostInput
// times; after that the retry rules decide.
func TestMissingInputMadeAgainAtMostThrice(t *testing.T) {
	ctx := context.Background()
	b, _ := openTest(t)
	app, p1, _ := producedOnH1(t, b, "missing", 1)
	lease := func(module string) dataflow.LeasedTask {
		t.Helper()
		got, err := b.Lease(ctx, LeaseRequest{AppID: app, PilotID: p1, Host: "h1", Wants: []dataflow.Want{{Module: module, Max: 1}}, TTL: time.Minute})
		if err != nil || len(got) != 1 {
			t.Fatalf("lease %s on h1: %v, %d tasks", module, err, len(got))
		}
		return got[0]
	}
	for round := 1; round <= maxLostInput+1; round++ {
		l := lease("b")
		res, err := b.Complete(ctx, Report{PilotID: p1, Completions: []dataflow.Completion{{TaskID: l.ID, Gen: l.Gen, Host: "h1",
			ExitCode: dataflow.ExitRuntime, InputLost: true, Note: "stage_in: no such file"}}})
		if err != nil {
			t.Fatal(err)
		}
		if round > maxLostInput {
			if res[0].State == dataflow.TaskInitial {
				t.Fatalf("round %d: held again; want the retry rules to decide", round)
			}
			break
		}
		if res[0].State != dataflow.TaskInitial {
			t.Fatalf("round %d: b(x) is %s, want held (initial)", round, res[0].State)
		}
		a := lease("a") // made ready again
		if _, err := b.Complete(ctx, Report{PilotID: p1, Completions: []dataflow.Completion{{TaskID: a.ID, Gen: a.Gen, Host: "h1",
			Messages: []dataflow.Message{{Body: "x"}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := count(t, b, "SELECT count(*) FROM task_execs WHERE note LIKE '%producer runs again%'"); n != maxLostInput {
		t.Errorf("%d attempts recorded as input made again, want %d", n, maxLostInput)
	}
}
