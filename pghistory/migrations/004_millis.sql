-- 004: times to the millisecond. A listing orders the history's tasks
-- with the Redis backend's, which keeps times to the millisecond, by end
-- time then by id; rows written with microseconds (by a hook that had
-- the worker's clock, not a Redis snapshot's times, or by a Save of your
-- own) sorted apart within their millisecond. Save cuts every time to
-- the millisecond since; this cuts those of the rows written before (the
-- three, so that no row reads an end before its start). Rows without a
-- fraction of a millisecond, as the hook writes them from a Redis
-- snapshot, are left as they are.
UPDATE flows_task_history SET
    enqueued_at = date_trunc('milliseconds', enqueued_at),
    started_at = date_trunc('milliseconds', started_at),
    ended_at = date_trunc('milliseconds', ended_at)
WHERE ended_at <> date_trunc('milliseconds', ended_at)
   OR started_at <> date_trunc('milliseconds', started_at)
   OR enqueued_at <> date_trunc('milliseconds', enqueued_at);
