package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/leakcheck"
	"github.com/flowsrun/flows/internal/redistest"
)

// TestMain lets the test binary play the SSE client process of the sse
// scenario, as the flowbench binary does.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// noEnv is a getenv with nothing set, so that the smoke test starts its
// own redis-server whatever REDIS_URL says.
func noEnv(string) string { return "" }

// TestQuickRunPrintsEveryFigure runs every scenario with tiny numbers on
// both backends: the command must complete and print each figure line.
// Nothing about the figures' values is asserted.
func TestQuickRunPrintsEveryFigure(t *testing.T) {
	number := `-?[0-9.]+|NaN`
	figure := func(name, unit string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^` + name + `\s+` + regexp.QuoteMeta(unit) + `\s+(` + number + `)\s+\((` + number + `)\.\.(` + number + `)\)\s+runs=1 `)
	}
	common := []*regexp.Regexp{
		figure("throughput", "tasks/s"),
		figure("throughput", "cpu us/task process"),
		figure("rate", "tasks/s"),
		figure("rate", "cpu us/task process"),
		figure("pickup", "p50 ms"),
		figure("pickup", "p99 ms"),
		figure("event", "p50 ms"),
		figure("event", "p99 ms"),
		figure("sse", "streams complete"),
		figure("sse", "KiB/stream settled"),
		figure("sse", "KiB/stream peak"),
		figure("starttask", "req/s"),
	}
	redisOnly := []*regexp.Regexp{
		figure("throughput", "cpu us/task redis"),
		figure("roundtrips", "calls/task"),
		figure("roundtrips", "writes/task"),
		figure("roundtrips", "commands/task"),
		figure("rate", "cpu us/task redis"),
		figure("rate", "redis idle cpu ms/s"),
		figure("rate", "cpu us/task redis less idle"),
		figure("rate", "calls/task"),
		figure("rate", "writes/task"),
		figure("rate", "commands/task"),
		figure("sse", "redis conns 0 streams"),
		figure("sse", "redis conns N streams"),
		figure("failover", "tasks accepted"),
		figure("failover", "tasks lost"),
		figure("failover", "tasks run twice"),
		figure("failover", "s to failover"),
		figure("failover", "s to accept again"),
		figure("failover", "s to finish again"),
	}
	for _, backend := range []string{"redis", "memory"} {
		t.Run(backend, func(t *testing.T) {
			baseline := runtime.NumGoroutine()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var out bytes.Buffer
			err := run(ctx, []string{"-quick", "-backend", backend, "-v"}, noEnv, &out)
			require.NoError(t, err, "output so far:\n%s", out.String())
			t.Logf("output:\n%s", out.String())

			assert.Regexp(t, `(?m)^# flowbench .*backend `+backend, out.String())
			for _, re := range common {
				assert.Regexp(t, re, out.String())
			}
			for _, re := range redisOnly {
				if backend == "redis" {
					assert.Regexp(t, re, out.String())
				} else {
					assert.NotRegexp(t, re, out.String(), "no Redis figures without Redis")
				}
			}
			if backend == "redis" {
				// Durable mode loses no accepted task.
				m := regexp.MustCompile(`(?m)^failover\s+tasks lost\s+(` + number + `) .*wait-replicas=1 `).FindStringSubmatch(out.String())
				require.NotNil(t, m)
				assert.Equal(t, "0.000", m[1])
			}
			// Every stream received every event in order.
			m := figure("sse", "streams complete").FindStringSubmatch(out.String())
			require.NotNil(t, m)
			assert.Equal(t, "20.0", m[1])
			leakcheck.Settle(t, baseline, 10*time.Second)
		})
	}
}

// TestQuickRunOnCluster runs the Redis scenarios on a Redis Cluster of
// three masters it starts itself: each master's share of the load is
// printed, and the shares add up to the whole.
func TestQuickRunOnCluster(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"-quick", "-cluster", "-scenario", "throughput,roundtrips,rate,sse"}, noEnv, &out)
	require.NoError(t, err, "output so far:\n%s", out.String())
	t.Logf("output:\n%s", out.String())
	assert.Regexp(t, `(?m)^# flowbench .*own Redis Cluster .* of 3 masters`, out.String())
	for _, scenario := range []string{"throughput", "rate"} {
		for _, what := range []string{"cpu", "commands"} {
			total := 0.0
			for i := 1; i <= 3; i++ {
				re := regexp.MustCompile(`(?m)^` + scenario + `\s+shard` + strconv.Itoa(i) + ` ` + what + ` %\s+([0-9.]+) .* shard=127\.0\.0\.1:[0-9]+$`)
				m := re.FindStringSubmatch(out.String())
				require.NotNil(t, m, "%s shard%d %s", scenario, i, what)
				v, err := strconv.ParseFloat(m[1], 64)
				require.NoError(t, err)
				total += v
			}
			assert.InDelta(t, 100, total, 0.5, "%s: the %s shares add up", scenario, what)
		}
	}
	m := regexp.MustCompile(`(?m)^sse\s+streams complete\s+([0-9.]+) `).FindStringSubmatch(out.String())
	require.NotNil(t, m)
	assert.Equal(t, "20.0", m[1], "every stream got every event in order")
}

