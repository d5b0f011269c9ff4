package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/registry"
)

// waitLimit bounds every wait of these tests; a guard, not a measurement.
const waitLimit = 20 * time.Second

// fixture is a queue in a real Redis with a worker running its flows:
// "ok" succeeds, "broken" fails for good, "gated" logs a step and then
// waits for a value on gate before it succeeds or, given {"fail": true},
// fails.
type fixture struct {
	srv    *redistest.Server
	prefix string
	broker *queue.Broker
	store  progress.Backend
	gate   chan struct{}
	env    map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	srv := redistest.Start(t)
	f := &fixture{srv: srv, prefix: "cli" + strings.ReplaceAll(queue.NewID()[:8], "-", ""), gate: make(chan struct{})}
	f.env = map[string]string{"REDIS_URL": srv.URL(), "FLOWS_PREFIX": f.prefix}
	b := f.backend(t, "")
	reg := registry.New()
	f.broker, f.store = queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg}), b
	reg.MustRegister("ok", flow.Func(func(context.Context, *flow.Task) (any, error) { return "fine", nil }))
	reg.MustRegister("broken", flow.Func(func(context.Context, *flow.Task) (any, error) {
		return nil, flow.Permanent(errors.New("the model refused"))
	}))
	reg.MustRegister("gated", flow.Func(func(ctx context.Context, t *flow.Task) (any, error) {
		t.Progress.Log("waiting for the gate")
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if strings.Contains(string(t.Inputs), "fail") {
			return nil, flow.Permanent(errors.New("told to fail"))
		}
		return "through", nil
	}))
	runWorker(t, b, queue.WorkerConfig{Name: "cli-test-worker", Registry: reg, Concurrency: 4, Logger: slog.New(slog.DiscardHandler)})
	return f
}

// backend returns a backend on the fixture's Redis and prefix, for the
// queue named ("" for the default one); it closes when the test ends.
func (f *fixture) backend(t *testing.T, queueName string) *redisbackend.Backend {
	t.Helper()
	client, err := rueidis.NewClient(f.srv.ClientOption())
	require.NoError(t, err)
	t.Cleanup(client.Close)
	b, err := redisbackend.New(client, redisbackend.Config{Prefix: f.prefix, Queue: queueName, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// otherQueue points the commands at the queue named, which the
// fixture's worker does not serve, and returns a backend on it and a
// registry with the flow "ok".
func (f *fixture) otherQueue(t *testing.T, name string) (*redisbackend.Backend, *registry.Registry) {
	t.Helper()
	f.env["FLOWS_QUEUE"] = name
	reg := registry.New()
	reg.MustRegister("ok", flow.Func(func(context.Context, *flow.Task) (any, error) { return "fine", nil }))
	return f.backend(t, name), reg
}

// runWorker runs a worker with cfg on b until the test ends.
func runWorker(t *testing.T, b queue.Backend, cfg queue.WorkerConfig) {
	t.Helper()
	w := queue.NewWorker(b, nil, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, w.Run(ctx)) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
}

func (f *fixture) enqueue(t *testing.T, flowName, inputs string, opts queue.EnqueueOptions) string {
	t.Helper()
	time.Sleep(2 * time.Millisecond) // the listings order by the millisecond
	id, err := f.broker.Enqueue(context.Background(), flowName, json.RawMessage(inputs), opts)
	require.NoError(t, err)
	return id
}

// wait polls the task until cond holds for its snapshot.
func (f *fixture) wait(t *testing.T, id string, cond func(progress.Snapshot) bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		snap, _, err := f.store.Snapshot(context.Background(), id)
		return err == nil && cond(snap)
	}, waitLimit, 5*time.Millisecond, "task %s", id)
}

func ended(s progress.Snapshot) bool   { return s.State.Terminal() }
func running(s progress.Snapshot) bool { return len(s.Details.StepResults) > 0 }

// flows runs the command in process and returns its exit code and
// outputs.
func (f *fixture) flows(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errw bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	code = run(ctx, args, &out, &errw, func(k string) string { return f.env[k] })
	return code, out.String(), errw.String()
}

// fetchOne leases the one task ready on b.
func fetchOne(t *testing.T, b queue.Backend) *queue.Lease {
	t.Helper()
	leases, err := b.Fetch(context.Background(), "w", 1, time.Minute)
	require.NoError(t, err)
	require.Len(t, leases, 1)
	return leases[0]
}

// TestHandBacksShown checks that ls and show tell a task's hand-backs
// (runs handed back through no fault of its flow, which do not count)
// apart from its attempts.
func TestHandBacksShown(t *testing.T) {
	f := newFixture(t)
	b, reg := f.otherQueue(t, "handbacks")
	ctx := context.Background()
	id, err := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg}).Enqueue(ctx, "ok", nil, queue.EnqueueOptions{MaxAttempts: 2})
	require.NoError(t, err)
	// Two runs handed back (a shutdown, the store down), the third held.
	for _, why := range []queue.AttemptEnd{queue.EndShutdown, queue.EndStoreDown, ""} {
		l := fetchOne(t, b)
		if why != "" {
			require.NoError(t, b.Retry(ctx, l, time.Now(), why))
		}
	}

	code, out, errs := f.flows(t, "show", id)
	require.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^Attempt:\s+3 of 4, 2 hand-backs not counted$`, out)
	code, out, errs = f.flows(t, "ls")
	require.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^`+id+`\s+ok\s+PENDING\s+0%\s+3/4 \(2 hand-backs\)\s+`, out)
}

