-- 001: the history of finished tasks, one row per task.
CREATE TABLE flows_task_history (
    task_id       text        PRIMARY KEY,
    flow          text        NOT NULL,
    state         text        NOT NULL CHECK (state IN ('SUCCESS', 'FAILURE')),
    status        text        NOT NULL DEFAULT '',
    owner         text        NOT NULL DEFAULT '',
    inputs        jsonb       NOT NULL DEFAULT '{}',
    snapshot      jsonb       NOT NULL,
    attempts      integer     NOT NULL DEFAULT 0,
    max_attempts  integer     NOT NULL DEFAULT 0,
    requeued_from text        NOT NULL DEFAULT '',
    worker        text        NOT NULL DEFAULT '',
    trace_id      text        NOT NULL DEFAULT '',
    enqueued_at   timestamptz,
    started_at    timestamptz,
    ended_at      timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

-- Newest first, with the task id to break ties: the order of List and its
-- cursor, overall and within a flow, an owner or a state.
CREATE INDEX flows_task_history_ended ON flows_task_history (ended_at DESC, task_id DESC);
CREATE INDEX flows_task_history_flow ON flows_task_history (flow, ended_at DESC, task_id DESC);
CREATE INDEX flows_task_history_owner ON flows_task_history (owner, ended_at DESC, task_id DESC);
CREATE INDEX flows_task_history_state ON flows_task_history (state, ended_at DESC, task_id DESC);