// TestRedisURLKeysExpire runs every scenario that uses the Redis at
// REDIS_URL and checks that each key it leaves there expires, as
// BENCHMARKS.md says: the queue's own keys (its streams, indexes and set
// of flows, which the backend never expires) within the retention, the
// tasks' within the nine eighths of it that the backend gives them.
func TestRedisURLKeysExpire(t *testing.T) {
	srv := redistest.Start(t)
	getenv := func(name string) string {
		if name == "REDIS_URL" {
			return srv.URL()
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := run(ctx, []string{"-quick", "-scenario", "throughput,rate,pickup,event,sse,starttask"}, getenv, &out)
	require.NoError(t, err, "output so far:\n%s", out.String())
	assert.Contains(t, out.String(), "at REDIS_URL")

	keys, err := srv.Do("KEYS", "*").AsStrSlice()
	require.NoError(t, err)
	require.NotEmpty(t, keys)
	var lasting []string
	for _, k := range keys {
		require.True(t, strings.HasPrefix(k, "flowbench-"), "key %q outside the benchmark's prefixes", k)
		ms, err := srv.Do("PTTL", k).AsInt64()
		require.NoError(t, err)
		if ms <= 0 || ms > retention.Milliseconds()*9/8 {
			lasting = append(lasting, fmt.Sprintf("%s (pttl %d)", k, ms))
		}
	}
	assert.Empty(t, lasting, "keys that do not expire within %v", retention*9/8)
}

func TestScenarioSelection(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"-quick", "-backend", "memory", "-scenario", "starttask"}, noEnv, &out)
	require.NoError(t, err)
	assert.Contains(t, out.String(), "starttask ")
	for _, other := range []string{"throughput ", "rate ", "pickup ", "event ", "sse "} {
		assert.NotContains(t, out.String(), "\n"+other, "scenario not asked for")
	}
}

// TestExitCodes checks the exit codes of the command line: -h prints
// the flags and exits 0, as asked for; a flag it does not know is an
// error, exit 1, said on stderr.
func TestExitCodes(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"-help"}, {"-quick", "--help"}} {
		var out, errw bytes.Buffer
		code := runMain(context.Background(), args, noEnv, &out, &errw)
		assert.Equal(t, 0, code, "flowbench %q: %s", args, errw.String())
		assert.Contains(t, errw.String(), "-scenario string", "flowbench %q prints its flags", args)
		assert.Empty(t, out.String(), "flowbench %q runs no scenario", args)
	}
	var out, errw bytes.Buffer
	code := runMain(context.Background(), []string{"-bogus"}, noEnv, &out, &errw)
	assert.Equal(t, 1, code)
	assert.Equal(t, "flowbench: flag provided but not defined: -bogus\n", errw.String())
	assert.Empty(t, out.String())
}

