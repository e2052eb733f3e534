// Package broker_test compares the scalebox broker's task lifecycle
// (enqueue -> lease -> complete, synchronous=FULL: the enqueue and the
// completion each a synced commit, the lease made durable by the
// completion's sync, broker/writer.go writeLazy) with goqite's send ->
// receive -> delete, each a synced commit, on the same disk, in the same
// process.
// bench/run.sh prints the ratios.
package broker_test

import (
	"context"
	"database/sql"
	_ "embed"
	"fmt"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"
	"maragu.dev/goqite"

	"github.com/scalebox-hpc/scalebox/broker"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

var batches = []int{1, 100}

func newScalebox(b *testing.B) (*broker.Broker, int64, int64) {
	ctx := context.Background()
	br, err := broker.Open(ctx, filepath.Join(b.TempDir(), "scalebox.db"), broker.Options{Synchronous: "FULL"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { br.Close() })
	app := &dataflow.App{Name: "bench", Parameters: dataflow.AppParameters{InitialStatus: dataflow.AppRunning},
		Modules: []*dataflow.Module{{Name: "m", BaseImage: "host", TaskBatchSize: 1, DistMode: dataflow.DistDefault}}}
	appID, err := br.CreateApp(ctx, app, nil)
	if err != nil {
		b.Fatal(err)
	}
	pilot, err := br.RegisterPilot(ctx, dataflow.PilotInfo{AppID: appID, Host: "h"})
	if err != nil {
		b.Fatal(err)
	}
	return br, appID, pilot
}

// lifecycles runs n tasks through enqueue, lease and complete, batch at a time.
func scaleboxLifecycles(b *testing.B, br *broker.Broker, appID, pilot int64, batch int, seq *atomic.Int64) {
	ctx := context.Background()
	msgs := make([]dataflow.Message, batch)
	for i := range msgs {
		msgs[i] = dataflow.Message{Module: "m", Body: "t" + strconv.FormatInt(seq.Add(1), 10)}
	}
	if _, err := br.AddTasks(ctx, appID, msgs); err != nil {
		b.Fatal(err)
	}
	leased, err := br.Lease(ctx, broker.LeaseRequest{AppID: appID, PilotID: pilot, Host: "h",
		Wants: []dataflow.Want{{Module: "m", Max: batch}}, TTL: time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	done := make([]dataflow.Completion, len(leased))
	now := time.Now()
	for i, t := range leased {
		done[i] = dataflow.Completion{TaskID: t.ID, Gen: t.Gen, Host: "h", Slot: "s", StartedAt: now, EndedAt: now}
	}
	if _, err := br.Complete(ctx, broker.Report{PilotID: pilot, Completions: done}); err != nil {
		b.Fatal(err)
	}
}

func newGoqite(b *testing.B) (*sql.DB, *goqite.Queue) {
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(b.TempDir(), "goqite.db")+"?_journal=WAL&_timeout=5000&_fk=true&_synchronous=FULL")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(goqiteSchema); err != nil {
		b.Fatal(err)
	}
	return db, goqite.New(goqite.NewOpts{DB: db, Name: "bench"})
}

func goqiteLifecycles(b *testing.B, db *sql.DB, q *goqite.Queue, batch int) {
	ctx := context.Background()
	inTx := func(fn func(tx *sql.Tx)) {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		fn(tx)
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	if batch == 1 {
		if err := q.Send(ctx, goqite.Message{Body: []byte("t")}); err != nil {
			b.Fatal(err)
		}
		// Under RunParallel another worker may take "our" message first;
		// each worker still completes one lifecycle per send.
		m, err := q.Receive(ctx)
		for err == nil && m == nil {
			m, err = q.Receive(ctx)
		}
		if err != nil {
			b.Fatal("receive", err)
		}
		if err := q.Delete(ctx, m.ID); err != nil {
			b.Fatal(err)
		}
		return
	}
	inTx(func(tx *sql.Tx) {
		for i := 0; i < batch; i++ {
			if err := q.SendTx(ctx, tx, goqite.Message{Body: []byte("t")}); err != nil {
				b.Fatal(err)
			}
		}
	})
	var ids []goqite.ID
	inTx(func(tx *sql.Tx) {
		for i := 0; i < batch; i++ {
			m, err := q.ReceiveTx(ctx, tx)
			if err != nil || m == nil {
				b.Fatal("receive", err)
			}
			ids = append(ids, m.ID)
		}
	})
	inTx(func(tx *sql.Tx) {
		for _, id := range ids {
			if err := q.DeleteTx(ctx, tx, id); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkLifecycle reports ns per task lifecycle; b.N counts tasks.
func BenchmarkLifecycle(b *testing.B) {
	for _, batch := range batches {
		b.Run(fmt.Sprintf("scalebox/batch=%d", batch), func(b *testing.B) {
			br, appID, pilot := newScalebox(b)
			var seq atomic.Int64
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				scaleboxLifecycles(b, br, appID, pilot, batch, &seq)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
		b.Run(fmt.Sprintf("goqite/batch=%d", batch), func(b *testing.B) {
			db, q := newGoqite(b)
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				goqiteLifecycles(b, db, q, batch)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// BenchmarkLifecycleParallel runs batch-1 lifecycles from 8 goroutines per
// CPU: many pilots reporting at once, where scalebox's single writer groups
// their commits.
func BenchmarkLifecycleParallel(b *testing.B) {
	b.Run("scalebox/batch=1", func(b *testing.B) {
		br, appID, pilot := newScalebox(b)
		var seq atomic.Int64
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				scaleboxLifecycles(b, br, appID, pilot, 1, &seq)
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
	b.Run("goqite/batch=1", func(b *testing.B) {
		db, q := newGoqite(b)
		db.SetMaxOpenConns(16)
		b.SetParallelism(8)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				goqiteLifecycles(b, db, q, 1)
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	})
}

// goqiteSchema is goqite v0.4.0's schema_sqlite.sql, as its docs say to apply.
//
//go:embed goqite_schema.sql
var goqiteSchema string
