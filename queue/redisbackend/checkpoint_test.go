package redisbackend_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/redistrips"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
)

// infoStat returns a numeric field of INFO stats.
func infoStat(t testing.TB, srv *redistest.Server, field string) int64 {
	t.Helper()
	info, err := srv.Do("INFO", "stats").ToString()
	require.NoError(t, err)
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatalf("INFO stats has no %s", field)
	return 0
}

// answerOutput is a checkpoint output of about the size of a model's
// answer: a JSON string of n bytes.
func answerOutput(n int) json.RawMessage {
	return json.RawMessage(`"` + strings.Repeat("a", n-2) + `"`)
}

// TestCheckpointCost measures what a checkpoint costs on Redis: round
// trips, commands, bytes sent and bytes kept, for saving one (a step that
// completed) and for reading a task's checkpoints (the first step of a
// later attempt). The counts are exact; the bytes are logged.
func TestCheckpointCost(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}
	b := newBackend(t, counter, redisbackend.Config{})
	ctx := context.Background()
	task := queue.NewID()
	require.NoError(t, b.Create(ctx, task))
	// Load the script, so that no NOSCRIPT retry is counted.
	require.NoError(t, b.SaveCheckpoint(ctx, task, progress.Checkpoint{Key: "warm-up", Attempt: 1, Output: json.RawMessage(`1`)}))

	const steps, size = 100, 1024
	require.NoError(t, srv.Do("CONFIG", "RESETSTAT").Error())
	trips := counter.Trips()
	in, out := infoStat(t, srv, "total_net_input_bytes"), infoStat(t, srv, "total_net_output_bytes")
	for i := range steps {
		c := progress.Checkpoint{Key: fmt.Sprintf("lcflow/llm/%016x/0", i), Attempt: 1, Output: answerOutput(size)}
		require.NoError(t, b.SaveCheckpoint(ctx, task, c))
	}
	sentPer := float64(infoStat(t, srv, "total_net_input_bytes")-in) / steps
	repliedPer := float64(infoStat(t, srv, "total_net_output_bytes")-out) / steps
	assert.Equal(t, int64(steps), counter.Trips()-trips, "one round trip per checkpoint")
	calls := commandCalls(t, srv)
	assert.Equal(t, steps, calls["evalsha"], "one script per checkpoint")
	assert.Equal(t, steps, calls["hmget"], "the task's state and expiry read")
	assert.Equal(t, steps, calls["hset"], "the checkpoint written")
	assert.Equal(t, steps, calls["pexpireat"], "its expiry set; the task's keys not touched while the retention is far")
	mem, err := srv.Do("MEMORY", "USAGE", b.Prefix()+":{"+task+"}:checkpoints").AsInt64()
	require.NoError(t, err)
	keptPer := float64(mem) / (steps + 1)

	trips = counter.Trips()
	in, out = infoStat(t, srv, "total_net_input_bytes"), infoStat(t, srv, "total_net_output_bytes")
	got, err := b.Checkpoints(ctx, task)
	require.NoError(t, err)
	require.Len(t, got, steps+1)
	assert.Equal(t, int64(1), counter.Trips()-trips, "one round trip reads them all")
	readSent := infoStat(t, srv, "total_net_input_bytes") - in
	readReplied := infoStat(t, srv, "total_net_output_bytes") - out

	t.Logf("checkpoint of a %d-byte output: 1 round trip, 1 EVALSHA (HMGET, HSET, PEXPIREAT); "+
		"%.0f bytes sent to Redis (%.0f over the output), %.0f bytes replied, %.0f bytes kept in Redis's memory",
		size, sentPer, sentPer-size, repliedPer, keptPer)
	t.Logf("reading %d checkpoints (a later attempt's first step): 1 round trip, %d bytes sent, %d bytes replied (%.0f per checkpoint)",
		steps+1, readSent, readReplied, float64(readReplied)/(steps+1))
	assert.Less(t, sentPer-size, 512.0, "the command around the output stays small")
}

// TestConcurrentCheckpointsShareRoundTrips: checkpoints saved while one
// is in flight go together in the next round trip, each with its own
// answer (a task that ended refuses its own alone).
func TestConcurrentCheckpointsShareRoundTrips(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	client := &holdingClient{Client: redistrips.Client{CountDedicated: true, Client: newClient(t, srv)}}
	b := newBackend(t, client, redisbackend.Config{})
	ctx := context.Background()
	const n = 20
	ids := make([]string, n+1)
	for i := range ids {
		ids[i] = queue.NewID()
		require.NoError(t, b.Create(ctx, ids[i]))
	}
	ended := ids[3]
	_, err := b.Append(ctx, ended, progress.Event{Type: progress.EventState, State: progress.StateFailure, Status: "cancelled"})
	require.NoError(t, err)
	save := func(i int) error {
		return b.SaveCheckpoint(ctx, ids[i], progress.Checkpoint{Key: "step", Attempt: 1, Output: json.RawMessage(strconv.Itoa(i))})
	}
	require.NoError(t, save(n)) // loads the script

	client.hold()
	before := client.Trips()
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	wg.Go(func() { errs[n] = save(n) })
	require.Eventually(t, func() bool { return client.blocked.Load() == 1 }, 5*time.Second, time.Millisecond)
	for i := range n {
		wg.Go(func() { errs[i] = save(i) })
	}
	require.Eventually(t, func() bool { return b.WaitingCheckpoints() == n }, 5*time.Second, time.Millisecond)
	client.release()
	wg.Wait()
	assert.Equal(t, int64(2), client.Trips()-before, "%d checkpoints in 2 round trips", n+1)

	for i, id := range ids {
		if id == ended {
			assert.ErrorIs(t, errs[i], progress.ErrFinished, "the ended task's checkpoint, alone")
			continue
		}
		require.NoError(t, errs[i], "task %d", i)
		got, err := b.Checkpoints(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, strconv.Itoa(i), string(got["step"].Output), "each task got its own checkpoint")
	}
}

// BenchmarkCheckpoint measures saving a checkpoint of a 1 KB output, as
// a flow's step does once it has completed, and reading the checkpoints
// of a task of 20 steps, as a later attempt does once.
func BenchmarkCheckpoint(b *testing.B) {
	srv := redistest.Start(b)
	counter := &redistrips.Client{CountDedicated: true, Client: newClient(b, srv)}
	backend := newBackend(b, counter, redisbackend.Config{})
	ctx := context.Background()
	output := answerOutput(1024)

	b.Run("Save", func(b *testing.B) {
		id := queue.NewID()
		require.NoError(b, backend.Create(ctx, id))
		in := infoStat(b, srv, "total_net_input_bytes")
		trips := counter.Trips()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			c := progress.Checkpoint{Key: "step " + strconv.Itoa(i), Attempt: 1, Output: output}
			i++
			if err := backend.SaveCheckpoint(ctx, id, c); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(counter.Trips()-trips)/float64(b.N), "trips/op")
		b.ReportMetric(float64(infoStat(b, srv, "total_net_input_bytes")-in)/float64(b.N), "sent-B/op")
	})
	b.Run("Read20", func(b *testing.B) {
		id := queue.NewID()
		require.NoError(b, backend.Create(ctx, id))
		for i := range 20 {
			require.NoError(b, backend.SaveCheckpoint(ctx, id, progress.Checkpoint{Key: "step " + strconv.Itoa(i), Attempt: 1, Output: output}))
		}
		trips := counter.Trips()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := backend.Checkpoints(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(counter.Trips()-trips)/float64(b.N), "trips/op")
	})
}