func TestParseConfig(t *testing.T) {
	env := func(url string) func(string) string {
		return func(k string) string {
			if k == "REDIS_URL" {
				return url
			}
			return ""
		}
	}
	tests := []struct {
		name    string
		args    []string
		url     string
		check   func(t *testing.T, c config)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			assert.Equal(t, scenarioNames, c.Scenarios)
			assert.Equal(t, "redis", c.Backend)
			assert.Equal(t, 5, c.Runs)
			assert.Equal(t, 50000, c.N)
			assert.Equal(t, 10000, c.Clients)
			assert.Equal(t, 10*time.Second, c.Duration)
		}},
		{name: "quick shrinks what is not set", args: []string{"-quick", "-n", "1000"}, check: func(t *testing.T, c config) {
			assert.Equal(t, 1, c.Runs)
			assert.Equal(t, 1000, c.N)
			assert.Equal(t, quickDefaults.Clients, c.Clients)
			assert.Equal(t, quickDefaults.Duration, c.Duration)
		}},
		{name: "scenario list", args: []string{"-scenario", "pickup, sse"}, check: func(t *testing.T, c config) {
			assert.Equal(t, []string{"pickup", "sse"}, c.Scenarios)
		}},
		{name: "REDIS_URL", url: "redis://127.0.0.1:1/0", check: func(t *testing.T, c config) {
			assert.Equal(t, "redis://127.0.0.1:1/0", c.RedisURL)
		}},
		{name: "cluster", args: []string{"-cluster", "-masters", "5"}, check: func(t *testing.T, c config) {
			assert.True(t, c.Cluster)
			assert.Equal(t, 5, c.Masters)
		}},
		{name: "cluster in memory", args: []string{"-cluster", "-backend", "memory"}, wantErr: "-cluster starts a cluster of its own"},
		{name: "cluster and REDIS_URL", args: []string{"-cluster"}, url: "redis://127.0.0.1:1/0", wantErr: "-cluster starts a cluster of its own"},
		{name: "no masters", args: []string{"-cluster", "-masters", "0"}, wantErr: "-masters must be at least 1"},
		{name: "durable", args: []string{"-wait-replicas", "1"}, check: func(t *testing.T, c config) {
			assert.True(t, c.Replica, "durable mode needs a replica")
			assert.Equal(t, 1, c.WaitReplicas)
		}},
		{name: "replica of a cluster", args: []string{"-cluster", "-replica"}, wantErr: "-replica and -wait-replicas start a primary"},
		{name: "negative link down", args: []string{"-link-down", "-1s"}, wantErr: "must not be negative"},
		{name: "unknown scenario", args: []string{"-scenario", "speed"}, wantErr: `unknown scenario "speed"`},
		{name: "bad backend", args: []string{"-backend", "postgres"}, wantErr: "-backend must be"},
		{name: "zero runs", args: []string{"-runs", "0"}, wantErr: "-runs must be at least 1"},
		{name: "stray argument", args: []string{"now"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(tt.args, env(tt.url))
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestSummarize(t *testing.T) {
	tests := []struct {
		in            []float64
		med, min, max float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	}
	for _, tt := range tests {
		med, lo, hi := summarize(tt.in)
		assert.Equal(t, []float64{tt.med, tt.min, tt.max}, []float64{med, lo, hi}, "%v", tt.in)
	}
}

func TestPercentile(t *testing.T) {
	d := make([]time.Duration, 100)
	for i := range d {
		d[i] = time.Duration(100-i) * time.Millisecond // 100ms..1ms, unsorted
	}
	assert.Equal(t, 50*time.Millisecond, percentile(d, 0.50))
	assert.Equal(t, 99*time.Millisecond, percentile(d, 0.99))
	assert.Equal(t, 100*time.Millisecond, percentile(d, 1))
	assert.Equal(t, time.Duration(0), percentile(nil, 0.99))
}

func TestSSEReader(t *testing.T) {
	stream := "retry: 3000\n\n: ping\n\nid: 1\ndata: {\"state\":\"PENDING\",\"details\":{\"status\":\"Queued\"}}\n\n" +
		"id: 2\nevent: token\ndata: {\"token\":\"a\"}\n\nid: 3\ndata: one\ndata: two\n\n"
	r := newSSEReader(strings.NewReader(stream))
	m, err := r.next()
	require.NoError(t, err)
	assert.Equal(t, sseMessage{ID: "1", Data: `{"state":"PENDING","details":{"status":"Queued"}}`}, m)
	s, err := m.snapshot()
	require.NoError(t, err)
	assert.Equal(t, "Queued", s.Details.Status)
	m, err = r.next()
	require.NoError(t, err)
	assert.Equal(t, sseMessage{ID: "2", Event: "token", Data: `{"token":"a"}`}, m)
	m, err = r.next()
	require.NoError(t, err)
	assert.Equal(t, "one\ntwo", m.Data)
	_, err = r.next()
	assert.ErrorIs(t, err, io.EOF)
}

// TestRedisURLCredentialsKeptOut gives the command a REDIS_URL (and a
// -redis-url) with a password and a secret query parameter that does not
// parse: the error says so, without them.
func TestRedisURLCredentialsKeptOut(t *testing.T) {
	const pass, token = "PLANTED-pass", "PLANTED-token"
	bad := "redis://user:" + pass + "@127.0.0.1:nope/0?token=" + token
	for name, args := range map[string][]string{"REDIS_URL": {"-quick"}, "-redis-url": {"-quick", "-redis-url", bad}} {
		t.Run(name, func(t *testing.T) {
			var out, errw bytes.Buffer
			code := runMain(context.Background(), args, func(k string) string {
				if k == "REDIS_URL" {
					return bad
				}
				return ""
			}, &out, &errw)
			assert.Equal(t, 1, code, "stderr: %s", errw.String())
			assert.Contains(t, errw.String(), "redis url")
			for _, secret := range []string{pass, token} {
				assert.NotContains(t, errw.String(), secret)
				assert.NotContains(t, out.String(), secret)
			}
		})
	}
}