// TestHookReRunsShown checks that show and ls count the same runs of a
// task's flow, the leases that only ran its finish hooks again
// (queue.ErrRetryHooks) left out, while it waits to run them again.
func TestHookReRunsShown(t *testing.T) {
	f := newFixture(t)
	b, reg := f.otherQueue(t, "hookreruns")
	ctx := context.Background()
	id, err := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg}).Enqueue(ctx, "ok", nil, queue.EnqueueOptions{MaxAttempts: 3})
	require.NoError(t, err)
	// Two runs of the flow, then its hooks ask to run again five times,
	// the last time in an hour.
	require.NoError(t, b.Retry(ctx, fetchOne(t, b), time.Now(), queue.EndFailed))
	l := fetchOne(t, b)
	for range 4 {
		require.NoError(t, b.Retry(ctx, l, time.Now(), queue.EndHooksPending))
		l = fetchOne(t, b)
	}
	require.NoError(t, b.Retry(ctx, l, time.Now().Add(time.Hour), queue.EndHooksPending))

	code, out, errs := f.flows(t, "show", id)
	require.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^Attempt:\s+2 of 3$`, out)
	code, out, errs = f.flows(t, "ls")
	require.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^`+id+`\s+ok\s+PENDING\s+0%\s+2/3\s+`, out)
}

// TestStatsHooksWaiting checks that stats shows the tasks that have
// ended and wait to run their finish hooks again apart from the delayed
// ones, in the text and in the JSON.
func TestStatsHooksWaiting(t *testing.T) {
	f := newFixture(t)
	// A worker whose finish hook cannot do its work for an hour.
	b, reg := f.otherQueue(t, "hooks")
	runWorker(t, b, queue.WorkerConfig{
		Name: "hooks-worker", Registry: reg, Logger: slog.New(slog.DiscardHandler), Backoff: func(int) time.Duration { return time.Hour },
		OnFinish: []queue.FinishHook{func(context.Context, queue.Finished) error {
			return fmt.Errorf("database away: %w", queue.ErrRetryHooks)
		}},
	})
	id, err := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg}).Enqueue(context.Background(), "ok", nil, queue.EnqueueOptions{})
	require.NoError(t, err)
	f.wait(t, id, ended)

	var out string
	require.Eventually(t, func() bool {
		code, o, errs := f.flows(t, "stats")
		require.Equal(t, exitOK, code, errs)
		out = o
		return strings.Contains(out, " 0 running;")
	}, waitLimit, 5*time.Millisecond, "the task given back for its hooks")
	assert.Contains(t, out, "queue: 0 ready (none waits), 0 delayed, 1 with hooks to re-run, 0 running; 0 dead", out)

	code, out, errs := f.flows(t, "-json", "stats")
	require.Equal(t, exitOK, code, errs)
	var st queue.Stats
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	assert.Equal(t, int64(1), st.HooksWaiting, out)
	assert.Equal(t, int64(0), st.Delayed, out)
}

