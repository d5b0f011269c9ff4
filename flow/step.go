package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"

	"github.com/flowsrun/flows/progress"
)

// Errors of Step; check them with errors.Is.
var (
	// ErrDuplicateStep: a step name that has already completed in this
	// run of the task, or that another goroutine is running. Names must
	// tell the steps of one run apart (see Step).
	ErrDuplicateStep = errors.New("flow: step name used twice in one run")
	// ErrInvalidStepName: an empty step name, or one longer than
	// progress.MaxCheckpointKeyLen bytes.
	ErrInvalidStepName = errors.New("flow: invalid step name")
)

// Step runs fn as the step called name of task t, once per task: when an
// earlier attempt of t (a retry, or a run whose worker died) completed a
// step of that name, Step returns the output that attempt recorded, logs
// "<name>: replayed from attempt <n>" to t.Progress, and does not call
// fn (a task re-queued to resume a dead task, see
// queue.RequeueOptions.Resume, replays the dead task's steps too,
// logging "<name>: replayed from task <id>"); otherwise it calls fn and,
// when fn succeeds, records its output before returning it. Go has no
// generic methods, so Step is a function:
//
//	pages, err := flow.Step(ctx, t, "fetch pages", func(ctx context.Context) ([]Page, error) {
//		return fetchPages(ctx, in.URL)
//	})
//	if err != nil {
//		return nil, err
//	}
//	summary, err := flow.Step(ctx, t, "summarize", func(ctx context.Context) (string, error) {
//		return summarize(ctx, model, pages)
//	})
//
// Outputs are recorded as JSON, so T must survive a JSON round trip
// (exported fields, no channels or functions); a replayed output is
// decoded from that JSON. An output holding a string that is not valid
// UTF-8 (use []byte for raw bytes) is not recorded, and the run records
// no later step: JSON would replay it with U+FFFD in place of its bytes
// (see Checkpoints.Record). A step that fails records nothing and runs
// again on the next attempt, as does a step whose recorded output no
// longer decodes into T (its type changed between attempts).
//
// Names follow three rules:
//   - A name identifies a step across the attempts of a task, so it must
//     be the same on every run: "fetch page 3", not a name made from the
//     time or a random value. A step in a loop carries the item it works
//     on ("summarize "+doc.ID), or at least the iteration.
//   - A name is used once per run: a second Step with a name that has
//     completed in this run, or that is running in another goroutine,
//     fails with ErrDuplicateStep without calling fn. A step that failed
//     may be tried again under its name.
//   - Names are compared as they are: 1 to progress.MaxCheckpointKeyLen
//     bytes of any text (ErrInvalidStepName otherwise). Keys beginning
//     with a package path and a slash ("lcflow/") belong to libraries
//     (see Checkpoints.Record).
//
// When the code of a flow changes between two attempts of a task, a step
// whose name and output type stayed the same is replayed, whatever its
// code now does: give it a new name ("summarize v2") to have it run
// again. Steps that were renamed or added run; records of steps that are
// gone are ignored.
//
// Recording costs the checkpoint store one write per completed step (on
// Redis, one round trip and the output's bytes), and reading one read per
// attempt after the first, at its first step; a first attempt reads
// nothing, unless the task resumes a dead task: each of its attempts
// reads the dead task's checkpoints too, and records the steps it
// replays from them as its own. A step whose output cannot be recorded
// because the store is unreachable still returns it; the run then
// records no later step, so that a later attempt never replays a step
// whose earlier steps it runs again. An output that cannot be encoded as
// JSON fails the step with an error wrapping ErrPermanent: it would never
// be recorded.
//
// Without t.Checkpoints (a Task made by hand in a test), Step only calls
// fn. A worker gives every run a Checkpoints (see
// queue.WorkerConfig.Checkpoints).
func Step[T any](ctx context.Context, t *Task, name string, fn func(ctx context.Context) (T, error)) (T, error) {
	var zero T
	c := t.Checkpoints
	if c == nil {
		return fn(ctx)
	}
	if name == "" || len(name) > progress.MaxCheckpointKeyLen {
		return zero, fmt.Errorf("%w: %d bytes (want 1 to %d)", ErrInvalidStepName, len(name), progress.MaxCheckpointKeyLen)
	}
	if !c.claim(name) {
		return zero, fmt.Errorf("%w: %q", ErrDuplicateStep, name)
	}
	var out T
	origin, ok, err := c.ReplayOrigin(ctx, name, &out)
	if err != nil {
		c.release(name)
		return zero, fmt.Errorf("flow: step %q: %w", name, err)
	}
	if ok {
		if t.Progress != nil {
			t.Progress.Log(name + ": replayed from " + origin.String())
		}
		return out, nil
	}
	out, err = fn(ctx)
	if err != nil {
		c.release(name)
		return out, err
	}
	if err := c.Record(ctx, name, out); err != nil {
		return out, fmt.Errorf("flow: step %q: %w", name, err)
	}
	return out, nil
}

