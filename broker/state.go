package broker

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// Semaphore and variable operations.
const (
	OpCreate    = "create"
	OpIncrement = "increment"
	OpDecrement = "decrement"
	OpAddValue  = "add-value"
	OpSet       = "set"
	OpDelete    = "delete"
)

// ApplyStateOp applies one semaphore or variable change at once and returns
// the new value. With a RequestID, a repeated request returns the first
// answer and changes nothing.
func (b *Broker) ApplyStateOp(ctx context.Context, appID int64, op dataflow.StateOp) (string, error) {
	if _, _, err := b.App(appID); err != nil {
		return "", err
	}
	var out string
	err := b.write(ctx, func(tx *wtx) error {
		v, err := applyStateOp(tx, appID, op, ms(b.now()))
		out = v
		return err
	})
	if err != nil {
		return "", fmt.Errorf("%s %s %q: %w", op.Kind, op.Op, op.Name, err)
	}
	return out, nil
}

func applyStateOp(tx *wtx, appID int64, op dataflow.StateOp, now int64) (string, error) {
	if op.Name == "" {
		return "", fmt.Errorf("empty name")
	}
	if op.RequestID != "" {
		var prev string
		err := tx.QueryRow("SELECT result FROM applied_requests WHERE app_id = ? AND request_id = ?", appID, op.RequestID).Scan(&prev)
		if err == nil {
			return prev, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return "", err
		}
	}
	var out string
	var err error
	switch op.Kind {
	case "semaphore":
		out, err = semaphoreOp(tx, appID, op)
	case "variable":
		out, err = variableOp(tx, appID, op)
	default:
		err = fmt.Errorf("unknown state kind %q", op.Kind)
	}
	if err != nil {
		return "", err
	}
	if op.RequestID != "" {
		if _, err := tx.Exec("INSERT INTO applied_requests (app_id, request_id, result, created_at) VALUES (?, ?, ?, ?)",
			appID, op.RequestID, out, now); err != nil {
			return "", err
		}
	}
	return out, nil
}

func semaphoreOp(tx *wtx, appID int64, op dataflow.StateOp) (string, error) {
	var delta int64
	switch op.Op {
	case OpCreate:
		v, err := strconv.ParseInt(strings.TrimSpace(op.Value), 10, 64)
		if err != nil {
			return "", fmt.Errorf("value %q is not an integer", op.Value)
		}
		_, err = tx.Exec(`INSERT INTO semaphores (app_id, name, value) VALUES (?, ?, ?)
			ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value`, appID, op.Name, v)
		return strconv.FormatInt(v, 10), err
	case OpDelete:
		res, err := tx.Exec("DELETE FROM semaphores WHERE app_id = ? AND name = ?", appID, op.Name)
		if err != nil {
			return "", err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return "", ErrNotFound
		}
		return "", nil
	case OpIncrement:
		delta = 1
	case OpDecrement:
		delta = -1
	case OpAddValue:
		v, err := strconv.ParseInt(strings.TrimSpace(op.Value), 10, 64)
		if err != nil {
			return "", fmt.Errorf("value %q is not an integer", op.Value)
		}
		delta = v
	default:
		return "", fmt.Errorf("unknown semaphore operation %q", op.Op)
	}
	var v int64
	err := tx.QueryRow("UPDATE semaphores SET value = value + ? WHERE app_id = ? AND name = ? RETURNING value", delta, appID, op.Name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return strconv.FormatInt(v, 10), err
}

func variableOp(tx *wtx, appID int64, op dataflow.StateOp) (string, error) {
	switch op.Op {
	case OpSet, OpCreate:
		_, err := tx.Exec(`INSERT INTO variables (app_id, name, value) VALUES (?, ?, ?)
			ON CONFLICT (app_id, name) DO UPDATE SET value = excluded.value`, appID, op.Name, op.Value)
		return op.Value, err
	case OpDelete:
		res, err := tx.Exec("DELETE FROM variables WHERE app_id = ? AND name = ?", appID, op.Name)
		if err != nil {
			return "", err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return "", ErrNotFound
		}
		return "", nil
	}
	return "", fmt.Errorf("unknown variable operation %q", op.Op)
}

// Semaphores lists an app's semaphores whose name starts with prefix.
func (b *Broker) Semaphores(ctx context.Context, appID int64, prefix string) (map[string]int64, error) {
	rows, err := b.r.QueryContext(ctx, "SELECT name, value FROM semaphores WHERE app_id = ? AND substr(name, 1, ?) = ? ORDER BY name",
		appID, len(prefix), prefix)
	if err != nil {
		return nil, fmt.Errorf("list semaphores: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var n string
		var v int64
		if err := rows.Scan(&n, &v); err != nil {
			return nil, err
		}
		out[n] = v
	}
	return out, rows.Err()
}

// SemaphoresMatching returns the semaphores whose whole name matches re.
func (b *Broker) SemaphoresMatching(ctx context.Context, appID int64, re *regexp.Regexp) (map[string]int64, error) {
	all, err := b.Semaphores(ctx, appID, "")
	if err != nil {
		return nil, err
	}
	for k := range all {
		if !re.MatchString(k) {
			delete(all, k)
		}
	}
	return all, nil
}

// Variables lists an app's variables whose name starts with prefix.
func (b *Broker) Variables(ctx context.Context, appID int64, prefix string) (map[string]string, error) {
	rows, err := b.r.QueryContext(ctx, "SELECT name, value FROM variables WHERE app_id = ? AND substr(name, 1, ?) = ? ORDER BY name",
		appID, len(prefix), prefix)
	if err != nil {
		return nil, fmt.Errorf("list variables: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var n, v string
		if err := rows.Scan(&n, &v); err != nil {
			return nil, err
		}
		out[n] = v
	}
	return out, rows.Err()
}
