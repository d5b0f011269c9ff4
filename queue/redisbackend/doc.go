// Package redisbackend runs the queue and the progress store of flows on
// Redis, through one rueidis client that the caller hands in. A *Backend
// is both a queue.Backend and a progress.Backend, so that a web process and
// any number of worker processes share tasks, progress and live events:
//
//	client, err := rueidis.NewClient(rueidis.ClientOption{
//		InitAddress:  []string{"127.0.0.1:6379"},
//		DisableCache: true, // the backend reads nothing through rueidis' client-side cache
//	})
//	if err != nil { ... }
//	defer client.Close()
//	backend, err := redisbackend.New(client, redisbackend.Config{})
//	if err != nil { ... }
//	defer backend.Close()
//	broker := queue.NewBroker(backend, nil, queue.BrokerConfig{Registry: reg}) // nil: the backend is the store
//
// # Key schema
//
// Every key starts with Config.Prefix (P below, "flows" by default). Each
// key of one task carries the task id as its hash tag, so that all of a
// task's keys live on one Redis Cluster slot and the scripts that update
// several of them are atomic there too; the keys of one queue (Q,
// Config.Queue) share the tag "{q:Q}". On a Redis Cluster client no script
// touches a task's keys together with a queue's; on a single Redis the
// scripts of Fetch, Ack (durable mode), AppendAndAck and Retry do, to
// spare a round trip or to check the lease's holder before they write
// to the task. Scripts that act on tasks may act on several at
// once (see Batching below), except on a Redis Cluster client
// (rueidis.ClientModeCluster), where each touches one task's keys.
//
//	P:{<id>}:task       hash    the queue's record of the task: rec (what
//	                            does not change once it is queued: max
//	                            attempts, time limit, enqueued and due
//	                            times, flow, requeued_from and whether
//	                            the task resumes that dead task, owner,
//	                            the W3C trace context of a task enqueued
//	                            in a trace, and inputs, in one string),
//	                            attempt and cancelled, and prev (why the attempt
//	                            before the current one ended, a
//	                            queue.AttemptEnd: set by Retry, and by the
//	                            fetch that takes over a lease), and
//	                            handbacks (the hand-backs that were no
//	                            attempt, queue.Task.HandBacks: counted by
//	                            Retry) and hookretries (the times the
//	                            ended task was given back for its finish
//	                            hooks, queue.Task.HookRetries: counted by
//	                            Retry), and prevof (the attempt whose
//	                            end Retry told in prev, see
//	                            lua/end_attempt.lua; while it is the
//	                            record's attempt, a task given back for
//	                            its hooks has not been leased since:
//	                            queue.Task.HooksDue), and noruns (the
//	                            leases that let the task go without
//	                            running its flow, queue.Task.NoRuns:
//	                            counted by Ack, Bury and Retry for a
//	                            queue.Lease.NoRun) and norunof (the
//	                            attempt counted last, see
//	                            lua/no_run.lua), and counted (why the
//	                            last attempt that counted ended,
//	                            queue.Task.CountedEnd: set with prev
//	                            by Retry for an end that counts, and by
//	                            the fetch that takes over a lease),
//	                            all written only by the holder of the
//	                            lease, and, for a start taken in steps,
//	                            starting (the score of its start in the
//	                            starting set, see starts.go); and its
//	                            progress snapshot:
//	                            state, status, progress, result (final
//	                            result JSON), last (id of the last event
//	                            appended), exp (expiry, Unix ms),
//	                            updated, started and ended (the times of
//	                            the snapshot, Unix ms), akey (the
//	                            append key of the last keyed append, see
//	                            progress.WithAppendKey), and ebytes (the
//	                            bytes of the events list, by which
//	                            Subscribe sizes its pages)
//	P:{<id>}:steps      list    the snapshot's step results, one JSON each
//	P:{<id>}:events     list    the task's event log: one element per
//	                            Append, each event's JSON on a line; the
//	                            events of the n-th element have the ids
//	                            "<n>-0", "<n>-1"...
//	P:{<id>}:checkpoints hash   the outputs of the steps the task's
//	                            attempts completed (flow.Step): step key ->
//	                            the attempt that ran it, a space and the
//	                            output's JSON; only for a task with steps.
//	                            A task that resumes a dead one also reads
//	                            the dead task's hash (its own round trip:
//	                            another slot on a Cluster)
//	P:{<id>}:live       shard   live events of the task: one message per
//	                    channel Append, the id before them, then each
//	                            event's id and JSON (one line each)
//	P:{q:Q}:stream      stream  tasks ready to run: field "task" is the id
//	                            (and field "rate" the flow's name, for
//	                            a task let through by a flow's rate);
//	                            consumer group "workers" hands each entry
//	                            out once; acknowledged entries are trimmed
//	                            in blocks of about a hundred, about once
//	                            per hundred leases released
//	P:{q:Q}:delayed     zset    tasks waiting to be ready (delayed start,
//	                            retry backoff), scored by due Unix ms;
//	                            due by the Redis server's clock
//	P:{q:Q}:delayed:hooks zset  the tasks of the delayed set that have
//	                            ended and wait to run their finish hooks
//	                            again (queue.EndHooksPending), scored
//	                            likewise: counted apart by Depth, and
//	                            not made ready by Cancel; they leave it
//	                            as they leave the delayed set
//	P:{q:Q}:leased      zset    the leases: each one's token "<stream entry
//	                            id>/<n>", n its number (the server's clock
//	                            in ms when it was taken, or one more than
//	                            the lease before; "lost/<n>" once its
//	                            worker was found dead), scored by its
//	                            deadline (Redis server clock, ms); a lease
//	                            script finds its lease by the token alone
//	P:{q:Q}:leases      zset    the layout before 2026-12-07, written only
//	P:{q:Q}:holders     hash    by workers of earlier versions during a
//	                            rolling deploy: stream entries leased,
//	                            scored by deadline, and entry id -> lease
//	                            number; a heartbeat moves their lapsed
//	                            leases into P:{q:Q}:leased (see
//	                            lua/lib/legacy.lua); absent otherwise
//	P:{q:Q}:wake        stream  one entry, replaced whenever a task is
//	                            delayed to less than a second from now
//	                            or a waiting Fetch is cancelled: wakes
//	                            the waiting fetchers
//	P:{q:Q}:dead        zset    the dead-letter set: buried task ids,
//	                            scored by the Unix ms of their burial
//	P:{q:Q}:buried      hash    task id -> {"flow","reason","attempts"} of
//	                            each dead task
//	P:{q:Q}:cancel      shard   ids of cancelled tasks, for the workers
//	                    channel
//	P:{q:Q}:index       zset    the task index: every task of the queue,
//	                            scored by its state's rank times 2^42 plus
//	                            the Unix ms it entered that state (see
//	                            index.go and ListTasks)
//	P:{q:Q}:index:<F>   zset    the same, for the tasks of flow F
//	P:{q:Q}:flows       set     the names of the flows the index has had
//	P:{q:Q}:workers     hash    worker name -> what it says of itself
//	                            (queue.WorkerInfo as JSON)
//	P:{q:Q}:workers:seen zset   worker name, scored by the Unix ms of its
//	                            last heartbeat (server clock)
//	P:{q:Q}:workers:deadlines zset  worker name, scored by the Unix ms
//	                            past which it is dead (server clock; see
//	                            reclaim.go)
//	P:{q:Q}:workers:contact zset    worker name, scored by the Unix ms
//	                            since which its heartbeats have come
//	                            without a gap (server clock; see
//	                            reclaim.go)
//	P:{q:Q}:workers:swept string "1" for 10 s after a sweep for
//	                            entries pending with no lease, during
//	                            which no other sweep repeats it (see
//	                            reclaim.go)
//	P:{q:Q}:starting    zset    the tasks of starts taken in steps (on a
//	                            Redis Cluster, of limited flows, and
//	                            re-queues) being started, scored by the
//	                            Unix ms their
//	                            start began (the starter's clock), then
//	                            2^53 once queued, until a sweep clears
//	                            them (see starts.go)
//	P:{q:Q}:limit:gate:<F>  zset    tasks of a limited flow F waiting for
//	                            a slot, scored by due Unix ms (see
//	                            limit.go and lua/admit.lua)
//	P:{q:Q}:limit:slots:<F> zset    stream entries holding a slot of F
//	P:{q:Q}:limit:starts:<F> zset   the starts of F's rate: stream
//	                            entries let through, scored by when a
//	                            fetch first leased them (server clock,
//	                            ms), until then 2^52 plus the entry's
//	                            time (above any time), while within
//	                            its rate's period; the set expires (see
//	                            limit.go)
//	P:{q:Q}:limit:flows     set     the names of the flows whose tasks
//	                            have waited in a gate
//	P:{c:<h>}:rate      string  caller limits (queue.CallerLimits): the
//	                            theoretical arrival time of the caller's
//	                            next start; h is a hash of the caller's
//	                            name, a hash tag of its own (see
//	                            callerlimits.go)
//	P:{c:<h>}:pending   zset    the caller's tasks waiting to start
//
// The three keys of a task expire at least Config.Retention after they
// were last written. They share one expiry time, exp: it is set on
// creation to nine eighths of the retention (plus any delay) from the
// creator's clock, and moved to nine eighths of the retention from the
// server's clock by any Append that finds less than the retention and a
// sixteenth left, so a task refreshes it once per sixteenth of the
// retention at most rather than on every Append, and a short task not at
// all. What is left is judged by the appending process's clock, so that
// neither the create nor the Append of a short task reads the server's
// (a TIME per script): a process's clock may be behind the server's by a
// sixteenth of the retention (a creator's by an eighth) and the keys still
// live the retention after each write.
// Enqueue, a lease, Extend, Retry, Ack and Bury also make the task hash
// live at least the retention (plus any delay) from now, never shorter
// than it would. Retention must therefore exceed the longest time a task
// can wait in the queue or run without reporting progress.
//
// Saving a checkpoint (SaveCheckpoint) is a write of the task too: it
// moves exp under the same rule, and gives the checkpoints hash the time
// exp then has. An Append that moves exp later does not move the
// checkpoints hash, so checkpoints live at least the retention after
// they were saved and expire no later than the other keys of their task.
//
// # Scripts
//
// What must be atomic runs as Lua scripts, one file per script in the
// package's lua directory, embedded in the binary. Each file opens with
// its contract: its KEYS, its ARGV and what it returns. Code that several
// scripts share (the server's clock, recording events, releasing a lease,
// scheduling a task, pruning dead letters) is written once, as a fragment
// in lua/lib, which a script takes in with a line "--@include lib/<name>"
// (see script.go).
//
// Scripts run by their SHA-1 (EVALSHA), so that their text is not sent
// with every call. When Redis does not have a script (after a restart, a
// SCRIPT FLUSH, or a failover to a replica that never ran it), the call
// fails with NOSCRIPT without running anything, and the script is sent
// whole (EVAL) in a second round trip. No command that depends on a
// script having run is sent behind it: only commands that extend a task
// hash's expiry or read a flag, harmless either way. That is why
// CreateAndEnqueue queues its tasks inside its script, delayed ones too;
// only on a Redis Cluster client, where the queue's keys are on another
// slot, does it queue them with commands behind the script, which it then
// sends whole, as it cannot be missing.
//
// # Queue
//
// Enqueue writes the task record and adds the task to the stream (or the
// delayed set) in one round trip, in one script on a single Redis, so
// that no record is left without its queue entry. A queue.Broker whose store is this
// Backend (a nil store, see queue.NewBroker) enqueues through
// CreateAndEnqueue, whose one script records the progress snapshot and
// the record and queues the task: start-task costs one round trip.
//
// Fetch runs one script that moves due delayed tasks into the stream,
// takes over entries whose lease has passed (a dead worker's tasks run
// again, with a higher attempt) and reads new entries through the consumer
// group; each entry taken gets a new lease number, and its token (entry id
// and number) a deadline in the leases set; the same script increments each task's attempt and reads its
// record, so that a Fetch that finds work costs one round trip. (A Redis
// Cluster client, whose scripts may only touch the keys of one slot, reads
// the records in a second, pipelined round trip.) When the script has
// taken every task that was ready, it also says how to wait for the next:
// after which entries of the stream and of the wake stream, and until
// when: the next delayed task is due (to the millisecond), the next lease
// passes, or a second has gone by. The backend keeps that plan for the
// worker's next Fetch, which sends a blocking XREAD on both streams and
// the script together, in one round trip: Redis runs the script as soon as
// the XREAD returns. So a worker that waits for work takes each task with
// one round trip and one script, where it took an empty look, a wait and
// a second look. A plan is not trusted beyond its second: a task delayed
// to less than a second from now (a close RunAt, a short retry backoff)
// adds an entry to the wake stream, so that waiting fetchers look again
// and learn its due time, and one delayed for longer is not due before
// the plan runs out.
//
// The script that a new entry wakes is a quick look while the plan holds:
// it reads new entries only, and leaves the delayed set and the leases
// alone (two commands fewer per task), which the plan says hold nothing
// due before its time. A wait that an entry of the wake stream ended is
// followed at once by a full look, and so is every look that does not end
// a wait; so the delayed set and the leases are looked at when the plan
// says, a second at most after the last full look, and when something
// wakes the fetchers, as often as by a worker that only waits.
//
// With Config.FetchDelay set, a Fetch whose plan says to wait, of a worker that has been
// taking at least four tasks per FetchDelay, first sleeps until
// FetchDelay has passed since it last took tasks (the plan's time at
// most), holding nothing, and then waits and takes as
// above: the tasks that arrived meanwhile go in one round trip and one
// script, and, ending together, tend to share their ends' scripts too. A
// worker taking tasks more slowly waits at once, so that a task that
// comes alone is picked up within a round trip.
//
// The XREAD changes nothing. A Fetch whose context is cancelled while it
// waits ends the wait with an entry in the wake stream and takes the
// script's answer, so a task is never leased by a Fetch that has stopped
// listening; what that last look leased is returned although the context
// has ended (a worker runs it).
//
// Each worker name is a consumer of the stream's group. A worker that
// stops gracefully retires (queue.Retirer): its consumer is deleted unless
// it still holds an entry, and so is every consumer that holds nothing and
// has been idle for a minute (those of workers that died), so the group
// does not fill up with the names of past workers.
//
// # Batching
//
// Under load most of the client's time per task goes to sending commands,
// and a script call carries a fixed cost on both sides. So calls of the
// hot operations made while another of the same kind is in flight wait for
// it and then go together: CreateAndEnqueue, Append, Ack, AppendAndAck
// and SaveCheckpoint each send one script for all the calls that were
// waiting (up to 128 calls, or 4096 script arguments; a checkpoint
// weighs one more argument per 16 KiB of output), in one round trip, and Snapshot sends
// the reads of all the calls waiting in one pipeline. A call made while
// none is in flight runs at once on its caller's goroutine, so a lone
// caller pays nothing for batching; each call still gets its own result,
// and a call whose context ends before its batch is sent is left out of
// it. AppendAndAck records a task's last events and releases its lease
// in one script, so a worker whose store is this Backend (a nil store,
// see queue.NewWorker) ends a successful task in one round trip. With 256 flows
// running at once, a task costs about a tenth of a round trip in all. A
// Fetch leases at most 128 tasks per call, for the same reason: a
// worker with more free slots fetches again at once.
//
// At a low rate nothing is shared, and a task costs three round trips:
// CreateAndEnqueue, the Fetch that waits for it and takes it, and
// AppendAndAck; three scripts, each sent by its SHA-1. Releasing a lease
// removes it from the consumer group's pending list and the lease
// bookkeeping, and trims the stream only once per hundred leases (when it
// releases one whose number is a multiple of a hundred): finding the
// oldest entry still in use costs two commands, which every
// acknowledgement paid when the queue was idle.
//
// With Config.EnqueueDelay, a CreateAndEnqueue made while none is in
// flight does not go at once: it lingers up to that long (half the time
// its context has left at most) for others to join it, as Nagle's
// algorithm does, and they go as one batch, in one script, one round trip
// and one ZADD into each index set. The linger ends early when the batch
// is full, when Close is called, and for a caller whose context ends
// (its call is left out; the others go at once). Calls made while a batch
// is in flight go together right after it, without lingering, unless
// there is only one: a call that would go alone lingers as a first call
// does. The creates of a lingered batch arrive
// together, so a waiting worker takes them in one Fetch.
//
// With Config.AckDelay, an AppendAndAck or Ack made while none is in
// flight lingers in the same way: the tasks of one Fetch end a few
// milliseconds apart, and their ends then go in one script, one XACK and
// one ZADD into each index set instead of one each. With both delays, a
// task's create, fetch and end are all shared at a low rate, and a task
// costs Redis about what it costs under load (see BENCHMARKS.md); each
// start then returns up to EnqueueDelay later, and each end is recorded
// up to AckDelay later.
//
// # Dead letters
//
// Bury acknowledges a task as Ack does and, in the same script, adds it to
// the queue's dead set and buried hash; Dead lists them, newest first, and
// Requeue takes one out and queues its replacement in one script, so of two
// concurrent re-queues of one task only one succeeds. The replacement's
// record is written before that script, with its id in the queue's
// starting set: a re-queue cut in between leaves the dead task in the set,
// to be re-queued again, and its new task is ended as FAILURE by the
// workers' sweep of cut starts (see Starts taken in steps, below).
// Entries older than the retention are pruned by Bury and Dead, and both
// keys expire a retention after the last Bury: the dead-letter set holds
// at most the tasks buried within one retention period.
//
// Lease deadlines are kept per lease, not derived from the consumer
// group's idle times, so that workers with different lease lengths share
// a queue correctly; and a lease's token, "<entry id>/<lease number>",
// tells a current lease from a stale one even when the same worker name
// took the entry again. Extend, Ack and Retry each run a script that
// checks the token and fail with queue.ErrLeaseLost when it no longer
// matches. Extend also reads the task record's cancelled flag in the
// same round trip and reports it with queue.ErrCancelled, so that a
// worker whose pub/sub connection missed a cancellation (it was
// reconnecting) stops the run at its next heartbeat. Delivery is at least
// once.
//
// # Progress
//
// Append validates the events, then one Lua script checks that the task
// exists and has not finished, adds the events to the task's event log as
// one list element (which gives them their ids), folds them into the
// snapshot, refreshes the expiry when due and publishes them on the task's
// channel: one round trip (shared with the Appends made meanwhile), all or
// nothing for each call.
//
// Live messages and cancellations travel on shard channels (SPUBLISH,
// SSUBSCRIBE), which Redis Cluster routes by slot as it routes keys. Each
// Backend holds one pub/sub connection per node that serves its channels,
// for all its live subscriptions and cancellation listeners, whatever
// their number: one in all on a single Redis or through Sentinel, at most
// one per master of a cluster (and for a moment a second one beside it,
// see below). A subscription first
// registers for live messages, then reads the backlog from the event log,
// then follows the live messages; each message names the event before it,
// so a subscription that sees a gap (or whose pub/sub connection was lost
// and restored) reads what it missed from the log. Events reach each
// subscriber once, in order, with no gap, and a slow subscriber delays no
// one: what it has not taken yet is buffered for it, and past a bound it
// re-reads from the log instead.
//
// A channel whose last listener left is not unsubscribed (rueidis cannot
// follow an SUNSUBSCRIBE while Redis refuses PING, as it does when it
// cannot save to disk, and ends the process): it stays subscribed, its
// messages ignored, until the connection holds more such channels than
// 1,000 or than the channels listened to, or has held one for a minute.
// Then a new connection subscribes the channels listened to, and the old
// one is closed: nothing is missed, and a message published in between
// arrives on both, which a subscription skips (a cancellation listener
// may get an id twice). The old connection must answer a command sent
// once the new one is subscribed, or the subscriptions read the event
// log: it may have stopped delivering before (killed, or silent after a
// network cut).
//
// # Starts taken in steps
//
// A start that records its task and queues it in separate steps, cut
// between them (its process dies, Redis answers an error), would leave a
// PENDING task that no worker runs, whose id the caller did not get
// (though a retry with the same idempotency key would). Such are every
// start on a Cluster client, a start of a task of a limited flow (its
// record, then the admit script that puts it in its flow's gate) and
// every Requeue (the new task's record, then requeue.lua). Each first
// adds the task's id to the queue's starting set (on a single Redis in
// the record's round trip, before it), and the step that queues the task
// marks it done there. The heartbeats of the workers find the ids that
// have stayed in the set for over a minute (ten times Config.OpTimeout if
// longer) and end their tasks as FAILURE, with the status "Not started:
// its start was interrupted before the task was queued", unless a worker
// has leased the task since (see starts.go and lua/end_cut.lua). On a
// single Redis this costs no round trip: two commands per start of a
// limited flow and per Requeue. A start of a flow without limits on a
// single Redis is one script and takes none of this.
//
// # Redis Cluster and Sentinel
//
// A Backend works the same on every kind of rueidis client: a single
// Redis, a primary found through Sentinel (rueidis.ClientModeSentinel) or
// a Redis Cluster (rueidis.ClientModeCluster); rueidis.ParseURL chooses
// from the address list of a URL (see the README). On a Cluster client,
// where a script may only touch the keys of one slot:
//
//   - batched calls go one by one (each script acts on one task's keys);
//   - a task's record is written before its queue entry is added, and a
//     Fetch reads the records of the tasks it leased in a second round
//     trip, since the task's keys and the queue's live on different nodes
//     whose commands a pipeline does not order;
//   - a start (CreateAndEnqueue, Enqueue) is taken in steps (see Starts
//     taken in steps, above): the task's id goes into the queue's
//     starting set, then the record is written, then the task is queued
//     and its start marked done: three round trips for Enqueue and
//     Requeue, two for CreateAndEnqueue, which marks and records in one
//     (see beginAndRecord);
//   - AppendAndAck appends, then acknowledges;
//   - rueidis follows MOVED and ASK redirections; commands the cluster
//     refuses without running them, TRYAGAIN (a script on the keys of a
//     slot whose keys are moving to another node) and CLUSTERDOWN (a
//     failover under way), are sent again after a short pause until
//     Config.OpTimeout, and then fail as not run (see When Redis goes
//     away, below);
//   - the pub/sub connections follow the slots: the Backend reads which
//     master serves each slot (CLUSTER SLOTS) and subscribes each channel
//     on its master; when a slot moves (a resharding, a failover), Redis
//     ends the channel's subscription, or answers MOVED, or the master's
//     connection is lost, and the Backend subscribes the channel on the
//     slot's new master; its subscriptions then read what they missed
//     from their event logs.
//
// Through Sentinel, rueidis follows the primary across a failover; the
// pub/sub connection is lost with the old primary and restored on the new
// one, as after a restart. Redis replicates asynchronously: what the old
// primary had accepted but not yet sent to the replica is lost with it.
//
// # Durable mode
//
// Config.WaitReplicas (durable mode) closes that window for the tasks:
// the writes that accept a task (Enqueue, CreateAndEnqueue, Requeue) are
// followed, in the same round trip, by WAIT, and an enqueue returns only
// once that many replicas have it, or fails with queue.ErrUnavailable
// after Config.WaitTimeout (then the primary may still run the task: a
// caller that retries may start it twice, which Idempotency-Key
// prevents). The writes that end or give back a lease (Ack, AppendAndAck,
// Bury, Retry) wait too, so that a failover does not run a finished task
// again; one not confirmed in time is logged, not failed. Progress events
// do not wait: a failover may lose the last events of a running task (not
// its end), and their ids are then given again to the events that follow,
// so a watcher that had seen the lost ones misses as many of the next
// (each default SSE message carries the whole snapshot, so what it shows
// catches up with the next one). While
// fewer replicas than WaitReplicas are in sync (after a failover, until
// the old primary is back as a replica), every enqueue fails: durable
// mode prefers refusing a task to losing one. A Redis Cluster client does
// not take it.
//
// # When Redis goes away
//
// Errors that come from not reaching Redis wrap queue.ErrUnavailable, for
// the progress methods as well, so that the HTTP layer can answer 503.
// Those of a connection that could not be made (Redis refused it, or the
// attempt timed out: the command was not sent) wrap progress.ErrNotSent
// too, and so do the error replies of a server that refuses a command
// before running it while a client follows a failover or a restart
// (READONLY, LOADING, MASTERDOWN), while another script runs past the
// server's busy-reply-threshold (BUSY), on a cluster while a slot
// moves or a failover is under way for longer than Config.OpTimeout
// (TRYAGAIN, CLUSTERDOWN), or while the server takes no writes: its used
// memory is past its maxmemory, with the policy noeviction (OOM),
// fewer replicas than its min-replicas-to-write are in sync
// (NOREPLICAS), or it cannot persist to disk: its last RDB save failed
// (with stop-writes-on-bgsave-error yes, the default) or a write to its
// append-only file did (MISCONF). Those wrap queue.ErrUnavailable as
// well, and the errors of the last three say what to do ("Redis is out
// of memory (maxmemory): ...", "Redis cannot save its snapshot to disk
// ..."). A Redis past its maxmemory still takes acknowledgements, which
// free memory, and reads: Snapshot, whose MULTI/EXEC it refuses, reads
// with a script that says no-writes instead; it refuses Fetch whole, so
// that no task is leased whose run could record nothing.
//
// A command on a connection that broke under it, or that got no
// answer in time, may have run: its error does not, but that of an
// append with an append key (progress.WithAppendKey) wraps
// progress.ErrMaybeSent, since the append script records a keyed call
// once (see lua/lib/append.lua). A worker's reporter sends a progress
// report, or a task's start or end, that failed with either again (see
// progress.TaskReporter); an end sent again whose first call ended the
// task is answered as that call was, and AppendAndAck reports the lease
// acknowledged if that call did it (see lua/finish.lua).
// Every operation is bounded by Config.OpTimeout (unless its context ends
// sooner) and fails with queue.ErrUnavailable past it: commands that change
// data fail at once when the connection is refused, but rueidis retries
// read-only ones (Get, Events, Subscribe's existence check) until their
// context ends, and a Redis that hangs answers nothing.
//
// Nothing needs restarting when Redis is back: the client reconnects, the
// pub/sub connection is restored with every channel, and each live
// subscription reads what it missed from its event log, so its reader
// sees a delay, never a gap or a duplicate; workers go on fetching, and a
// task whose outcome could not be recorded while Redis was away is run
// again once its lease passes. What Redis itself loses depends on its
// persistence: with appendonly yes and appendfsync always, nothing
// acknowledged; with everysec, up to a second of writes on a crash;
// without persistence, everything.
package redisbackend
