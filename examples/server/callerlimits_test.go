package main

import (
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/queue"
)

func TestParseCallerLimits(t *testing.T) {
	parse := func(args []string, env map[string]string) (callerLimits, error) {
		cfg, err := parseConfig(args, func(k string) string { return env[k] }, io.Discard)
		return cfg.Limits, err
	}
	got, err := parse(nil, nil)
	require.NoError(t, err)
	assert.Equal(t, callerLimits{}, got, "in memory, all off unless set")

	got, err = parse([]string{"-caller-starts", "60", "-caller-max-streams", "4"}, map[string]string{
		"FLOWS_CALLER_STARTS": "5", "FLOWS_CALLER_PER": "10s", "FLOWS_CALLER_MAX_PENDING": "100",
		"FLOWS_TRUSTED_PROXIES": "10.0.0.0/8, 192.168.1.7",
	})
	require.NoError(t, err)
	assert.Equal(t, callerLimits{
		Queue:      queue.CallerLimits{Starts: 60, Per: 10 * time.Second, MaxPending: 100},
		MaxStreams: 4,
		TrustedProxies: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"),
		},
	}, got, "flags win over the environment")

	redis := map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/0"} // parsed only, never dialled
	got, err = parse(nil, redis)
	require.NoError(t, err)
	assert.Equal(t, redisDefaultLimits(), got, "on Redis, generous defaults")
	assert.Equal(t, callerLimits{Queue: queue.CallerLimits{Starts: 600, Per: time.Minute, MaxPending: 1000}, MaxStreams: 100},
		got, "the defaults the README gives")

	got, err = parse([]string{"-caller-starts", "0", "-caller-max-streams", "5"}, redis)
	require.NoError(t, err)
	assert.Equal(t, callerLimits{Queue: queue.CallerLimits{Starts: 0, Per: time.Minute, MaxPending: 1000}, MaxStreams: 5},
		got, "on Redis, 0 turns a limit off and a flag replaces its default")

	for _, bad := range [][]string{
		{"-caller-starts", "-1"}, {"-caller-starts", "many"}, {"-caller-per", "0s"}, {"-caller-per", "500us"},
		{"-caller-max-pending", "1.5"}, {"-trusted-proxies", "proxy.local"},
	} {
		_, err := parse(bad, nil)
		assert.ErrorContains(t, err, bad[0], "%q", bad)
	}
}

func TestCallerLimitsInTheDemo(t *testing.T) {
	cfg := testConfig()
	cfg.Limits.Queue = queue.CallerLimits{Starts: 2, Per: time.Hour}
	srv := startServer(t, cfg)
	status := func() (int, string) {
		resp, err := http.Post(srv.URL+"/start-task/", "application/json", strings.NewReader(`{"flow":"poem_flow"}`))
		require.NoError(t, err)
		defer resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Retry-After")
	}
	for i := range 2 {
		code, _ := status()
		require.Equal(t, http.StatusOK, code, "start %d", i+1)
	}
	code, retry := status()
	assert.Equal(t, http.StatusTooManyRequests, code)
	assert.Equal(t, "1800", retry, "an hour / 2")
}
