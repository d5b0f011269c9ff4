package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/progress"
)

// closedPort returns a loopback port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	require.NoError(t, ln.Close())
	return port
}

// TestSecretsStayOut plants credentials where the demo server meets them:
// in REDIS_URL (one that does not parse, one of a Redis that is down, one
// with a password Redis refuses), in a model endpoint's URL and API key
// (which the flows then fail to reach), and in the headers and query of
// bad requests. It collects every log line the server writes and every
// error and answer it gives, and finds none of the credentials there.
func TestSecretsStayOut(t *testing.T) {
	t.Parallel()
	const (
		redisPass = "PLANTED-redis-pass"
		apiKey    = "PLANTED-api-key"
		basePass  = "PLANTED-base-pass"
		baseKey   = "PLANTED-base-key"
		bearer    = "PLANTED-bearer-token"
		cookie    = "PLANTED-cookie"
		query     = "PLANTED-query-token"
	)
	planted := []string{redisPass, apiKey, basePass, baseKey, bearer, cookie, query}
	var logs syncbuf.Buffer
	var seen strings.Builder // error texts and HTTP answers
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	closed := closedPort(t)

	t.Run("REDIS_URL that does not parse", func(t *testing.T) {
		_, err := parseConfig(nil, func(k string) string {
			if k == "REDIS_URL" {
				return "redis://user:" + redisPass + " x@127.0.0.1:notaport/0"
			}
			return ""
		}, io.Discard)
		require.Error(t, err)
		seen.WriteString(err.Error() + "\n")
		assert.Contains(t, err.Error(), "REDIS_URL", "the error still says what is wrong")
	})

	t.Run("REDIS_URL of a Redis that is down", func(t *testing.T) {
		cfg := testConfig()
		cfg.Logger = logger
		cfg.RedisURL = "redis://:" + redisPass + "@127.0.0.1:" + closed + "/0?token=" + query
		_, _, err := newServer(cfg)
		require.Error(t, err)
		seen.WriteString(err.Error() + "\n")
	})

	t.Run("REDIS_URL with a password Redis refuses", func(t *testing.T) {
		srv := redistest.Start(t)
		require.NoError(t, srv.Do("CONFIG", "SET", "requirepass", "the-right-one").Error())
		t.Cleanup(func() {
			opt := srv.ClientOption()
			opt.Password = "the-right-one"
			c, err := rueidis.NewClient(opt)
			require.NoError(t, err)
			defer c.Close()
			require.NoError(t, c.Do(context.Background(), c.B().ConfigSet().ParameterValue().ParameterValue("requirepass", "").Build()).Error())
		})
		cfg := redisConfig(t, srv)
		cfg.Logger = logger
		cfg.RedisURL = "redis://default:" + redisPass + "@" + srv.Addr() + "/0"
		_, _, err := newServer(cfg)
		require.Error(t, err)
		seen.WriteString(err.Error() + "\n")
	})

	t.Run("model endpoint with credentials that cannot be reached", func(t *testing.T) {
		cfg := testConfig()
		cfg.Logger = logger
		env := map[string]string{
			"GEMINI_API_KEY":  apiKey,
			"GEMINI_BASE_URL": "http://user:" + basePass + "@127.0.0.1:" + closed + "/v1beta/openai?key=" + baseKey,
		}
		cfg.Flows.Getenv = func(k string) string { return env[k] }
		srv := startServer(t, cfg)
		client := &http.Client{Transport: &http.Transport{}}
		t.Cleanup(client.CloseIdleConnections)

		get := func(path string, header http.Header) {
			req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			require.NoError(t, err)
			for k, v := range header {
				req.Header[k] = v
			}
			resp, err := client.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			seen.WriteString(resp.Status + "\n")
			for k, v := range resp.Header {
				seen.WriteString(k + ": " + strings.Join(v, ",") + "\n")
			}
			seen.Write(body)
		}
		get("/flows/", nil)
		id := startTask(t, client, srv.URL, `{"flow":"poem_flow"}`)
		var snap progress.Snapshot
		require.Eventually(t, func() bool {
			resp, err := client.Get(srv.URL + "/tasks/" + id + "/")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return json.NewDecoder(resp.Body).Decode(&snap) == nil && snap.State.Terminal()
		}, 60*time.Second, 50*time.Millisecond)
		require.Equal(t, progress.StateFailure, snap.State)
		assert.Contains(t, snap.Details.Status, "failed after 3 attempts", "the flow ran and failed")
		get("/tasks/"+id+"/", nil)
		get("/task-status/"+id+"/", nil)

		// Bad requests carrying credentials in their headers and query.
		creds := http.Header{"Authorization": {"Bearer " + bearer}, "Cookie": {"session=" + cookie}, "X-Api-Key": {apiKey}}
		for _, path := range []string{
			"/tasks/" + strings.Repeat("a", 32) + "/?token=" + query,
			"/task-status/" + id + "/?lastEventId=bad&access_token=" + query,
			"/nope/?api_key=" + query,
			"/start-task/?token=" + query,
		} {
			get(path, creds)
		}
		for _, body := range []string{`{"flow":`, `{"flow":"nope","token":"` + query + `"}`, `{"flow":"poem_flow","inputs":[]}`} {
			req, err := http.NewRequest(http.MethodPost, srv.URL+"/start-task/?token="+query, strings.NewReader(body))
			require.NoError(t, err)
			req.Header = creds.Clone()
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			seen.Write(b)
		}
	})

	require.NotEmpty(t, logs.String())
	for _, s := range planted {
		assert.NotContains(t, logs.String(), s, "a log line holds a planted credential")
		assert.NotContains(t, seen.String(), s, "an error or an answer holds a planted credential")
	}
	if t.Failed() {
		t.Logf("logs:\n%s\nerrors and answers:\n%s", logs.String(), seen.String())
	}
}
