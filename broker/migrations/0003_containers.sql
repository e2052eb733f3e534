-- Module containers: the image each attempt ran in, and the slots pilots
-- report failing to start (container, setup.sh) or losing their agent.

ALTER TABLE task_execs ADD COLUMN image TEXT;

-- One row per troubled slot of an active pilot; a pilot's heartbeat
-- replaces its rows, so a slot that recovered disappears.
CREATE TABLE slot_states (
  pilot_id   INTEGER NOT NULL REFERENCES pilots(id),
  slot       TEXT    NOT NULL,
  app_id     INTEGER NOT NULL,
  module     TEXT    NOT NULL,
  state      TEXT    NOT NULL CHECK (state IN ('RESTARTING','ERROR')),
  reason     TEXT    NOT NULL,
  failures   INTEGER NOT NULL CHECK (failures >= 0),
  updated_at INTEGER NOT NULL,
  PRIMARY KEY (pilot_id, slot)
) WITHOUT ROWID;
CREATE INDEX slot_states_app ON slot_states (app_id);