// Checkpoints is what one run of a task knows of its steps: the outputs
// earlier attempts recorded (read once, at the first step of an attempt
// after the first), the step names used so far, and the store new
// outputs are recorded in. A worker makes one for each run and hands it
// to the flow in Task.Checkpoints; Step uses it, and so do libraries
// that record steps of their own (flow/lcflow records every model and
// tool call) through Replay and Record.
//
// Its methods are safe for concurrent use. A nil *Checkpoints replays and
// records nothing.
type Checkpoints struct {
	cfg CheckpointsConfig

	mu      sync.Mutex
	loaded  bool
	saved   map[string]progress.Checkpoint
	resumed map[string]progress.Checkpoint // of cfg.ResumeFrom
	claimed map[string]bool
	// stopped is set once a checkpoint could not be recorded: the run
	// records no more, so that the recorded steps stay those that came
	// first.
	stopped bool
}

// CheckpointsConfig says which run of which task a Checkpoints belongs
// to and where it records.
type CheckpointsConfig struct {
	// Store is where outputs are recorded and read from. Nil records and
	// replays nothing, but Step still checks names.
	Store progress.CheckpointStore
	// TaskID and Attempt name the task and the run (Task.ID and
	// Task.Attempt). A first attempt (Attempt 1 or less) reads nothing.
	TaskID  string
	Attempt int
	// ResumeFrom is the dead task that the task resumes
	// (queue.RequeueOptions.Resume), "" for none: every run then reads
	// its checkpoints too, and replays them for the keys the task has
	// not recorded itself (see ReplayOrigin).
	ResumeFrom string
	// Progress, when set, is told in a log entry that the task resumes
	// nothing when task ResumeFrom has no checkpoints (it recorded none,
	// or they expired with it). A worker passes the run's reporter.
	Progress progress.Reporter
	// Flush, when set, is called before each output is recorded, and
	// waits until what the run reported before it has been recorded: a
	// later attempt that replays the step then finds in the task's
	// progress what the step reported (its tool_result, say). A worker
	// passes its reporter's Flush. Its error is ignored: the output is
	// recorded all the same.
	Flush func(ctx context.Context) error
	// MaxOutputBytes is the most bytes of JSON one output may hold to be
	// recorded, as the size of a report is limited (a worker passes its
	// WorkerConfig.MaxReportBytes): a larger output is not recorded, a
	// warning says so, and the run records no more steps (see Record).
	// Zero means progress.DefaultMaxReportBytes (1 MiB); a negative value
	// means no limit.
	MaxOutputBytes int
	// Logger receives what goes wrong. Nil means slog.Default().
	Logger *slog.Logger
}

// NewCheckpoints returns the Checkpoints of one run of a task, as cfg
// describes it.
func NewCheckpoints(cfg CheckpointsConfig) *Checkpoints {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxOutputBytes == 0 {
		cfg.MaxOutputBytes = progress.DefaultMaxReportBytes
	}
	return &Checkpoints{cfg: cfg}
}

// claim marks name as used in this run and reports whether it was free.
func (c *Checkpoints) claim(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.claimed[name] {
		return false
	}
	if c.claimed == nil {
		c.claimed = map[string]bool{}
	}
	c.claimed[name] = true
	return true
}

