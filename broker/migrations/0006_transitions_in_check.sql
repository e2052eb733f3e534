-- The task state machine moves from triggers into a CHECK, and the task
-- counts from triggers into the writer (broker/counts.go). A trigger runs
-- as a sub-program per updated row; the three cost 30 % of a lifecycle at
-- batch 100 (docs/benchmarks.md).
--
-- prev_state is the state the last state-changing UPDATE started from:
-- every such UPDATE sets "prev_state = state" (SET expressions read the
-- old row), so the CHECK sees the transition. '' means never moved.
-- Tests run with a temporary trigger that refuses a state change which
-- does not record it (Options.Strict).
DROP TRIGGER tasks_state_transition;
DROP TRIGGER task_counts_insert;
DROP TRIGGER task_counts_update;

ALTER TABLE tasks ADD COLUMN prev_state TEXT NOT NULL DEFAULT '' CONSTRAINT task_transition CHECK (
  prev_state IN ('', state)
  OR (prev_state = 'initial'  AND state IN ('ready','cancelled'))
  OR (prev_state = 'ready'    AND state IN ('leased','initial','cancelled'))
  OR (prev_state = 'leased'   AND state IN ('running','ready','succeeded','failed','retrying','cancelled'))
  OR (prev_state = 'running'  AND state IN ('succeeded','failed','retrying','cancelled'))
  OR (prev_state = 'retrying' AND state IN ('ready','cancelled'))
  -- an explicit re-run (conflict_action=OVERWRITE)
  OR (prev_state IN ('succeeded','failed','cancelled') AND state = 'ready')
);

-- Every module has a count row per state, so the writer's one UPDATE per
-- commit finds the rows it changes (new modules get theirs when created).
INSERT INTO task_counts (module_id, state, n)
  SELECT m.id, s.value, 0 FROM modules m,
    json_each('["initial","ready","leased","running","retrying","succeeded","failed","cancelled"]') s
  WHERE true ON CONFLICT (module_id, state) DO NOTHING;