// TestCommands runs every command in process against a real Redis with
// tasks in every state, and checks what it prints and its exit code.
func TestCommands(t *testing.T) {
	f := newFixture(t)
	ok := f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{})
	f.wait(t, ok, ended)
	broken := f.enqueue(t, "broken", `{}`, queue.EnqueueOptions{})
	f.wait(t, broken, ended)
	gated := f.enqueue(t, "gated", `{}`, queue.EnqueueOptions{})
	f.wait(t, gated, running)
	later := f.enqueue(t, "ok", `{"n":1}`, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)})

	t.Run("ls", func(t *testing.T) {
		code, out, errs := f.flows(t, "ls")
		require.Equal(t, exitOK, code, errs)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		require.Len(t, lines, 5, out)
		assert.Regexp(t, `^ID\s+FLOW\s+STATE\s+PROGRESS\s+ATTEMPT\s+SINCE\s+STATUS$`, lines[0])
		assert.Regexp(t, `^`+later+`\s+ok\s+PENDING\s+0%\s+0/3\s+(just now|\d+ms ago|\ds ago)\s+Queued$`, lines[1])
		assert.Regexp(t, `^`+gated+`\s+gated\s+PROGRESS\s+\d+%\s+1/3\s+`, lines[2])
		assert.Regexp(t, `^`+broken+`\s+broken\s+FAILURE\s+`, lines[3])
		assert.Regexp(t, `^`+ok+`\s+ok\s+SUCCESS\s+100%\s+1/3\s+`, lines[4])
		// The columns line up.
		at := strings.Index(lines[0], "STATE")
		for _, l := range lines[1:] {
			assert.Equal(t, "  ", l[at-2:at], "column STATE in %q", l)
		}

		code, out, _ = f.flows(t, "ls", "-state", "success")
		require.Equal(t, exitOK, code)
		assert.Contains(t, out, ok)
		assert.NotContains(t, out, broken)

		code, out, _ = f.flows(t, "ls", "-limit", "1")
		require.Equal(t, exitOK, code)
		assert.Contains(t, out, later)
		assert.Contains(t, out, "more: flows ls -limit 1 -cursor ")

		code, out, _ = f.flows(t, "-json", "ls", "-limit", "1", "-all")
		require.Equal(t, exitOK, code)
		var page queue.TaskPage
		require.NoError(t, json.Unmarshal([]byte(out), &page), out)
		var ids []string
		for _, s := range page.Tasks {
			ids = append(ids, s.ID)
		}
		assert.Equal(t, []string{later, gated, broken, ok}, ids)
		assert.Empty(t, page.Next)

		code, out, _ = f.flows(t, "ls", "-flow", "nothing")
		require.Equal(t, exitOK, code)
		assert.Equal(t, "no tasks\n", out)
	})

	t.Run("show", func(t *testing.T) {
		code, out, errs := f.flows(t, "show", ok)
		require.Equal(t, exitOK, code, errs)
		for _, want := range []string{"ID:", ok, "Flow:", "State:", "SUCCESS", "Attempt:", "1 of 3", "Enqueued:", "Started:", "Ended:", `Result: "fine"`} {
			assert.Contains(t, out, want)
		}
		code, out, _ = f.flows(t, "show", gated)
		require.Equal(t, exitOK, code)
		assert.Contains(t, out, "Steps:\n  1. waiting for the gate\n")

		code, out, _ = f.flows(t, "-json", "show", broken)
		require.Equal(t, exitOK, code)
		var shown struct {
			Task     queue.Task        `json:"task"`
			Snapshot progress.Snapshot `json:"snapshot"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &shown), out)
		assert.Equal(t, "broken", shown.Task.Flow)
		assert.Equal(t, progress.StateFailure, shown.Snapshot.State)

		code, _, errs = f.flows(t, "show", queue.NewID())
		assert.Equal(t, exitFailed, code)
		assert.Contains(t, errs, "task not found")
	})

	t.Run("stats", func(t *testing.T) {
		code, out, errs := f.flows(t, "stats")
		require.Equal(t, exitOK, code, errs)
		assert.Regexp(t, `(?m)^all\s+1\s+1\s+1\s+1$`, out)
		assert.Regexp(t, `(?m)^ok\s+1\s+0\s+1\s+0$`, out)
		assert.Contains(t, out, "queue: 0 ready (none waits), 1 delayed, 0 with hooks to re-run, 1 running; 1 dead")
		assert.Contains(t, out, "last minute: 1 succeeded, 1 failed")
		assert.Regexp(t, `(?m)^cli-test-worker\s+\S+\s+\d+\s+4\s+\d+\s+.*\s+yes$`, out)

		code, out, _ = f.flows(t, "-json", "stats")
		require.Equal(t, exitOK, code)
		var st map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &st), out)
		assert.Contains(t, st, "last_minute")
		assert.Equal(t, 0.0, st["hooks_waiting"], out)
	})

	t.Run("dead and requeue", func(t *testing.T) {
		code, out, errs := f.flows(t, "dead")
		require.Equal(t, exitOK, code, errs)
		assert.Regexp(t, `(?m)^`+broken+`\s+broken\s+1\s+.*the model refused$`, out)

		code, out, errs = f.flows(t, "requeue", broken)
		require.Equal(t, exitOK, code, errs)
		assert.Regexp(t, `^`+broken+` requeued as [0-9a-f]{32}\n$`, out)

		code, out, errs = f.flows(t, "-json", "requeue", broken, queue.NewID())
		assert.Equal(t, exitFailed, code)
		var results []map[string]string
		require.NoError(t, json.Unmarshal([]byte(out), &results), out)
		require.Len(t, results, 2)
		assert.Equal(t, "not in the dead-letter set", results[0]["error"])
		assert.Equal(t, "not found", results[1]["error"])
		assert.Contains(t, errs, "2 of 2 tasks failed")
	})

	t.Run("requeue -resume", func(t *testing.T) {
		dead := f.enqueue(t, "broken", `{}`, queue.EnqueueOptions{})
		f.wait(t, dead, ended)
		var newID string
		require.Eventually(t, func() bool {
			code, out, _ := f.flows(t, "requeue", "-resume", dead)
			m := regexp.MustCompile(`^` + dead + ` requeued as ([0-9a-f]{32}), resuming its completed steps\n$`).FindStringSubmatch(out)
			if code != exitOK || m == nil {
				return false
			}
			newID = m[1]
			return true
		}, 10*time.Second, 10*time.Millisecond, "the dead task was not buried, or not re-queued")
		code, out, errs := f.flows(t, "show", newID)
		require.Equal(t, exitOK, code, errs)
		assert.Regexp(t, `(?m)^Requeued from:\s+`+dead+` \(resumed\)$`, out)
		code, out, _ = f.flows(t, "-json", "show", newID)
		require.Equal(t, exitOK, code)
		var shown struct {
			Task queue.Task `json:"task"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &shown), out)
		assert.Equal(t, dead, shown.Task.RequeuedFrom)
		assert.True(t, shown.Task.Resume)
		code, _, errs = f.flows(t, "requeue", "-resume")
		assert.Equal(t, exitUsage, code, errs)

		// A flag after the ids is refused before any task is touched: the
		// flag package stops at the first id, and would take -resume for
		// one and requeue the task without it.
		second := f.enqueue(t, "broken", `{}`, queue.EnqueueOptions{})
		f.wait(t, second, ended)
		require.Eventually(t, func() bool {
			code, out, _ := f.flows(t, "dead")
			return code == exitOK && strings.Contains(out, second)
		}, 10*time.Second, 10*time.Millisecond, "the dead task was not buried")
		code, out, errs = f.flows(t, "requeue", second, "-resume")
		assert.Equal(t, exitUsage, code, errs)
		assert.Contains(t, errs, "-resume")
		assert.Empty(t, out)
		code, out, errs = f.flows(t, "dead")
		require.Equal(t, exitOK, code, errs)
		assert.Contains(t, out, second, "still dead")
	})

	t.Run("cancel", func(t *testing.T) {
		code, out, errs := f.flows(t, "cancel", "-state", "pending")
		require.Equal(t, exitOK, code, errs)
		assert.Contains(t, out, "cancelled "+later)
		assert.Contains(t, out, "1 cancelled")

		code, _, errs = f.flows(t, "cancel", ok)
		assert.Equal(t, exitFailed, code)
		assert.Contains(t, errs, ok+": already finished")

		code, out, errs = f.flows(t, "cancel", gated)
		require.Equal(t, exitOK, code, errs)
		assert.Equal(t, "cancelled "+gated+"\n", out)
		f.wait(t, gated, ended)
	})

	t.Run("usage errors", func(t *testing.T) {
		for _, args := range [][]string{
			{}, {"nope"}, {"ls", "-state", "DONE"}, {"ls", "-limit", "0"}, {"ls", "extra"},
			{"show"}, {"show", "a", "b"}, {"cancel"}, {"cancel", "-flow", "ok", ok},
			{"cancel", "-state", "SUCCESS"}, {"dead", "-limit", "0"}, {"requeue"}, {"-bogus", "ls"},
			{"-redis", "nope://x", "ls"},
			{"ls", "-since", "yesterday"}, {"ls", "-until", "-1h"}, {"ls", "-since", "2026-12-06"},
			{"ls", "-since", "1h", "-until", "2h"},
			{"cancel", "-since", "yesterday"}, {"cancel", "-owner", "ada", "-until", "-1h"},
			{"cancel", "-since", "1h", "-until", "2h"}, {"cancel", "-owner", "ada", ok},
			{"cancel", "-owner", "ada", "-cursor", "bogus"}, {"cancel", "-cursor", "PENDING:"},
			{"cancel", ok, "-state", "pending"}, {"cancel", ok, "--flow=ok"}, {"show", ok, "-follow"},
		} {
			code, _, errs := f.flows(t, args...)
			assert.Equal(t, exitUsage, code, "flows %q: %s", args, errs)
			assert.NotEmpty(t, errs, "flows %q says why", args)
		}
		code, _, errs := run(context.Background(), []string{"ls"}, &bytes.Buffer{}, &bytes.Buffer{}, func(string) string { return "" }), "", ""
		assert.Equal(t, exitUsage, code, "without Redis: %s", errs)
	})
}

