-- Locality: which node caches which input. A task's data_key names its
-- first cacheable input (dataflow.Module.DataKey); a pilot asking for work
-- gets the ready tasks whose input its node caches first, then any.
ALTER TABLE tasks ADD COLUMN data_key TEXT NOT NULL DEFAULT '';
CREATE INDEX tasks_ready_data ON tasks (module_id, data_key, sort_tag, id) WHERE state = 'ready' AND data_key <> '';

CREATE TABLE cached (
  app_id   INTEGER NOT NULL,
  host     TEXT    NOT NULL,
  data_key TEXT    NOT NULL,
  at       INTEGER NOT NULL,
  PRIMARY KEY (app_id, host, data_key)
) WITHOUT ROWID;
-- The dispatch query reads a node's most recent records first.
CREATE INDEX cached_recent ON cached (app_id, host, at);
