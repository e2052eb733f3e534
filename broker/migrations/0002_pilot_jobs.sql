-- Pilot jobs submitted to batch systems, and each pool's submission state.
-- The pool manager sizes pools from these rows; after a head restart they
-- are how running pilots are re-adopted instead of resubmitted.

CREATE TABLE pilot_jobs (
  id           INTEGER PRIMARY KEY,
  app_id       INTEGER NOT NULL REFERENCES apps(id),
  cluster      TEXT    NOT NULL,
  pool         TEXT    NOT NULL,
  job_id       TEXT    NOT NULL,
  -- active: queued or running as far as we know; ended: Slurm says it
  -- finished, or we cancelled it.
  state        TEXT    NOT NULL CHECK (state IN ('active','ended')),
  submitted_at INTEGER NOT NULL,
  started_at   INTEGER,
  ended_at     INTEGER,
  end_state    TEXT    NOT NULL DEFAULT '',
  script       TEXT    NOT NULL DEFAULT '',
  UNIQUE (cluster, job_id),
  CHECK ((state = 'ended') = (ended_at IS NOT NULL))
);
CREATE INDEX pilot_jobs_active ON pilot_jobs (app_id) WHERE state = 'active';

CREATE TABLE pools (
  app_id      INTEGER NOT NULL REFERENCES apps(id),
  cluster     TEXT    NOT NULL,
  pool        TEXT    NOT NULL,
  submissions INTEGER NOT NULL DEFAULT 0 CHECK (submissions >= 0),
  -- consecutive failed submissions; reset by a success
  failures    INTEGER NOT NULL DEFAULT 0 CHECK (failures >= 0),
  attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
  last_error  TEXT    NOT NULL DEFAULT '',
  retry_at    INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (app_id, cluster, pool)
) WITHOUT ROWID;
