-- Scalebox broker schema. Task states and their transitions are documented
-- in docs/task-states.md and in dataflow.TaskState; the CHECKs and the
-- trigger below enforce the same machine, so no code path can bypass it.

CREATE TABLE apps (
  id          INTEGER PRIMARY KEY,
  name        TEXT    NOT NULL,
  status      TEXT    NOT NULL CHECK (status IN ('INITIAL','RUNNING','PAUSED','FINISHED','FAILED','CANCELLED')),
  definition  TEXT    NOT NULL CHECK (json_valid(definition)),
  result      TEXT,
  created_at  INTEGER NOT NULL,
  started_at  INTEGER,
  finished_at INTEGER,
  CHECK ((status IN ('FINISHED','FAILED','CANCELLED')) = (finished_at IS NOT NULL))
);

CREATE TABLE modules (
  id         INTEGER PRIMARY KEY,
  app_id     INTEGER NOT NULL REFERENCES apps(id),
  name       TEXT    NOT NULL,
  definition TEXT    NOT NULL CHECK (json_valid(definition)),
  UNIQUE (app_id, name)
);

CREATE TABLE tasks (
  id             INTEGER PRIMARY KEY,
  app_id         INTEGER NOT NULL REFERENCES apps(id),
  module_id      INTEGER NOT NULL REFERENCES modules(id),
  body           TEXT    NOT NULL CHECK (length(body) > 0),
  -- seq > 0 only for re-sends of a body marked repeatable=yes.
  seq            INTEGER NOT NULL DEFAULT 0 CHECK (seq >= 0),
  headers        TEXT    NOT NULL DEFAULT '{}',
  state          TEXT    NOT NULL CHECK (state IN ('initial','ready','leased','running','succeeded','failed','retrying','cancelled')),
  sort_tag       TEXT    NOT NULL DEFAULT '',
  to_host        TEXT    NOT NULL DEFAULT '',
  attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  -- retries used, per retry-rule key ("3", "*"), as a JSON object.
  fail_counts    TEXT    NOT NULL DEFAULT '{}',
  available_at   INTEGER NOT NULL DEFAULT 0,
  lease_pilot    INTEGER,
  lease_slot     TEXT,
  lease_deadline INTEGER,
  lease_gen      INTEGER NOT NULL DEFAULT 0,
  exit_code      INTEGER,
  created_at     INTEGER NOT NULL,
  updated_at     INTEGER NOT NULL,
  UNIQUE (module_id, body, seq),
  -- a lease exists exactly while the task is leased or running
  CHECK ((state IN ('leased','running')) = (lease_pilot IS NOT NULL AND lease_deadline IS NOT NULL)),
  CHECK (state <> 'succeeded' OR exit_code = 0),
  CHECK (state NOT IN ('failed','retrying') OR exit_code <> 0),
  CHECK (state <> 'running' OR attempts >= 0)
);

-- Dispatch: WHERE module_id = ? AND state = 'ready' ORDER BY sort_tag, id.
CREATE INDEX tasks_ready ON tasks (module_id, sort_tag, id) WHERE state = 'ready';
-- Rescuer: expired leases, due retries.
CREATE INDEX tasks_leased ON tasks (lease_deadline) WHERE state IN ('leased','running');
CREATE INDEX tasks_retrying ON tasks (available_at) WHERE state = 'retrying';
-- The quiescence check: failed and held tasks are found without a scan.
CREATE INDEX tasks_failed ON tasks (app_id) WHERE state = 'failed';
CREATE INDEX tasks_initial ON tasks (app_id) WHERE state = 'initial';

-- Task counts per module and state, kept by triggers. One small table
-- whose few pages a batch rewrites once per commit: cheaper than an index
-- on state, and `app status` never scans the tasks.
CREATE TABLE task_counts (
  module_id INTEGER NOT NULL,
  state     TEXT    NOT NULL,
  n         INTEGER NOT NULL CHECK (n >= 0),
  PRIMARY KEY (module_id, state)
) WITHOUT ROWID;

CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks
BEGIN
  INSERT INTO task_counts (module_id, state, n) VALUES (NEW.module_id, NEW.state, 1)
    ON CONFLICT (module_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER task_counts_update AFTER UPDATE OF state ON tasks WHEN OLD.state <> NEW.state
BEGIN
  UPDATE task_counts SET n = n - 1 WHERE module_id = OLD.module_id AND state = OLD.state;
  INSERT INTO task_counts (module_id, state, n) VALUES (NEW.module_id, NEW.state, 1)
    ON CONFLICT (module_id, state) DO UPDATE SET n = n + 1;
END;

CREATE TRIGGER tasks_state_transition BEFORE UPDATE OF state ON tasks
WHEN NOT (
  OLD.state = NEW.state
  OR (OLD.state = 'initial'  AND NEW.state IN ('ready','cancelled'))
  OR (OLD.state = 'ready'    AND NEW.state IN ('leased','initial','cancelled'))
  OR (OLD.state = 'leased'   AND NEW.state IN ('running','ready','succeeded','failed','retrying','cancelled'))
  OR (OLD.state = 'running'  AND NEW.state IN ('succeeded','failed','retrying','cancelled'))
  OR (OLD.state = 'retrying' AND NEW.state IN ('ready','cancelled'))
  -- an explicit re-run (conflict_action=OVERWRITE, task retry)
  OR (OLD.state IN ('succeeded','failed','cancelled') AND NEW.state = 'ready')
)
BEGIN
  SELECT RAISE(ABORT, 'illegal task state transition');
END;

CREATE TABLE task_execs (
  id           INTEGER PRIMARY KEY,
  task_id      INTEGER NOT NULL REFERENCES tasks(id),
  app_id       INTEGER NOT NULL,
  module_id    INTEGER NOT NULL,
  attempt      INTEGER NOT NULL CHECK (attempt >= 1),
  lease_gen    INTEGER NOT NULL,
  pilot_id     INTEGER,
  slot         TEXT,
  host         TEXT,
  exit_code    INTEGER NOT NULL,
  started_at   INTEGER,
  ended_at     INTEGER NOT NULL,
  stdout_tail  TEXT,
  stderr_tail  TEXT,
  auxout       TEXT,
  note         TEXT,
  timestamps   TEXT,
  input_bytes  INTEGER NOT NULL DEFAULT 0,
  output_bytes INTEGER NOT NULL DEFAULT 0,
  emitted      INTEGER NOT NULL DEFAULT 0,
  -- one record per lease: a repeated report cannot add a second
  UNIQUE (task_id, lease_gen)
);

CREATE TABLE pilots (
  id            INTEGER PRIMARY KEY,
  app_id        INTEGER NOT NULL REFERENCES apps(id),
  host          TEXT    NOT NULL,
  cpus          INTEGER NOT NULL DEFAULT 0,
  mem_bytes     INTEGER NOT NULL DEFAULT 0,
  head          INTEGER NOT NULL DEFAULT 0,
  job_id        TEXT    NOT NULL DEFAULT '',
  state         TEXT    NOT NULL CHECK (state IN ('active','left','lost')),
  registered_at INTEGER NOT NULL,
  last_seen     INTEGER NOT NULL
);
CREATE INDEX pilots_app ON pilots (app_id, state);

CREATE TABLE semaphores (
  app_id INTEGER NOT NULL REFERENCES apps(id),
  name   TEXT    NOT NULL CHECK (length(name) > 0),
  value  INTEGER NOT NULL,
  PRIMARY KEY (app_id, name)
) WITHOUT ROWID;

CREATE TABLE variables (
  app_id INTEGER NOT NULL REFERENCES apps(id),
  name   TEXT    NOT NULL CHECK (length(name) > 0),
  value  TEXT    NOT NULL,
  PRIMARY KEY (app_id, name)
) WITHOUT ROWID;

-- State changes already applied, by request id, so a retried request
-- returns the first answer instead of applying twice.
CREATE TABLE applied_requests (
  app_id     INTEGER NOT NULL,
  request_id TEXT    NOT NULL,
  result     TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (app_id, request_id)
) WITHOUT ROWID;
