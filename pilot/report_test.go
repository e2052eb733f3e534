package pilot

import (
	"testing"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

func TestReporterHoldsStartedNotes(t *testing.T) {
	r := newReporter(nil, 1, nil, nil, nil)
	r.addStarted(dataflow.Started{TaskID: 1})
	r.addStarted(dataflow.Started{TaskID: 2})
	r.addCompletion(dataflow.Completion{TaskID: 1})
	if len(r.started) != 1 || r.started[0].TaskID != 2 {
		t.Fatalf("a task that ended kept its started note: %+v", r.started)
	}
	now := r.first
	if send, _ := r.due(now); send {
		t.Fatal("a fresh completion went before flushAfter")
	}
	if send, _ := r.due(now.Add(flushAfter)); !send {
		t.Fatal("a completion older than flushAfter did not go")
	}
	r.done = nil
	if send, wait := r.due(r.started[0].at); send || wait != startedDelay {
		t.Fatalf("a new started note: go %v, wait %s; want to wait %s", send, wait, startedDelay)
	}
	if send, _ := r.due(r.started[0].at.Add(startedDelay + time.Millisecond)); !send {
		t.Fatal("a started note older than startedDelay did not go")
	}
}
