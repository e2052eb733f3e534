package broker

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/scalebox-hpc/scalebox/dataflow"
)

// PoolKey names one pool of one app.
type PoolKey struct {
	AppID   int64
	Cluster string
	Pool    string
}

// PilotJob is one submitted pilot job.
type PilotJob struct {
	ID          int64      `json:"-"`
	AppID       int64      `json:"app_id"`
	Cluster     string     `json:"cluster"`
	Pool        string     `json:"pool"`
	JobID       string     `json:"job_id"`
	Active      bool       `json:"active"`
	SubmittedAt time.Time  `json:"submitted_at"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	EndedAt     *time.Time `json:"ended_at,omitempty"`
	EndState    string     `json:"end_state,omitempty"`
	Script      string     `json:"script,omitempty"`
}

// JobSubmitted records a successful submission and clears the pool's
// failure streak.
func (b *Broker) JobSubmitted(ctx context.Context, k PoolKey, jobID, script string) error {
	err := b.write(ctx, func(tx *wtx) error {
		now := ms(b.now())
		if _, err := tx.Exec(`INSERT INTO pilot_jobs (app_id, cluster, pool, job_id, state, submitted_at, script)
			VALUES (?, ?, ?, ?, 'active', ?, ?)`, k.AppID, k.Cluster, k.Pool, jobID, now, script); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO pools (app_id, cluster, pool, submissions, attempts) VALUES (?, ?, ?, 1, 1)
			ON CONFLICT DO UPDATE SET submissions = submissions + 1, attempts = attempts + 1, failures = 0, last_error = '', retry_at = 0`,
			k.AppID, k.Cluster, k.Pool)
		return err
	})
	if err != nil {
		return fmt.Errorf("record pilot job %s: %w", jobID, err)
	}
	return nil
}

// SubmitFailed records a failed submission: the error, when to try
// again, and whether the pool is now paused.
func (b *Broker) SubmitFailed(ctx context.Context, k PoolKey, msg string, retryAt time.Time, pause bool) error {
	err := b.write(ctx, func(tx *wtx) error {
		_, err := tx.Exec(`INSERT INTO pools (app_id, cluster, pool, failures, attempts, last_error, retry_at, paused) VALUES (?, ?, ?, 1, 1, ?, ?, ?)
			ON CONFLICT DO UPDATE SET failures = failures + 1, attempts = attempts + 1, last_error = excluded.last_error,
			retry_at = excluded.retry_at, paused = excluded.paused`,
			k.AppID, k.Cluster, k.Pool, msg, ms(retryAt), pause)
		return err
	})
	if err != nil {
		return fmt.Errorf("record failed submission: %w", err)
	}
	return nil
}

// ResumePools clears the pause and failure streak of an app's pools.
func (b *Broker) ResumePools(ctx context.Context, appID int64) error {
	return b.write(ctx, func(tx *wtx) error {
		_, err := tx.Exec("UPDATE pools SET paused = 0, failures = 0, retry_at = 0 WHERE app_id = ?", appID)
		return err
	})
}

// Pools returns an app's pool states.
func (b *Broker) Pools(ctx context.Context, appID int64) ([]dataflow.PoolInfo, error) {
	rows, err := b.r.QueryContext(ctx, `SELECT p.cluster, p.pool, p.submissions, p.failures, p.attempts, p.paused, p.last_error, p.retry_at,
		(SELECT count(*) FROM pilot_jobs j WHERE j.app_id = p.app_id AND j.cluster = p.cluster AND j.pool = p.pool AND j.state = 'active')
		FROM pools p WHERE p.app_id = ? ORDER BY p.cluster, p.pool`, appID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []dataflow.PoolInfo
	for rows.Next() {
		var p dataflow.PoolInfo
		var retry int64
		if err := rows.Scan(&p.Cluster, &p.Pool, &p.Submissions, &p.Failures, &p.Attempts, &p.Paused, &p.LastError, &retry, &p.ActiveJobs); err != nil {
			return nil, err
		}
		if retry > 0 {
			t := fromMS(retry)
			p.RetryAt = &t
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// PilotJobs lists an app's pilot jobs, active ones only if asked.
func (b *Broker) PilotJobs(ctx context.Context, appID int64, activeOnly bool) ([]PilotJob, error) {
	q := `SELECT id, app_id, cluster, pool, job_id, state, submitted_at, started_at, ended_at, end_state, script FROM pilot_jobs WHERE app_id = ?`
	if activeOnly {
		q += " AND state = 'active'"
	}
	rows, err := b.r.QueryContext(ctx, q+" ORDER BY id", appID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PilotJob
	for rows.Next() {
		var j PilotJob
		var state string
		var sub int64
		var started, ended sql.NullInt64
		if err := rows.Scan(&j.ID, &j.AppID, &j.Cluster, &j.Pool, &j.JobID, &state, &sub, &started, &ended, &j.EndState, &j.Script); err != nil {
			return nil, err
		}
		j.Active = state == "active"
		j.SubmittedAt = fromMS(sub)
		j.StartedAt, j.EndedAt = nullTime(started), nullTime(ended)
		out = append(out, j)
	}
	return out, rows.Err()
}

// JobStarted notes when Slurm first reported a job running.
func (b *Broker) JobStarted(ctx context.Context, id int64) error {
	return b.write(ctx, func(tx *wtx) error {
		_, err := tx.Exec("UPDATE pilot_jobs SET started_at = ? WHERE id = ? AND started_at IS NULL", ms(b.now()), id)
		return err
	})
}

// JobEnded marks a pilot job ended. Its pilots that are still active are
// marked lost and their leases expire at once, so the rescuer returns
// their tasks through the retry rules now rather than after the lease TTL.
func (b *Broker) JobEnded(ctx context.Context, id int64, endState string) (lostPilots int, err error) {
	err = b.write(ctx, func(tx *wtx) error {
		now := ms(b.now())
		var appID int64
		var jobID string
		if err := tx.QueryRow(`UPDATE pilot_jobs SET state = 'ended', ended_at = ?, end_state = ? WHERE id = ? AND state = 'active'
			RETURNING app_id, job_id`, now, endState, id).Scan(&appID, &jobID); err != nil {
			if err == sql.ErrNoRows {
				return nil
			}
			return err
		}
		rows, err := tx.Query("UPDATE pilots SET state = 'lost' WHERE app_id = ? AND job_id = ? AND state = 'active' RETURNING id", appID, jobID)
		if err != nil {
			return err
		}
		var ids []int64
		for rows.Next() {
			var pid int64
			if err := rows.Scan(&pid); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, pid)
		}
		rows.Close()
		lostPilots = len(ids)
		for _, pid := range ids {
			if _, err := tx.Exec(`UPDATE tasks SET lease_deadline = ? WHERE lease_pilot = ? AND state IN ('leased','running')`, now-1, pid); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("end pilot job %d: %w", id, err)
	}
	return lostPilots, nil
}
