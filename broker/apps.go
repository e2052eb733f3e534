package broker

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

type appModule struct {
	app  int64
	name string
}

type moduleInfo struct {
	id    int64
	appID int64
	def   *dataflow.Module
}

type appInfo struct {
	id     int64
	status dataflow.AppStatus
	def    *dataflow.App
}

func (b *Broker) loadCache(ctx context.Context) error {
	apps := map[int64]*appInfo{}
	rows, err := b.r.QueryContext(ctx, "SELECT id, status, definition FROM apps")
	if err != nil {
		return fmt.Errorf("load apps: %w", err)
	}
	for rows.Next() {
		var a appInfo
		var def string
		if err := rows.Scan(&a.id, &a.status, &def); err != nil {
			rows.Close()
			return err
		}
		a.def = &dataflow.App{}
		if err := json.Unmarshal([]byte(def), a.def); err != nil {
			rows.Close()
			return fmt.Errorf("app %d: stored definition: %w", a.id, err)
		}
		apps[a.id] = &a
	}
	rows.Close()
	mods := map[int64]*moduleInfo{}
	byName := map[appModule]int64{}
	rows, err = b.r.QueryContext(ctx, "SELECT id, app_id, name FROM modules")
	if err != nil {
		return fmt.Errorf("load modules: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, appID int64
		var name string
		if err := rows.Scan(&id, &appID, &name); err != nil {
			return err
		}
		a := apps[appID]
		if a == nil {
			continue
		}
		m := a.def.Module(name)
		if m == nil {
			return fmt.Errorf("module %d (%s) missing from app %d definition", id, name, appID)
		}
		mods[id] = &moduleInfo{id: id, appID: appID, def: m}
		byName[appModule{appID, name}] = id
	}
	if err := rows.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	b.apps, b.modules, b.byName = apps, mods, byName
	b.mu.Unlock()
	return nil
}

func (b *Broker) reloadCache() {
	if err := b.loadCache(context.Background()); err != nil {
		slog.Error("reload broker cache", "err", err)
	}
}

// CreateApp stores a validated app with its modules and start tasks in one
// transaction and returns its id.
func (b *Broker) CreateApp(ctx context.Context, app *dataflow.App, extra []dataflow.Message) (int64, error) {
	if err := app.Validate(); err != nil {
		return 0, fmt.Errorf("create app: %w", err)
	}
	def, err := json.Marshal(app)
	if err != nil {
		return 0, fmt.Errorf("create app: %w", err)
	}
	var appID int64
	err = b.write(ctx, func(tx *wtx) error {
		now := ms(b.now())
		status := app.Parameters.InitialStatus
		var started any
		if status == dataflow.AppRunning {
			started = now
		}
		res, err := tx.Exec("INSERT INTO apps (name, status, definition, created_at, started_at) VALUES (?, ?, ?, ?, ?)",
			app.Name, status, string(def), now, started)
		if err != nil {
			return err
		}
		appID, _ = res.LastInsertId()
		ids := map[string]int64{}
		for _, m := range app.Modules {
			md, _ := json.Marshal(m)
			res, err := tx.Exec("INSERT INTO modules (app_id, name, definition) VALUES (?, ?, ?)", appID, m.Name, string(md))
			if err != nil {
				return err
			}
			ids[m.Name], _ = res.LastInsertId()
			if err := addCountRows(tx, ids[m.Name]); err != nil {
				return err
			}
		}
		var msgs []dataflow.Message
		for _, m := range app.Modules {
			msgs = append(msgs, m.StartTasks...)
		}
		for _, msg := range extra {
			if msg.Module == "" {
				msg.Module = app.EntryModule()
			}
			msgs = append(msgs, msg)
		}
		rs := make([]resolved, 0, len(msgs))
		for _, msg := range msgs {
			id, ok := ids[msg.Module]
			if !ok {
				return fmt.Errorf("start task %q: module %q does not exist", msg.Body, msg.Module)
			}
			rs = append(rs, resolved{Message: msg, appID: appID, moduleID: id, def: app.Module(msg.Module)})
		}
		if _, err := b.insertTasks(tx, rs, now); err != nil {
			return err
		}
		b.mu.Lock()
		b.apps[appID] = &appInfo{id: appID, status: status, def: app}
		for _, m := range app.Modules {
			b.modules[ids[m.Name]] = &moduleInfo{id: ids[m.Name], appID: appID, def: m}
			b.byName[appModule{appID, m.Name}] = ids[m.Name]
		}
		b.mu.Unlock()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("create app: %w", err)
	}
	return appID, nil
}

// App returns an app's definition and status.
func (b *Broker) App(appID int64) (*dataflow.App, dataflow.AppStatus, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.apps[appID]
	if a == nil {
		return nil, "", fmt.Errorf("app %d: %w", appID, ErrNotFound)
	}
	return a.def, a.status, nil
}

// AppIDs lists the apps, oldest first.
func (b *Broker) AppIDs() []int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := make([]int64, 0, len(b.apps))
	for id := range b.apps {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (b *Broker) moduleID(appID int64, name string) (int64, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.byName[appModule{appID, name}]
	return id, ok
}

func (b *Broker) module(id int64) *moduleInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.modules[id]
}

// SetAppStatus moves an app to status. Ending an app (FINISHED, FAILED,
// CANCELLED) cancels its tasks that have not ended; result is kept as the
// set-finished text. Ending an app that has already ended is refused.
func (b *Broker) SetAppStatus(ctx context.Context, appID int64, status dataflow.AppStatus, result string) error {
	err := b.writeReady(ctx, func(tx *wtx) error {
		return b.setAppStatus(tx, appID, status, result)
	})
	if err != nil {
		return fmt.Errorf("app %d: set %s: %w", appID, status, err)
	}
	return nil
}

// ErrAppEnded is returned when changing an app that has ended.
var ErrAppEnded = errors.New("app has ended")

func (b *Broker) setAppStatus(tx *wtx, appID int64, status dataflow.AppStatus, result string) error {
	var cur dataflow.AppStatus
	if err := tx.QueryRow("SELECT status FROM apps WHERE id = ?", appID).Scan(&cur); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	}
	if cur.Done() {
		return fmt.Errorf("%w (%s)", ErrAppEnded, cur)
	}
	now := ms(b.now())
	if status.Done() {
		// One statement per unfinished state, each through its partial
		// index: ending an app never scans the tasks of every app.
		for _, where := range []string{
			"state = 'ready' AND module_id IN (SELECT id FROM modules WHERE app_id = ?)",
			"state IN ('leased','running') AND lease_deadline IS NOT NULL AND app_id = ?",
			"state = 'retrying' AND available_at IS NOT NULL AND app_id = ?",
			"state = 'initial' AND app_id = ?",
		} {
			if _, err := tx.updateStates(`UPDATE tasks SET prev_state = state, state = 'cancelled', lease_pilot = NULL, lease_slot = NULL, lease_deadline = NULL,
				updated_at = ? WHERE `+where, now, appID); err != nil {
				return err
			}
		}
		if _, err := tx.Exec("UPDATE apps SET status = ?, result = ?, finished_at = ? WHERE id = ?", status, nullStr(result), now, appID); err != nil {
			return err
		}
	} else {
		if _, err := tx.Exec("UPDATE apps SET status = ?, started_at = coalesce(started_at, CASE WHEN ? = 'RUNNING' THEN ? END) WHERE id = ?",
			status, status, now, appID); err != nil {
			return err
		}
	}
	b.mu.Lock()
	if a := b.apps[appID]; a != nil {
		a.status = status
	}
	b.mu.Unlock()
	return nil
}

func nullStr(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// FinishIfQuiescent ends a RUNNING app that has no task left to run:
// FINISHED if none failed, FAILED otherwise. It reports the new status, or
// "" when the app goes on. An app that never had a task waits for one (or
// for set-finished), so `app create` followed by `task add` works.
func (b *Broker) FinishIfQuiescent(ctx context.Context, appID int64) (dataflow.AppStatus, error) {
	_, status, err := b.App(appID)
	if err != nil || status != dataflow.AppRunning {
		return "", err
	}
	// Most calls find work left; answer those from a reader.
	var active int
	if err := b.r.QueryRowContext(ctx, activeQuery, appID, appID).Scan(&active); err != nil {
		return "", err
	}
	if active == 1 {
		return "", nil
	}
	var out dataflow.AppStatus
	err = b.write(ctx, func(tx *wtx) error {
		var cur dataflow.AppStatus
		if err := tx.QueryRow("SELECT status FROM apps WHERE id = ?", appID).Scan(&cur); err != nil {
			return err
		}
		if cur != dataflow.AppRunning {
			return nil
		}
		var active int
		if err := tx.QueryRow(activeQuery, appID, appID).Scan(&active); err != nil {
			return err
		}
		if active == 1 {
			return nil
		}
		var failed int
		if err := tx.QueryRow(`SELECT EXISTS (SELECT 1 FROM tasks WHERE app_id = ? AND state = 'failed')`, appID).Scan(&failed); err != nil {
			return err
		}
		out = dataflow.AppFinished
		if failed == 1 {
			out = dataflow.AppFailed
		}
		return b.setAppStatus(tx, appID, out, "")
	})
	return out, err
}

// activeQuery is 1 while an app has work left (or never had a task):
// each state is looked up through its own partial index, no scan.
const activeQuery = `SELECT
	EXISTS (SELECT 1 FROM tasks WHERE state = 'ready' AND module_id IN (SELECT id FROM modules WHERE app_id = ?1))
	OR EXISTS (SELECT 1 FROM tasks WHERE state IN ('leased','running') AND lease_deadline IS NOT NULL AND app_id = ?1)
	OR EXISTS (SELECT 1 FROM tasks WHERE state = 'retrying' AND available_at IS NOT NULL AND app_id = ?1)
	OR EXISTS (SELECT 1 FROM tasks WHERE state = 'initial' AND app_id = ?1)
	OR NOT EXISTS (SELECT 1 FROM task_counts WHERE module_id IN (SELECT id FROM modules WHERE app_id = ?2) AND n > 0)`

// AppInfo collects an app's status with its counts, semaphores and variables.
func (b *Broker) AppInfo(ctx context.Context, appID int64) (*dataflow.AppInfo, error) {
	info := &dataflow.AppInfo{ID: appID, Tasks: map[dataflow.TaskState]int{}, Modules: map[string]dataflow.ModuleCounts{},
		Semaphores: map[string]int64{}, Variables: map[string]string{}}
	var result sql.NullString
	var created int64
	var started, finished sql.NullInt64
	err := b.r.QueryRowContext(ctx, "SELECT name, status, result, created_at, started_at, finished_at FROM apps WHERE id = ?", appID).
		Scan(&info.Name, &info.Status, &result, &created, &started, &finished)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("app %d: %w", appID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("app %d: %w", appID, err)
	}
	info.Result = result.String
	info.CreatedAt = fromMS(created)
	info.StartedAt, info.FinishedAt = nullTime(started), nullTime(finished)
	def, _, _ := b.App(appID)
	if def != nil {
		for _, m := range def.Modules {
			info.Modules[m.Name] = dataflow.ModuleCounts{}
		}
	}
	rows, err := b.r.QueryContext(ctx, `SELECT m.name, c.state, c.n FROM task_counts c JOIN modules m ON m.id = c.module_id
		WHERE m.app_id = ? AND c.n > 0`, appID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var mod string
		var st dataflow.TaskState
		var n int
		if err := rows.Scan(&mod, &st, &n); err != nil {
			rows.Close()
			return nil, err
		}
		if info.Modules[mod] == nil {
			info.Modules[mod] = dataflow.ModuleCounts{}
		}
		info.Modules[mod][st] = n
		info.Tasks[st] += n
	}
	rows.Close()
	if info.Semaphores, err = b.Semaphores(ctx, appID, ""); err != nil {
		return nil, err
	}
	if info.Variables, err = b.Variables(ctx, appID, ""); err != nil {
		return nil, err
	}
	if err := b.r.QueryRowContext(ctx, "SELECT count(*) FROM pilots WHERE app_id = ? AND state = 'active'", appID).Scan(&info.Pilots); err != nil {
		return nil, err
	}
	return info, nil
}
