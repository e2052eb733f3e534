-- Lineage, so the head can re-produce node-local data when its node is
-- lost (broker/reproduce.go, docs/staging.md).
--
-- parent_id is the task whose success emitted this one (NULL for start
-- tasks and `task add`). bound_to_data is 1 when the head, not the
-- sender, set to_host: to the node that holds the sender's output (a node
-- tier, or a HOST-BOUND module). lost_host is set while the task is held
-- in 'initial' for its input to be produced again, that input having
-- been on lost_host; the producer's next emission of the same body
-- releases it, bound to the new node.
ALTER TABLE tasks ADD COLUMN parent_id INTEGER;
ALTER TABLE tasks ADD COLUMN bound_to_data INTEGER NOT NULL DEFAULT 0 CHECK (bound_to_data IN (0, 1));
ALTER TABLE tasks ADD COLUMN lost_host TEXT NOT NULL DEFAULT '' CHECK (lost_host = '' OR state IN ('initial', 'cancelled'));
-- Tasks waiting for a node: found per (app, host) without a scan.
CREATE INDEX tasks_bound ON tasks (app_id, to_host) WHERE bound_to_data = 1 AND state IN ('ready', 'retrying');
