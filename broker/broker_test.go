package broker

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

func testApp(rules dataflow.RetryRules) *dataflow.App {
	return &dataflow.App{
		Name:       "t",
		Parameters: dataflow.AppParameters{InitialStatus: dataflow.AppRunning},
		Modules: []*dataflow.Module{
			{Name: "a", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistDefault, RetryRules: rules, SinkModules: []string{"b"}},
			{Name: "b", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistDefault},
		},
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func openTest(t *testing.T) (*Broker, *clock) {
	t.Helper()
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	b, err := Open(context.Background(), filepath.Join(t.TempDir(), "s.db"), Options{Now: c.now, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	// Every test ends with counts that match its tasks (counts.go).
	t.Cleanup(func() { countsConsistent(t, b) })
	return b, c
}

func count(t *testing.T, b *Broker, q string, args ...any) int {
	t.Helper()
	var n int
	if err := b.r.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func leaseOne(t *testing.T, b *Broker, app, pilot int64, module string) dataflow.LeasedTask {
	t.Helper()
	got, err := b.Lease(context.Background(), LeaseRequest{AppID: app, PilotID: pilot, Host: "h", Wants: []dataflow.Want{{Module: module, Max: 1}}, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("leased %d tasks of %s, want 1", len(got), module)
	}
	return got[0]
}

func TestLifecycleEmitsOnlyOnSuccess(t *testing.T) {
	ctx := context.Background()
	b, _ := openTest(t)
	app, err := b.CreateApp(ctx, testApp(nil), []dataflow.Message{{Body: "x1"}, {Body: "x2"}, {Body: "x1"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := count(t, b, "SELECT count(*) FROM tasks"); n != 2 {
		t.Fatalf("duplicate body created a task: %d tasks", n)
	}
	pilot, err := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	l1 := leaseOne(t, b, app, pilot, "a")
	l2 := leaseOne(t, b, app, pilot, "a")
	res, err := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{
		{TaskID: l1.ID, Gen: l1.Gen, ExitCode: 0, Messages: []dataflow.Message{{Body: "y1"}}},
		{TaskID: l2.ID, Gen: l2.Gen, ExitCode: 7, Messages: []dataflow.Message{{Body: "y2"}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].State != dataflow.TaskSucceeded || res[1].State != dataflow.TaskFailed {
		t.Fatalf("states %v %v", res[0].State, res[1].State)
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE body = 'y2'"); n != 0 {
		t.Fatal("failed task emitted its message")
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE body = 'y1' AND headers LIKE '%\"from_module\":\"a\"%'"); n != 1 {
		t.Fatal("successful task's message missing")
	}
	// A second report of the same lease is refused and changes nothing.
	res, err = b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{{TaskID: l1.ID, Gen: l1.Gen, Messages: []dataflow.Message{{Body: "y3"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Status != dataflow.ReportStale {
		t.Fatalf("repeated report: %+v", res[0])
	}
	if n := count(t, b, "SELECT count(*) FROM task_execs"); n != 2 {
		t.Fatalf("%d exec records, want 2", n)
	}
}

func TestRetryRulesAndRescue(t *testing.T) {
	ctx := context.Background()
	b, c := openTest(t)
	rules, _ := dataflow.ParseRetryRules([]string{"3:2"})
	app, err := b.CreateApp(ctx, testApp(rules), []dataflow.Message{{Body: "r"}})
	if err != nil {
		t.Fatal(err)
	}
	pilot, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h"})
	runs := 0
	for {
		got, err := b.Lease(ctx, LeaseRequest{AppID: app, PilotID: pilot, Host: "h", Wants: []dataflow.Want{{Module: "a", Max: 1}}, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			c.t = c.t.Add(time.Hour)
			rr, err := b.Rescue(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if rr.Promoted == 0 {
				break
			}
			continue
		}
		runs++
		if _, err := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{{TaskID: got[0].ID, Gen: got[0].Gen, ExitCode: 3}}}); err != nil {
			t.Fatal(err)
		}
	}
	if runs != 3 {
		t.Fatalf("exit 3 under ['3:2'] ran %d times, want 3", runs)
	}
	// An expired lease comes back as lost (123) and a late report is refused.
	if _, err := b.AddTasks(ctx, app, []dataflow.Message{{Module: "b", Body: "lost"}}); err != nil {
		t.Fatal(err)
	}
	l := leaseOne(t, b, app, pilot, "b")
	c.t = c.t.Add(2 * time.Minute)
	rr, err := b.Rescue(ctx)
	if err != nil || rr.Expired != 1 {
		t.Fatalf("rescue: %+v %v", rr, err)
	}
	res, _ := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{{TaskID: l.ID, Gen: l.Gen}}})
	if res[0].Status != dataflow.ReportStale {
		t.Fatalf("late report accepted: %+v", res[0])
	}
	if n := count(t, b, "SELECT count(*) FROM task_execs WHERE task_id = ? AND exit_code = 123", l.ID); n != 1 {
		t.Fatalf("lost exec records: %d", n)
	}
}

func TestIllegalTransitionRefused(t *testing.T) {
	ctx := context.Background()
	b, _ := openTest(t)
	if _, err := b.CreateApp(ctx, testApp(nil), []dataflow.Message{{Body: "x"}}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ update, want string }{
		// The transition CHECK (migration 0006).
		{"UPDATE tasks SET prev_state = state, state = 'succeeded', exit_code = 0", "CHECK constraint failed: task_transition"},
		// Options.Strict: a state change that does not record its origin.
		{"UPDATE tasks SET state = 'succeeded', exit_code = 0", "without prev_state = state"},
		// The lease columns' CHECK.
		{"UPDATE tasks SET prev_state = state, state = 'leased'", "CHECK constraint failed"},
	} {
		err := b.write(ctx, func(tx *wtx) error {
			_, err := tx.Exec(c.update)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.update, err, c.want)
		}
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE state = 'ready'"); n != 1 {
		t.Fatalf("a refused update changed the task: %d ready", n)
	}
}

func TestStateOpsOncePerRequest(t *testing.T) {
	ctx := context.Background()
	b, _ := openTest(t)
	app, _ := b.CreateApp(ctx, testApp(nil), nil)
	if _, err := b.ApplyStateOp(ctx, app, dataflow.StateOp{Kind: "semaphore", Op: OpCreate, Name: "s", Value: "10"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		v, err := b.ApplyStateOp(ctx, app, dataflow.StateOp{Kind: "semaphore", Op: OpAddValue, Name: "s", Value: "5", RequestID: "r1"})
		if err != nil || v != "15" {
			t.Fatalf("try %d: %q %v", i, v, err)
		}
	}
	v, err := b.ApplyStateOp(ctx, app, dataflow.StateOp{Kind: "semaphore", Op: OpDecrement, Name: "s", RequestID: "r2"})
	if err != nil || v != "14" {
		t.Fatalf("decrement: %q %v", v, err)
	}
}

func TestHeartbeatExtendsOnlyHeldLeases(t *testing.T) {
	ctx := context.Background()
	b, c := openTest(t)
	app, _ := b.CreateApp(ctx, testApp(nil), []dataflow.Message{{Body: "kept"}, {Body: "lost"}})
	pilot, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h"})
	kept := leaseOne(t, b, app, pilot, "a")
	lost := leaseOne(t, b, app, pilot, "a") // its answer never reached the pilot
	c.t = c.t.Add(50 * time.Second)
	if err := b.Heartbeat(ctx, pilot, []int64{kept.ID}, nil, time.Minute); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(20 * time.Second) // past the first deadline, before the extended one
	rr, err := b.Rescue(ctx)
	if err != nil || rr.Expired != 1 {
		t.Fatalf("rescue %+v %v: want exactly the unheld lease expired", rr, err)
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE id = ? AND state = 'leased'", kept.ID); n != 1 {
		t.Fatal("held lease was not extended")
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE id = ? AND state = 'ready'", lost.ID); n != 1 {
		t.Fatal("unheld lease was not returned to ready through the retry rules")
	}
}

// countsConsistent fails when task_counts disagrees with the tasks table.
func countsConsistent(t *testing.T, b *Broker) {
	t.Helper()
	bad := count(t, b, `SELECT count(*) FROM (SELECT module_id, state, count(*) AS n FROM tasks GROUP BY module_id, state) g
		WHERE g.n <> coalesce((SELECT n FROM task_counts c WHERE c.module_id = g.module_id AND c.state = g.state), 0)`)
	extra := count(t, b, `SELECT count(*) FROM task_counts c WHERE n > 0
		AND n <> (SELECT count(*) FROM tasks t WHERE t.module_id = c.module_id AND t.state = c.state)`)
	if bad+extra > 0 {
		t.Fatalf("task_counts disagrees with tasks in %d rows", bad+extra)
	}
}

func TestCancelEndsEveryUnfinishedState(t *testing.T) {
	ctx := context.Background()
	b, _ := openTest(t)
	rules, _ := dataflow.ParseRetryRules([]string{"5:3"})
	app, _ := b.CreateApp(ctx, testApp(rules), []dataflow.Message{{Body: "done"}, {Body: "leased"}, {Body: "retrying"}, {Body: "ready"}})
	pilot, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h"})
	l1 := leaseOne(t, b, app, pilot, "a")
	leaseOne(t, b, app, pilot, "a")
	l3 := leaseOne(t, b, app, pilot, "a")
	if _, err := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{
		{TaskID: l1.ID, Gen: l1.Gen, Messages: []dataflow.Message{{Body: "next"}}}, {TaskID: l3.ID, Gen: l3.Gen, ExitCode: 5}}}); err != nil {
		t.Fatal(err)
	}
	countsConsistent(t, b)
	if err := b.SetAppStatus(ctx, app, dataflow.AppCancelled, ""); err != nil {
		t.Fatal(err)
	}
	// l1's message to b plus the three unfinished tasks of a are cancelled.
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE state = 'cancelled'"); n != 4 {
		t.Fatalf("%d cancelled, want 4", n)
	}
	if n := count(t, b, "SELECT count(*) FROM tasks WHERE state NOT IN ('cancelled','succeeded')"); n != 0 {
		t.Fatalf("%d tasks left unfinished", n)
	}
	countsConsistent(t, b)
	if err := b.SetAppStatus(ctx, app, dataflow.AppFinished, ""); err == nil {
		t.Fatal("ending an ended app was accepted")
	}
}

// A HOST-BOUND module's task stays on the node that produced it unless the
// sender names another with to_host.
func TestHostBoundFollowsItsData(t *testing.T) {
	ctx := context.Background()
	b, _ := openTest(t)
	app := testApp(nil)
	app.Modules[1].DistMode = dataflow.DistHostBound
	appID, err := b.CreateApp(ctx, app, []dataflow.Message{{Body: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	pilot, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: appID, Host: "n1"})
	l := leaseOne(t, b, appID, pilot, app.Modules[0].Name)
	if _, err := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{{TaskID: l.ID, Gen: l.Gen, Host: "n1",
		Messages: []dataflow.Message{{Body: "stays"}, {Body: "moves", Headers: dataflow.Headers{dataflow.HeaderToHost: "n2"}}}}}}); err != nil {
		t.Fatal(err)
	}
	lease := func(host string) []string {
		got, err := b.Lease(ctx, LeaseRequest{AppID: appID, PilotID: pilot, Host: host, Wants: []dataflow.Want{{Module: app.Modules[1].Name, Max: 10}}, TTL: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var bodies []string
		for _, t := range got {
			bodies = append(bodies, t.Body)
		}
		return bodies
	}
	if got := lease("n3"); len(got) != 0 {
		t.Fatalf("n3 leased %v of HOST-BOUND tasks bound to n1 and n2", got)
	}
	if got := lease("n1"); len(got) != 1 || got[0] != "stays" {
		t.Fatalf("n1 leased %v, want [stays]", got)
	}
	if got := lease("n2"); len(got) != 1 || got[0] != "moves" {
		t.Fatalf("n2 leased %v, want [moves]", got)
	}
}

// A caller whose context ends while its op runs gets the op's outcome,
// not an early return while the op still writes the caller's variables.
func TestWriteWaitsForItsRunningOp(t *testing.T) {
	b, _ := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	running := make(chan struct{})
	go func() { <-running; cancel() }()
	wrote := false
	err := b.write(ctx, func(tx *wtx) error {
		close(running)
		<-ctx.Done()
		wrote = true
		return nil
	})
	if err != nil || !wrote {
		t.Fatalf("write returned %v with the op's write seen: %v; want it to wait for the op, which committed", err, wrote)
	}
}

// A report of successes only is answered one completion at a time like
// any other: one stale lease, one undeliverable output or one task
// reported twice changes the answer for that completion alone.
func TestReportOfSuccessesAnsweredPerCompletion(t *testing.T) {
	const stale, missing, twice = "stale", "missing module", "reported twice"
	for _, odd := range []string{"", stale, missing, twice} {
		t.Run("odd="+odd, func(t *testing.T) {
			ctx := context.Background()
			b, _ := openTest(t)
			app, err := b.CreateApp(ctx, testApp(nil), []dataflow.Message{{Body: "x0"}, {Body: "x1"}, {Body: "x2"}})
			if err != nil {
				t.Fatal(err)
			}
			pilot, _ := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h"})
			var cs []dataflow.Completion
			for range 3 {
				l := leaseOne(t, b, app, pilot, "a")
				cs = append(cs, dataflow.Completion{TaskID: l.ID, Gen: l.Gen, Host: "h", Messages: []dataflow.Message{{Body: "y" + strings.TrimPrefix(l.Body, "x")}}})
			}
			switch odd {
			case stale:
				cs[1].Gen++
			case missing:
				cs[1].Messages[0].Module = "nosuch"
			case twice:
				cs = append(cs, cs[1])
			}
			res, err := b.Complete(ctx, Report{PilotID: pilot, Completions: cs})
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				wantStatus, wantState := dataflow.ReportAccepted, dataflow.TaskSucceeded
				switch {
				case i == 1 && odd == stale:
					wantStatus, wantState = dataflow.ReportStale, dataflow.TaskLeased
				case i == 1 && odd == missing:
					wantState = dataflow.TaskFailed
				case i == 3:
					wantStatus, wantState = dataflow.ReportStale, ""
				}
				if r.Status != wantStatus || r.State != wantState {
					t.Errorf("completion %d: %s %s, want %s %s (%s)", i, r.Status, r.State, wantStatus, wantState, r.Error)
				}
			}
			wantMsgs, wantExecs := 3, 3
			if odd == stale || odd == missing {
				wantMsgs = 2
			}
			if odd == stale {
				wantExecs = 2
			}
			if n := count(t, b, "SELECT count(*) FROM tasks WHERE body LIKE 'y%' AND headers LIKE '%\"from_host\":\"h\"%'"); n != wantMsgs {
				t.Errorf("%d messages emitted, want %d", n, wantMsgs)
			}
			if n := count(t, b, "SELECT count(*) FROM task_execs"); n != wantExecs {
				t.Errorf("%d exec records, want %d", n, wantExecs)
			}
			if odd == missing {
				if n := count(t, b, "SELECT count(*) FROM task_execs WHERE task_id = ? AND exit_code = ? AND note LIKE '%nosuch%'", cs[1].TaskID, dataflow.ExitNotRetryable); n != 1 {
					t.Error("undeliverable output not recorded as a not-retryable failure naming the module")
				}
			}
		})
	}
}