// TestSubcommandHelp checks that a subcommand's -h prints the usage and
// exits 0 without asking for Redis, as flows -h does, and that a "--"
// ends the flags looked at.
func TestSubcommandHelp(t *testing.T) {
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{{"-h"}, {"ls", "-h"}, {"show", "-help"}, {"requeue", "-resume", "--help"}, {"cancel", "-state", "pending", "-h"}, {"show", "some-id", "-h"}, {"ls", "-owner", "ada", "--help"}, {"cancel", "-owner", "--", "some-id", "-h"}} {
		var out, errw bytes.Buffer
		code := run(context.Background(), args, &out, &errw, noEnv)
		assert.Equal(t, exitOK, code, "flows %q: %s", args, errw.String())
		assert.Contains(t, out.String(), "usage: flows", "flows %q", args)
		assert.Empty(t, errw.String(), "flows %q", args)
	}
	// A flag's value that reads "-h" is a value, and after "--", -h is
	// an argument: neither asks for help, so without Redis each is a
	// usage error.
	for _, args := range [][]string{{"show", "--", "-h"}, {"ls", "-owner", "-h"}, {"cancel", "-flow", "-help"}, {"show", "-follow", "--", "-h"}} {
		var out, errw bytes.Buffer
		code := run(context.Background(), args, &out, &errw, noEnv)
		assert.Equal(t, exitUsage, code, "flows %q", args)
		assert.Contains(t, errw.String(), "no Redis", "flows %q", args)
		assert.Empty(t, out.String(), "flows %q", args)
	}
}

