-- Data staging: bytes and time of each attempt's stage_in and stage_out.
ALTER TABLE task_execs ADD COLUMN stage_in_bytes  INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_execs ADD COLUMN stage_in_ms     INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_execs ADD COLUMN stage_out_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE task_execs ADD COLUMN stage_out_ms    INTEGER NOT NULL DEFAULT 0;