// release frees name after its step failed.
func (c *Checkpoints) release(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.claimed, name)
}

// Replay decodes into out the output an earlier attempt recorded under
// key and returns that attempt, with ok set; ok is false when no output
// was recorded under key, or when it does not decode into out (out may
// then hold part of it). The first call of a run after the first reads
// the task's checkpoints from the store, and the first call of any run
// of a task that resumes a dead one (CheckpointsConfig.ResumeFrom) reads
// the dead task's too; an error of those reads is
// returned (and the next call reads again), since running the step
// instead might pay for it twice. A first attempt of any other task reads
// nothing. An output replayed from the dead task returns the attempt of
// the dead task that recorded it: ReplayOrigin tells the two apart.
func (c *Checkpoints) Replay(ctx context.Context, key string, out any) (attempt int, ok bool, err error) {
	o, ok, err := c.ReplayOrigin(ctx, key, out)
	return o.Attempt, ok, err
}

// Origin says which run recorded a replayed output (see
// Checkpoints.ReplayOrigin).
type Origin struct {
	// Task is the dead task that recorded it, when the task resumes one
	// (CheckpointsConfig.ResumeFrom); "" for the task itself.
	Task string
	// Attempt is the attempt that recorded it: of Task when Task is set.
	Attempt int
}

// String tells where a replayed output came from, as logs say it:
// "attempt <n>", or "task <id>" for the dead task the task resumes.
func (o Origin) String() string {
	if o.Task != "" {
		return "task " + o.Task
	}
	return "attempt " + strconv.Itoa(o.Attempt)
}

// ReplayOrigin is Replay, returning which run recorded the output. An
// output of the dead task the task resumes (CheckpointsConfig.ResumeFrom),
// for a key the task has not recorded itself, is recorded again as the
// task's own before ReplayOrigin returns, as Record does (a store that
// cannot record it is not an error): checkpoints expire with the task that
// holds them, and a later attempt then finds it even once the dead task's
// are gone.
func (c *Checkpoints) ReplayOrigin(ctx context.Context, key string, out any) (o Origin, ok bool, err error) {
	if c == nil || c.cfg.Store == nil {
		return Origin{}, false, nil
	}
	c.mu.Lock()
	if err := c.loadLocked(ctx); err != nil {
		c.mu.Unlock()
		return Origin{}, false, err
	}
	cp, found := c.saved[key]
	if !found {
		cp, found = c.resumed[key]
		o.Task = c.cfg.ResumeFrom
	}
	c.mu.Unlock()
	if !found {
		return Origin{}, false, nil
	}
	if err := json.Unmarshal(cp.Output, out); err != nil {
		c.cfg.Logger.Info("flows: a recorded step output no longer decodes; running the step again",
			"task_id", c.cfg.TaskID, "step", key, "recorded_by_task", o.Task, "recorded_by_attempt", cp.Attempt, "err", err)
		return Origin{}, false, nil
	}
	o.Attempt = cp.Attempt
	if o.Task != "" {
		c.save(ctx, key, cp.Output)
	}
	return o, true, nil
}

// loadLocked reads, once per run, the checkpoints of the task's earlier
// attempts and of the dead task it resumes; c.mu is held across the
// reads: the steps that wait need them too.
func (c *Checkpoints) loadLocked(ctx context.Context) error {
	if c.loaded {
		return nil
	}
	if c.cfg.Attempt > 1 {
		saved, err := c.cfg.Store.Checkpoints(ctx, c.cfg.TaskID)
		if err != nil {
			return fmt.Errorf("reading the task's checkpoints: %w", err)
		}
		c.saved = saved
	}
	if from := c.cfg.ResumeFrom; from != "" {
		resumed, err := c.cfg.Store.Checkpoints(ctx, from)
		if err != nil && !errors.Is(err, progress.ErrNotFound) {
			return fmt.Errorf("reading the checkpoints of task %s, which the task resumes: %w", from, err)
		}
		// An unknown task is one whose retention has passed. Said once,
		// by the first attempt.
		if len(resumed) == 0 && c.cfg.Attempt <= 1 && c.cfg.Progress != nil {
			c.cfg.Progress.Log("resuming nothing: task " + from + " has no checkpoints (it recorded none, or they have expired)")
		}
		c.resumed = resumed
	}
	c.loaded = true
	return nil
}