// TestOwnerNamedLikeHelp checks that ls -owner -h lists the tasks of the
// owner "-h" (a value that reads like the help flag), and does not print
// the usage.
func TestOwnerNamedLikeHelp(t *testing.T) {
	f := newFixture(t)
	id := f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{Owner: "-h"})
	f.wait(t, id, ended)
	other := f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{Owner: "ada"})
	f.wait(t, other, ended)
	code, out, errs := f.flows(t, "-json", "ls", "-owner", "-h")
	require.Equal(t, exitOK, code, errs)
	var page queue.TaskPage
	require.NoError(t, json.Unmarshal([]byte(out), &page), out)
	require.Len(t, page.Tasks, 1, out)
	assert.Equal(t, id, page.Tasks[0].ID)
}

// TestListByOwnerAndTime checks ls -owner, -since and -until: RFC 3339
// times or durations ago, the filters repeated in the line that lists
// the next page, and the JSON of the same form.
func TestListByOwnerAndTime(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for _, owner := range []string{"ada", "bob", "ada", "bob", "ada"} {
		id := f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{Owner: owner})
		f.wait(t, id, ended)
		ids = append(ids, id)
	}
	listed := func(args ...string) []string {
		t.Helper()
		code, out, errs := f.flows(t, append([]string{"-json", "ls"}, args...)...)
		require.Equal(t, exitOK, code, errs)
		var page queue.TaskPage
		require.NoError(t, json.Unmarshal([]byte(out), &page), out)
		var got []string
		for _, s := range page.Tasks {
			got = append(got, s.ID)
		}
		return got
	}
	assert.Equal(t, []string{ids[4], ids[2], ids[0]}, listed("-owner", "ada"))
	assert.Equal(t, []string{ids[3], ids[1]}, listed("-owner", "bob", "-all", "-limit", "1"))
	assert.Empty(t, listed("-owner", "nobody"))
	assert.Len(t, listed("-since", "1h"), 5, "a duration ago")
	assert.Empty(t, listed("-until", "1h"))

	// The times the tasks ended bound a range: since that of ids[1],
	// until that of ids[3].
	var page queue.TaskPage
	code, out, errs := f.flows(t, "-json", "ls")
	require.Equal(t, exitOK, code, errs)
	require.NoError(t, json.Unmarshal([]byte(out), &page))
	require.Len(t, page.Tasks, 5)
	endOf := func(i int) string { return page.Tasks[4-i].EndedAt.UTC().Format(time.RFC3339Nano) }
	assert.Equal(t, []string{ids[2], ids[1]}, listed("-since", endOf(1), "-until", endOf(3)))
	assert.Equal(t, []string{ids[2]}, listed("-owner", "ada", "-since", endOf(1), "-until", endOf(3)))

	code, out, errs = f.flows(t, "ls", "-owner", "ada", "-since", endOf(0), "-limit", "1")
	require.Equal(t, exitOK, code, errs)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Regexp(t, `^ID\s+FLOW\s+STATE\s+PROGRESS\s+ATTEMPT\s+SINCE\s+STATUS$`, lines[0])
	assert.Regexp(t, `^`+ids[4]+`\s+ok\s+SUCCESS\s+`, lines[1])
	assert.Regexp(t, `^more: flows ls -owner ada -since `+regexp.QuoteMeta(endOf(0))+` -limit 1 -cursor \S+$`, lines[2])
	// The line lists the next page, of the same size.
	args := strings.Fields(strings.TrimPrefix(lines[2], "more: flows "))
	code, out, errs = f.flows(t, args...)
	require.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^`+ids[2]+`\s+ok\s+SUCCESS\s+`, out)
	assert.NotContains(t, out, ids[1])
	assert.NotContains(t, out, ids[0], "one task a page, as the first")
	assert.Contains(t, out, "more: flows ls -owner ada -since "+endOf(0)+" -limit 1 -cursor ")
}

// TestMoreLineKeepsGlobalFlags checks that the line ls prints for the
// next page repeats -prefix and -queue when they were given as flags (not
// from the environment), so that pasted it reads the same keys, and never
// -redis, whose URL may hold a password.
func TestMoreLineKeepsGlobalFlags(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for range 2 {
		id := f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{})
		f.wait(t, id, ended)
		ids = append(ids, id)
	}
	delete(f.env, "FLOWS_PREFIX")
	code, out, errs := f.flows(t, "-redis", f.env["REDIS_URL"], "-prefix", f.prefix, "-queue", redisbackend.DefaultQueue, "ls", "-limit", "1")
	require.Equal(t, exitOK, code, errs)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 3, out)
	assert.Regexp(t, `^`+ids[1]+`\s`, lines[1])
	want := "more: flows -prefix " + f.prefix + " -queue " + redisbackend.DefaultQueue + " ls -limit 1 -cursor "
	require.True(t, strings.HasPrefix(lines[2], want), "%q does not start with %q", lines[2], want)
	assert.NotContains(t, lines[2], "-redis", "given on the command line, -redis is still left out")
	assert.NotContains(t, lines[2], f.env["REDIS_URL"])

	code, out, errs = f.flows(t, strings.Fields(strings.TrimPrefix(lines[2], "more: flows "))...)
	require.Equal(t, exitOK, code, errs)
	assert.Regexp(t, `(?m)^`+ids[0]+`\s`, out, "the pasted line lists the next page of the same keys")

	// From the environment, the flags stay out of the line.
	f.env["FLOWS_PREFIX"] = f.prefix
	code, out, errs = f.flows(t, "ls", "-limit", "1")
	require.Equal(t, exitOK, code, errs)
	assert.Contains(t, out, "more: flows ls -limit 1 -cursor ")
}

// TestCancelByOwnerAndTime checks cancel -owner, -since and -until: the
// filters as ls takes them, the line that goes on where a call stopped
// (the filters, the limit and the cursor), and the JSON of the result.
func TestCancelByOwnerAndTime(t *testing.T) {
	f := newFixture(t)
	var ids []string
	for _, owner := range []string{"ada", "bob", "ada", "bob", "ada"} {
		ids = append(ids, f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{Owner: owner, RunAt: time.Now().Add(time.Hour)}))
	}
	code, out, errs := f.flows(t, "cancel", "-owner", "ada", "-until", "1h")
	require.Equal(t, exitOK, code, errs)
	assert.Equal(t, "0 cancelled\n", out, "every task was enqueued in the last hour")

	code, out, errs = f.flows(t, "cancel", "-owner", "ada", "-since", "1h", "-limit", "2")
	require.Equal(t, exitOK, code, errs)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 4, out)
	assert.Equal(t, []string{"cancelled " + ids[4], "cancelled " + ids[2], "2 cancelled"}, lines[:3])
	assert.Regexp(t, `^more are left: flows cancel -owner ada -since \S+ -limit 2 -cursor \S+$`, lines[3])
	// The line goes on where the call stopped.
	args := strings.Fields(strings.TrimPrefix(lines[3], "more are left: flows "))
	code, out, errs = f.flows(t, args...)
	require.Equal(t, exitOK, code, errs)
	assert.Equal(t, "cancelled "+ids[0]+"\n1 cancelled\n", out)

	code, out, errs = f.flows(t, "-json", "cancel", "-owner", "bob", "-until", time.Now().Add(time.Minute).UTC().Format(time.RFC3339))
	require.Equal(t, exitOK, code, errs)
	var res queue.CancelResult
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	assert.Equal(t, queue.CancelResult{Cancelled: []string{ids[3], ids[1]}}, res)
	for _, id := range ids {
		f.wait(t, id, ended)
	}
}

// TestCancelAlreadyAsked checks that cancel by filter lists the tasks
// asked to stop before apart from those it cancels, in the text and in
// the JSON.
func TestCancelAlreadyAsked(t *testing.T) {
	f := newFixture(t)
	later := func() string { return f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{RunAt: time.Now().Add(time.Hour)}) }
	asked, fresh := later(), later()
	// The flag an earlier cancellation set, before it could end the task.
	require.NoError(t, f.srv.Do("HSET", f.prefix+":{"+asked+"}:task", "cancelled", "1").Error())

	code, out, errs := f.flows(t, "cancel", "-flow", "ok")
	require.Equal(t, exitOK, code, errs)
	assert.Equal(t, "cancelled "+fresh+"\nalready asked to stop "+asked+"\n1 cancelled\n1 already asked to stop\n", out)
	for _, id := range []string{asked, fresh} {
		f.wait(t, id, ended)
	}

	asked = later()
	require.NoError(t, f.srv.Do("HSET", f.prefix+":{"+asked+"}:task", "cancelled", "1").Error())
	code, out, errs = f.flows(t, "-json", "cancel", "-state", "PENDING")
	require.Equal(t, exitOK, code, errs)
	var res queue.CancelResult
	require.NoError(t, json.Unmarshal([]byte(out), &res), out)
	assert.Equal(t, queue.CancelResult{Cancelled: []string{}, AlreadyCancelled: []string{asked}}, res)
	f.wait(t, asked, ended)
}

// TestShowFollow follows tasks live to their end: the exit code says how
// each ended.
func TestShowFollow(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, inputs string
		code         int
		last         string
	}{
		{"success", `{}`, exitOK, `SUCCESS  Completed  result: "through"`},
		{"failure", `{"fail":true}`, exitFailure, "FAILURE  told to fail"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := f.enqueue(t, "gated", tc.inputs, queue.EnqueueOptions{})
			f.wait(t, id, running)
			var code int
			var out string
			done := make(chan struct{})
			go func() {
				defer close(done)
				code, out, _ = f.flows(t, "show", "-follow", id)
			}()
			// Let the command print the task and subscribe to its live
			// events, then let it end.
			f.subscribed(t, id)
			f.gate <- struct{}{}
			select {
			case <-done:
			case <-time.After(waitLimit):
				require.FailNow(t, "show -follow did not end with the task")
			}
			assert.Equal(t, tc.code, code, out)
			assert.Contains(t, out, "State:")
			lines := strings.Split(strings.TrimSpace(out), "\n")
			assert.Contains(t, lines[len(lines)-1], tc.last, out)
		})
	}
	// A task that has ended already: nothing to follow.
	id := f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{})
	f.wait(t, id, ended)
	code, out, _ := f.flows(t, "-json", "show", "-follow", id)
	assert.Equal(t, exitOK, code, out)
}

// TestBinary builds the command and runs it as a user would, with
// REDIS_URL in its environment.
func TestBinary(t *testing.T) {
	f := newFixture(t)
	id := f.enqueue(t, "ok", `{}`, queue.EnqueueOptions{})
	f.wait(t, id, ended)
	bin := filepath.Join(t.TempDir(), "flows")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run(), "go build")

	cmd := exec.Command(bin, "-json", "ls", "-state", "SUCCESS")
	cmd.Env = append(os.Environ(), "REDIS_URL="+f.env["REDIS_URL"], "FLOWS_PREFIX="+f.prefix)
	out, err := cmd.Output()
	require.NoError(t, err)
	var page queue.TaskPage
	require.NoError(t, json.Unmarshal(out, &page), "%s", out)
	require.Len(t, page.Tasks, 1)
	assert.Equal(t, id, page.Tasks[0].ID)

	cmd = exec.Command(bin, "show", queue.NewID())
	cmd.Env = append(os.Environ(), "REDIS_URL="+f.env["REDIS_URL"], "FLOWS_PREFIX="+f.prefix)
	err = cmd.Run()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit)
	assert.Equal(t, exitFailed, exit.ExitCode())
}

func TestAgo(t *testing.T) {
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{
		{0, "just now"}, {300 * time.Millisecond, "just now"}, {4 * time.Second, "4s ago"},
		{90 * time.Second, "1m ago"}, {3 * time.Hour, "3h ago"}, {47 * time.Hour, "47h ago"},
		{72 * time.Hour, "3d ago"}, {-5 * time.Second, "in 5s"},
	} {
		assert.Equal(t, tc.want, ago(now, now.Add(-tc.d)), "%v", tc.d)
	}
	assert.Equal(t, "-", ago(now, time.Time{}))
	assert.Equal(t, "abc…", clip("abcdef", 4))
	assert.Equal(t, "a b", clip("a\n  b", 10))
}

// TestControlCharactersEscaped: what a task holds reaches the operator's
// terminal as text. A status, a step, a result, a reason or an owner
// with control characters in it (an escape sequence that clears the
// screen, sets the window title or colours what follows, a carriage
// return that writes over the line) is printed with each such character
// written \xNN, in every command's output for people.
func TestControlCharactersEscaped(t *testing.T) {
	f := newFixture(t)
	b, reg := f.otherQueue(t, "hostile")
	reg.MustRegister("hostile", flow.Func(func(_ context.Context, ft *flow.Task) (any, error) {
		ft.Progress.Progress(10, "\x1b[2Jcleared")
		ft.Progress.Log("\x1b]0;pwned\x07title")
		return nil, flow.Permanent(errors.New("bad\r\x1b[31mred\x7f"))
	}))
	runWorker(t, b, queue.WorkerConfig{Name: "hostile-worker", Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	id, err := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg}).Enqueue(context.Background(), "hostile", nil,
		queue.EnqueueOptions{Owner: "user:\x1b[8mhidden"})
	require.NoError(t, err)
	f.wait(t, id, ended)

	for _, args := range [][]string{{"ls"}, {"ls", "-owner", "user:\x1b[8mhidden", "-limit", "1"}, {"show", id}, {"dead"}} {
		_, out, errs := f.flows(t, args...)
		require.Empty(t, errs, "%q", args)
		require.Contains(t, out, id, "%q", args)
		for _, c := range []byte(out) {
			if c < 0x20 && c != '\n' || c == 0x7f {
				t.Errorf("flows %q printed the control character %#x:\n%q", args, c, out)
				break
			}
		}
		assert.Contains(t, out, `\x1b[`, "%q: written as text", args)
	}
}

// subscribed waits until something subscribes to task id's live events.
func (f *fixture) subscribed(t *testing.T, id string) {
	t.Helper()
	channel := f.prefix + ":{" + id + "}:live"
	require.Eventually(t, func() bool {
		n, err := f.srv.Do("PUBSUB", "SHARDNUMSUB", channel).ToArray()
		if err != nil || len(n) != 2 {
			return false
		}
		subs, err := n[1].AsInt64()
		return err == nil && subs > 0
	}, waitLimit, 5*time.Millisecond, "show -follow subscribes")
}

// TestShowFollowAcrossLossyFailover: a Redis failover lost events that
// show -follow had printed, and its subscription ends before the task
// does. The command follows again after the last id it printed, as an
// event stream's client reconnects: it gets the task's events from the
// first, says so on stderr, and ends with the task. The failover is
// played on one redis-server (redistest.KeepKeys); the lost append holds
// two events and the one that takes its place one, so that the new
// events differ from the lost ones by their position whatever their tags.
func TestShowFollowAcrossLossyFailover(t *testing.T) {
	f := newFixture(t)
	b, reg := f.otherQueue(t, "unserved") // no worker: the test writes the events
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	appendEvents := func(id string, events ...progress.Event) {
		t.Helper()
		_, err := b.Append(ctx, id, events...)
		require.NoError(t, err)
	}
	status := func(s string) progress.Event { return progress.Event{Type: progress.EventStatus, Status: s} }
	id, err := queue.NewBroker(b, nil, queue.BrokerConfig{Registry: reg}).
		Enqueue(ctx, "ok", json.RawMessage(`{}`), queue.EnqueueOptions{})
	require.NoError(t, err)
	appendEvents(id, status("one"))

	var out, errw syncbuf.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"show", "-follow", id}, &out, &errw, func(k string) string { return f.env[k] })
	}()
	printed := func(s string) {
		t.Helper()
		require.Eventually(t, func() bool { return strings.Contains(out.String(), s) }, waitLimit, 5*time.Millisecond,
			"show -follow prints %q: %s", s, out.String())
	}
	printed("State:")
	f.subscribed(t, id)
	appendEvents(id, status("two"))
	printed("status  two")
	promote := f.srv.KeepKeys(t, f.prefix+":{"+id+"}:task", f.prefix+":{"+id+"}:events", f.prefix+":{"+id+"}:steps")
	appendEvents(id, status("lost"), status("lost too"))
	printed("status  lost too")
	promote()
	appendEvents(id, status("three"))
	appendEvents(id, progress.Event{Type: progress.EventState, State: progress.StateSuccess, Status: "done"})

	var code int
	select {
	case code = <-done:
	case <-time.After(waitLimit):
		require.FailNow(t, "show -follow did not end with the task", "%s\n%s", out.String(), errw.String())
	}
	assert.Equal(t, exitOK, code, "%s\n%s", out.String(), errw.String())
	assert.Contains(t, errw.String(), "following again", "it says why the events start again")
	// An event's line is its id, then what it says ("status  two").
	var whats []string
	for _, line := range strings.Split(out.String(), "\n") {
		if fields := strings.Fields(line); len(fields) > 1 && (fields[1] == "status" || fields[1] == "SUCCESS") {
			whats = append(whats, strings.Join(fields[1:], " "))
		}
	}
	assert.Equal(t, []string{"status two", "status lost", "status lost too",
		"status one", "status two", "status three", "SUCCESS done"}, whats,
		"the events after the first it followed from, then the new primary's from the first")
}
