package broker

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// A steady stream of small commits must not grow the WAL without bound:
// each commit would then extend the file, and an fsync of a growing file
// also writes its metadata. SQLite restarts the WAL from its start only
// after a checkpoint has copied every frame back.
func TestWALStaysBounded(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	b, err := Open(ctx, path, Options{Synchronous: "NORMAL"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	app, err := b.CreateApp(ctx, testApp(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	pilot, err := b.RegisterPilot(ctx, dataflow.PilotInfo{AppID: app, Host: "h"})
	if err != nil {
		t.Fatal(err)
	}
	const lifecycles = 4000 // ~12 000 commits of a few pages: ~200 MB of WAL if never reset
	var maxWAL int64
	for i := range lifecycles {
		if _, err := b.AddTasks(ctx, app, []dataflow.Message{{Module: "b", Body: "t" + strconv.Itoa(i)}}); err != nil {
			t.Fatal(err)
		}
		got, err := b.Lease(ctx, LeaseRequest{AppID: app, PilotID: pilot, Host: "h", Wants: []dataflow.Want{{Module: "b", Max: 1}}, TTL: time.Minute})
		if err != nil || len(got) != 1 {
			t.Fatalf("lease %d: %v (%d tasks)", i, err, len(got))
		}
		now := time.Now()
		if _, err := b.Complete(ctx, Report{PilotID: pilot, Completions: []dataflow.Completion{{TaskID: got[0].ID, Gen: got[0].Gen, Host: "h", StartedAt: now, EndedAt: now}}}); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			if fi, err := os.Stat(path + "-wal"); err == nil {
				maxWAL = max(maxWAL, fi.Size())
			}
		}
	}
	// The auto-checkpoint runs every 1000 pages (4 MiB); allow twice that.
	if maxWAL > 8<<20 {
		t.Errorf("WAL grew to %d MiB over %d lifecycles; want it restarted after each checkpoint", maxWAL>>20, lifecycles)
	}
	t.Logf("largest WAL seen: %d KiB", maxWAL>>10)
}
