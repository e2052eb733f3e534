package pilot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/scalebox-hpc/scalebox/api"
	"github.com/scalebox-hpc/scalebox/dataflow"
)

// ModuleTest runs one module against test messages without a server: the
// slot code of a pilot (setup.sh, run.sh per message, the interface files,
// teardown.sh), on the node or in the module's image.
type ModuleTest struct {
	Module   *dataflow.Module
	Messages []dataflow.Message
	// WorkRoot holds the slot's directories ("" = a temporary dir, removed after).
	WorkRoot    string
	Binary      string // scalebox for scripts on the host
	Apptainer   string
	AgentBinary string
	Log         *slog.Logger
}

// TestRun is the outcome of one test message.
type TestRun struct {
	Message dataflow.Message
	Exec    dataflow.Completion
}

// RunModuleTest runs the messages in order and calls each with every
// outcome. A slot that does not start is an error; a failing task is not.
func RunModuleTest(ctx context.Context, mt ModuleTest, each func(TestRun)) error {
	root := mt.WorkRoot
	if root == "" {
		dir, err := os.MkdirTemp("", "scalebox-module-test-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		root = dir
	}
	log := mt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	host, _ := os.Hostname()
	p := newPilot(Config{Host: host, WorkRoot: root, Binary: mt.Binary, Apptainer: mt.Apptainer, AgentBinary: mt.AgentBinary},
		&api.Registered{AppName: "module-test"}, log)
	s := newSlot(p, api.PlannedModule{Module: mt.Module, Slots: 1}, nil, 0)
	if err := s.prepare(); err != nil {
		return err
	}
	x, err := s.start(ctx)
	if err != nil {
		return fmt.Errorf("module %s: slot did not start: %w", mt.Module.Name, err)
	}
	defer func() {
		tctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.lifecycleScript(tctx, x, TeardownScript); err != nil {
			log.Warn("teardown", "err", err)
		}
		x.close(tctx)
	}()
	for i, m := range mt.Messages {
		if err := ctx.Err(); err != nil {
			return err
		}
		id := fmt.Sprint(i + 1)
		resp := x.run(ctx, request{Script: RunScript, Task: true, Args: []string{m.Body, m.Headers.JSON()},
			Timeout: time.Duration(mt.Module.TaskMaxSeconds) * time.Second, Removable: s.removable(),
			Env: []string{"TASK_ID=" + id, "PLAT_TASK_ID=" + id, "TASK_ATTEMPT=1"}})
		c := completion(s, dataflow.LeasedTask{ID: int64(i + 1)}, resp.Result, resp.Outputs, true)
		each(TestRun{Message: m, Exec: c})
		if err := x.broken(); err != nil {
			return err
		}
	}
	return nil
}
