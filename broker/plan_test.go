package broker

import (
	"database/sql"
	"strings"
	"testing"
)

// The dispatch query must use the partial ready index (goqite's lesson: a
// lease that scans is 58-77x slower).
func TestLeaseQueryUsesReadyIndex(t *testing.T) {
	b, _ := openTest(t)
	plan := queryPlan(t, b, leasePick, 1, "h", 5)
	if want := "USING INDEX tasks_ready"; !contains(plan, want) || contains(plan, "TEMP B-TREE") {
		t.Fatalf("lease plan:\n%s", plan)
	}
	if plan := queryPlan(t, b, leaseClaimMany, 1, 2, 3, "[7,8]"); contains(plan, "SCAN tasks") {
		t.Fatalf("claim plan scans tasks:\n%s", plan)
	}
	plan = queryPlan(t, b, leaseClaimPicked, 1, 2, 3, 1, "h", 5)
	if !contains(plan, "USING INDEX tasks_ready") || contains(plan, "SCAN tasks") || contains(plan, "TEMP B-TREE") {
		t.Fatalf("pick-and-claim plan:\n%s", plan)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// queryPlan returns EXPLAIN QUERY PLAN's details, one per line.
func queryPlan(t *testing.T, b *Broker, q string, args ...any) string {
	t.Helper()
	return planOn(t, b.r, q, args...)
}

func planOn(t *testing.T, db *sql.DB, q string, args ...any) string {
	t.Helper()
	rows, err := db.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	plan := ""
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan += detail + "\n"
	}
	return plan
}

// The finisher runs the quiescence check after every report: it must not
// scan the tasks table.
func TestQuiescenceQueryDoesNotScan(t *testing.T) {
	b, _ := openTest(t)
	for _, q := range []string{activeQuery, "SELECT EXISTS (SELECT 1 FROM tasks WHERE app_id = ?1 AND state = 'failed') AND ?2"} {
		plan := queryPlan(t, b, q, 1, 1)
		// Scanning a partial index (a few retrying tasks) is fine; a scan
		// of the table is not.
		if contains(plan, "SCAN tasks\n") {
			t.Fatalf("plan scans tasks:\n%s", plan)
		}
	}
}

// Draining asks how many tasks a pilot holds: the leased partial index
// answers, not a scan of every task.
func TestHeldByUsesLeasedIndex(t *testing.T) {
	b, _ := openTest(t)
	plan := queryPlan(t, b, "SELECT count(*) FROM tasks WHERE state IN ('leased','running') AND lease_pilot = ?", 1)
	if contains(plan, "SCAN tasks\n") {
		t.Fatalf("held-by plan scans tasks:\n%s", plan)
	}
}

// Plans must not depend on bound values: SQLite re-prepares a statement on
// every bind when its plan did (qpsg.go), which made each lease re-parse
// its query. The probe is a query whose partial index is usable only if
// the planner reads ?2: with the guarantee it cannot; on a connection
// without it, it does.
func TestPlansIgnoreBoundValues(t *testing.T) {
	b, _ := openTest(t)
	probe := "SELECT id FROM tasks WHERE module_id = ?1 AND state = ?2 ORDER BY sort_tag, id"
	if plan := queryPlan(t, b, probe, 1, "ready"); contains(plan, "tasks_ready") {
		t.Fatalf("the broker's planner used a bound value (the query planner stability guarantee is off):\n%s", plan)
	}
	plain, err := sql.Open("sqlite3", "file:"+b.Path()+"?_query_only=1")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if plan := planOn(t, plain, probe, 1, "ready"); !contains(plan, "tasks_ready") {
		t.Fatalf("control: a plain connection did not use the bound value, so this probe proves nothing:\n%s", plan)
	}
}

// The lost-node pass and the quiet completion find their tasks through
// indexes: the bound-task index, the (module, body) key, the rowid.
func TestLineageAndQuietCompletionPlans(t *testing.T) {
	b, _ := openTest(t)
	if plan := queryPlan(t, b, boundWaiting, 1, "h"); !contains(plan, "USING INDEX tasks_bound") {
		t.Errorf("bound-task plan:\n%s", plan)
	}
	if plan := queryPlan(t, b, releaseHeldSQL, "{}", "", "", "", nil, 0, 1, 1, "x"); contains(plan, "SCAN tasks") {
		t.Errorf("release plan scans tasks:\n%s", plan)
	}
	if plan := queryPlan(t, b, heldOrphans); contains(plan, "SCAN c\n") || contains(plan, "SCAN p") {
		t.Errorf("held-orphan plan scans tasks:\n%s", plan)
	}
	if plan := queryPlan(t, b, succeedReturning, 1, "[[1,1]]", 1); contains(plan, "SCAN tasks") || !contains(plan, "INTEGER PRIMARY KEY") {
		t.Errorf("quiet completion plan:\n%s", plan)
	}
}
