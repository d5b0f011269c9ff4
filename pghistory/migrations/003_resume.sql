-- 003: whether a re-queued task resumed its dead task (queue.Task.Resume:
-- its flow replayed the steps the dead task completed). Rows written
-- before it read false. IF NOT EXISTS keeps it harmless on a table that
-- has the column already.
ALTER TABLE flows_task_history ADD COLUMN IF NOT EXISTS resume boolean NOT NULL DEFAULT false;
