-- 002: a task's hand-backs (queue.Task.HandBacks): its runs handed back
-- through no fault of its flow, which spent none of max_attempts. Rows
-- written before it read 0. IF NOT EXISTS keeps it harmless on a table
-- that has the column already.
ALTER TABLE flows_task_history ADD COLUMN IF NOT EXISTS hand_backs integer NOT NULL DEFAULT 0;