// Record records v, encoded as JSON, as the output of the step key, for
// later attempts to replay, once what the run reported before is
// recorded (see CheckpointsConfig.Flush). An output that cannot be encoded is an error
// wrapping ErrPermanent. A store that cannot record it (unreachable, or
// the task has ended) is not an error of the step: the run then records
// nothing more (see Step), and a failure other than the task's end is
// logged. So is an output holding a string that is not valid UTF-8
// (raw bytes in a string): JSON would keep U+FFFD in place of its bytes,
// and a later attempt replay other bytes than the step returned; it is
// not recorded, a warning says so, and the run records nothing more (an
// output whose MarshalJSON writes the escape \ufffd is taken for one).
// So is an output over CheckpointsConfig.MaxOutputBytes: the store would
// take it as it takes a report, and a later attempt runs the step again.
func (c *Checkpoints) Record(ctx context.Context, key string, v any) error {
	if c == nil || c.cfg.Store == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return Permanent(fmt.Errorf("output cannot be recorded as JSON: %w", err))
	}
	if replacedInvalidUTF8(b) {
		// A later attempt would replay U+FFFD where the step returned
		// other bytes: record nothing more, as when the store fails.
		c.stop("flows: step output not recorded: it holds text that is not valid UTF-8, which JSON cannot keep; this run records no more steps, and a later attempt runs them again",
			"task_id", c.cfg.TaskID, "step", key)
		return nil
	}
	if limit := c.cfg.MaxOutputBytes; limit > 0 && len(b) > limit {
		c.stop("flows: step output not recorded: it is over the size limit of a report (WorkerConfig.MaxReportBytes); this run records no more steps, and a later attempt runs them again",
			"task_id", c.cfg.TaskID, "step", key, "bytes", len(b), "limit", limit)
		return nil
	}
	c.save(ctx, key, b)
	return nil
}

// stop makes the run record nothing more, and logs msg with args unless
// it had already stopped.
func (c *Checkpoints) stop(msg string, args ...any) {
	c.mu.Lock()
	stopped := c.stopped
	c.stopped = true
	c.mu.Unlock()
	if !stopped {
		c.cfg.Logger.Warn(msg, args...)
	}
}

// replacedInvalidUTF8 reports whether b, written by json.Marshal, holds
// the escape \ufffd, which encoding/json writes in place of each byte of
// a string that is not valid UTF-8 (a U+FFFD of valid text is written as
// the character itself, and a backslash of the text as \\).
func replacedInvalidUTF8(b []byte) bool {
	const esc = `\ufffd`
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte(esc))
		if i < 0 {
			return false
		}
		i += off
		n := 0 // the backslashes right before it
		for j := i - 1; j >= 0 && b[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return true
		}
		off = i + len(esc)
	}
}

// save records the output b of the step key, unless the run has stopped
// recording, and stops the run's recording when it cannot (see Record).
func (c *Checkpoints) save(ctx context.Context, key string, b json.RawMessage) {
	c.mu.Lock()
	stopped := c.stopped
	c.mu.Unlock()
	if stopped {
		return
	}
	if c.cfg.Flush != nil {
		_ = c.cfg.Flush(ctx)
	}
	err := c.cfg.Store.SaveCheckpoint(ctx, c.cfg.TaskID, progress.Checkpoint{Key: key, Attempt: c.cfg.Attempt, Output: b})
	if err == nil {
		return
	}
	c.mu.Lock()
	c.stopped = true
	c.mu.Unlock()
	if !errors.Is(err, progress.ErrFinished) {
		c.cfg.Logger.Warn("flows: step output not recorded; this run records no more steps, and a later attempt runs them again",
			"task_id", c.cfg.TaskID, "step", key, "err", err)
	}
}
