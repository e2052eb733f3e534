package broker

import (
	"context"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// The dispatch query must use the partial ready index (goqite's lesson: a
// lease that scans is 58-77x slower).
func TestLeaseQueryUsesReadyIndex(t *testing.T) {
	b, _ := openTest(t)
	rows, err := b.r.Query(`EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE module_id = ? AND state = 'ready' AND (to_host = '' OR to_host = ?)
		ORDER BY sort_tag, id LIMIT ?`, 1, "h", 5)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	plan := ""
	for rows.Next() {
		var id, parent, notused int
		var detail string
		rows.Scan(&id, &parent, &notused, &detail)
		plan += detail + "\n"
	}
	if want := "USING INDEX tasks_ready"; !contains(plan, want) || contains(plan, "TEMP B-TREE") {
		t.Fatalf("lease plan:\n%s", plan)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func BenchmarkLeaseOne(b *testing.B) {
	ctx := context.Background()
	br, err := Open(ctx, b.TempDir()+"/s.db", Options{Synchronous: "OFF"})
	if err != nil {
		b.Skip(err)
	}
	defer br.Close()
	app, _ := br.CreateApp(ctx, testApp(nil), nil)
	pilot, _ := br.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h"})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		br.AddTasks(ctx, app, []dataflow.Message{{Module: "a", Body: "t" + time.Now().String()}})
		b.StartTimer()
		br.Lease(ctx, LeaseRequest{AppID: app, PilotID: pilot, Host: "h", Wants: []dataflow.Want{{Module: "a", Max: 1}}, TTL: time.Minute})
	}
}

// The finisher runs the quiescence check after every report: it must not
// scan the tasks table.
func TestQuiescenceQueryDoesNotScan(t *testing.T) {
	b, _ := openTest(t)
	for _, q := range []string{activeQuery, "SELECT EXISTS (SELECT 1 FROM tasks WHERE app_id = ?1 AND state = 'failed') AND ?2"} {
		rows, err := b.r.Query("EXPLAIN QUERY PLAN "+q, 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		plan := ""
		for rows.Next() {
			var id, parent, notused int
			var detail string
			rows.Scan(&id, &parent, &notused, &detail)
			plan += detail + "\n"
		}
		rows.Close()
		// Scanning a partial index (a few retrying tasks) is fine; a scan
		// of the table is not.
		if contains(plan, "SCAN tasks\n") {
			t.Fatalf("plan scans tasks:\n%s", plan)
		}
	}
}
