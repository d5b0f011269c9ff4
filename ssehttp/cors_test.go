package ssehttp_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// The origins of the CORS tests: the front end's, listed, and another.
const (
	listedOrigin = "https://app.example"
	otherOrigin  = "https://evil.example"
)

// corsEnv starts a system whose handler lists listedOrigin, with
// credentials as asked and Authorization as an extra header.
func corsEnv(t *testing.T, credentials bool) *env {
	t.Helper()
	return newEnv(t, envOptions{config: ssehttp.Config{CORS: ssehttp.CORS{
		// Written with a default port and in capitals: the browser sends
		// "https://app.example", which must match.
		AllowedOrigins:   []string{"HTTPS://App.Example:443", "http://localhost:5173"},
		AllowCredentials: credentials,
		AllowedHeaders:   []string{"authorization"},
	}}})
}

// serve sends req to h and returns the answer.
func serve(h http.Handler, req *http.Request) *http.Response {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

// assertCredentials checks that resp lets the page send credentials
// exactly when they are on.
func assertCredentials(t *testing.T, resp *http.Response, on bool) {
	t.Helper()
	if on {
		assert.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
	} else {
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Credentials"))
	}
}

// TestCORSPreflight sends a browser's preflight request to every route,
// from a listed origin, another origin and no origin, with credentials off
// and on, and to a handler that lists no origin.
func TestCORSPreflight(t *testing.T) {
	id := queue.NewID()
	routes := []struct {
		path    string
		methods string // Access-Control-Allow-Methods
	}{
		{"/start-task/", "POST"},
		{"/start-task", "POST"},
		{"/task-status/" + id + "/", "GET, HEAD"},
		{"/task-status/" + id, "GET, HEAD"},
		{"/flows/", "GET, HEAD"},
		{"/tasks/" + id + "/", "GET, HEAD"},
		{"/cancel-task/" + id + "/", "POST"},
	}
	origins := []struct {
		name    string
		origin  string
		allowed bool
	}{
		{"listed origin", listedOrigin, true},
		{"second listed origin", "http://localhost:5173", true},
		{"other origin", otherOrigin, false},
		{"listed origin on another port", "https://app.example:8443", false},
		{"listed origin over http", "http://app.example", false},
		{"no origin", "", false},
	}
	for _, credentials := range []bool{false, true} {
		e := corsEnv(t, credentials)
		for _, rt := range routes {
			for _, o := range origins {
				name := rt.path + "/" + o.name
				if credentials {
					name += "/credentials"
				}
				t.Run(name, func(t *testing.T) {
					req := httptest.NewRequest(http.MethodOptions, rt.path, nil)
					if o.origin != "" {
						req.Header.Set("Origin", o.origin)
					}
					req.Header.Set("Access-Control-Request-Method", strings.Split(rt.methods, ",")[0])
					req.Header.Set("Access-Control-Request-Headers", "content-type,last-event-id")
					resp := serve(e.handler, req)
					assert.Contains(t, resp.Header.Values("Vary"), "Origin")
					assert.Equal(t, rt.methods+", OPTIONS", resp.Header.Get("Allow"))
					if !o.allowed {
						assert.Equal(t, http.StatusForbidden, resp.StatusCode)
						assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
						assert.Empty(t, resp.Header.Get("Access-Control-Allow-Credentials"))
						assert.Empty(t, resp.Header.Get("Access-Control-Allow-Methods"))
						return
					}
					assert.Equal(t, http.StatusNoContent, resp.StatusCode)
					assert.Equal(t, o.origin, resp.Header.Get("Access-Control-Allow-Origin"))
					assert.Equal(t, rt.methods, resp.Header.Get("Access-Control-Allow-Methods"))
					assert.Equal(t, "Content-Type, Last-Event-ID, Idempotency-Key, Authorization", resp.Header.Get("Access-Control-Allow-Headers"))
					assert.Equal(t, "600", resp.Header.Get("Access-Control-Max-Age"))
					assert.Subset(t, resp.Header.Values("Vary"), []string{"Access-Control-Request-Method", "Access-Control-Request-Headers"})
					assertCredentials(t, resp, credentials)
				})
			}
		}
	}

	t.Run("no origin listed", func(t *testing.T) {
		// What a page on another origin met before CORS existed: its
		// preflight now fails with a reason instead of a 405.
		e := newEnv(t, envOptions{})
		req := httptest.NewRequest(http.MethodOptions, "/start-task/", nil)
		req.Header.Set("Origin", listedOrigin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp := serve(e.handler, req)
		assert.Equal(t, http.StatusForbidden, resp.StatusCode)
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
		assert.Empty(t, resp.Header.Values("Vary"), "nothing changes until an origin is listed")
	})
	t.Run("OPTIONS that is not a preflight", func(t *testing.T) {
		e := corsEnv(t, false)
		resp := serve(e.handler, httptest.NewRequest(http.MethodOptions, "/start-task/", nil))
		assert.Equal(t, http.StatusNoContent, resp.StatusCode)
		assert.Equal(t, "POST, OPTIONS", resp.Header.Get("Allow"))
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Methods"))
	})
	t.Run("unknown route", func(t *testing.T) {
		e := corsEnv(t, false)
		req := httptest.NewRequest(http.MethodOptions, "/nope/", nil)
		req.Header.Set("Origin", listedOrigin)
		req.Header.Set("Access-Control-Request-Method", "GET")
		resp := serve(e.handler, req)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode)
		assert.Empty(t, resp.Header.Get("Access-Control-Allow-Methods"))
	})
}

// TestCORSRequests sends the requests that follow a preflight (and the
// simple ones that need none) to every route, from a listed origin,
// another origin and no origin, with credentials off and on: a listed
// origin may read every answer, errors included, and passes the
// cross-origin protection of start-task and cancel-task; another origin
// still gets 403 there.
func TestCORSRequests(t *testing.T) {
	const poem = `{"flow":"poem_flow","inputs":{}}`
	for _, credentials := range []bool{false, true} {
		e := corsEnv(t, credentials)
		finished := e.start(t, "poem_flow")
		e.waitTerminal(t, finished)
		unknown := queue.NewID()
		tests := []struct {
			name   string
			method string
			path   string
			body   string
			origin string
			// site is the Sec-Fetch-Site header; "" sends none, as an
			// old browser does not.
			site   string
			status int
		}{
			{"start from the listed origin", "POST", "/start-task/", poem, listedOrigin, "cross-site", 200},
			{"start from the listed origin, old browser", "POST", "/start-task/", poem, listedOrigin, "", 200},
			{"start from a same-site listed origin", "POST", "/start-task/", poem, "http://localhost:5173", "same-site", 200},
			{"start from another origin", "POST", "/start-task/", poem, otherOrigin, "cross-site", 403},
			{"start from another origin, old browser", "POST", "/start-task/", poem, otherOrigin, "", 403},
			{"start without an origin", "POST", "/start-task/", poem, "", "", 200},
			{"start with a bad body from the listed origin", "POST", "/start-task/", `{"flow":7}`, listedOrigin, "cross-site", 400},
			{"cancel from the listed origin", "POST", "/cancel-task/" + unknown + "/", "", listedOrigin, "cross-site", 404},
			{"cancel a finished task from the listed origin", "POST", "/cancel-task/" + finished + "/", "", listedOrigin, "cross-site", 409},
			{"cancel from another origin", "POST", "/cancel-task/" + unknown + "/", "", otherOrigin, "cross-site", 403},
			{"flows from the listed origin", "GET", "/flows/", "", listedOrigin, "cross-site", 200},
			{"flows from another origin", "GET", "/flows/", "", otherOrigin, "cross-site", 200},
			{"flows without an origin", "GET", "/flows/", "", "", "", 200},
			{"task from the listed origin", "GET", "/tasks/" + finished + "/", "", listedOrigin, "cross-site", 200},
			{"unknown task from the listed origin", "GET", "/tasks/" + unknown + "/", "", listedOrigin, "cross-site", 404},
			{"unknown route from the listed origin", "GET", "/nope/", "", listedOrigin, "cross-site", 404},
			{"wrong method from the listed origin", "DELETE", "/tasks/" + finished + "/", "", listedOrigin, "cross-site", 405},
		}
		for _, tc := range tests {
			name := tc.name
			if credentials {
				name += " with credentials"
			}
			t.Run(name, func(t *testing.T) {
				req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
				req.Header.Set("Content-Type", "application/json")
				if tc.origin != "" {
					req.Header.Set("Origin", tc.origin)
				}
				if tc.site != "" {
					req.Header.Set("Sec-Fetch-Site", tc.site)
				}
				resp := serve(e.handler, req)
				require.Equal(t, tc.status, resp.StatusCode)
				assert.Contains(t, resp.Header.Values("Vary"), "Origin")
				listed := tc.origin == listedOrigin || tc.origin == "http://localhost:5173"
				if !listed {
					assert.Empty(t, resp.Header.Get("Access-Control-Allow-Origin"))
					assert.Empty(t, resp.Header.Get("Access-Control-Allow-Credentials"))
					assert.Empty(t, resp.Header.Get("Access-Control-Expose-Headers"))
					return
				}
				assert.Equal(t, tc.origin, resp.Header.Get("Access-Control-Allow-Origin"))
				assert.Equal(t, "Retry-After", resp.Header.Get("Access-Control-Expose-Headers"))
				assertCredentials(t, resp, credentials)
			})
		}
	}
	t.Run("wrong method lists OPTIONS", func(t *testing.T) {
		e := newEnv(t, envOptions{})
		resp := serve(e.handler, httptest.NewRequest(http.MethodPut, "/flows/", nil))
		assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
		assert.Equal(t, "GET, HEAD, OPTIONS", resp.Header.Get("Allow"))
	})
}

// TestCORSEventSource follows a task from a page on the listed origin as
// an EventSource does: a GET of task-status with the page's Origin (no
// preflight), then a reconnect with Last-Event-ID after the end, which
// gets 204. The page can read both only with Access-Control-Allow-Origin;
// with credentials (withCredentials: true) also
// Access-Control-Allow-Credentials.
func TestCORSEventSource(t *testing.T) {
	for _, credentials := range []bool{false, true} {
		t.Run(map[bool]string{false: "without credentials", true: "with credentials"}[credentials], func(t *testing.T) {
			e := corsEnv(t, credentials)
			id := e.start(t, "poem_flow")
			get := func(lastEventID string) *http.Response {
				t.Helper()
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.server.URL+"/task-status/"+id+"/", nil)
				require.NoError(t, err)
				req.Header.Set("Accept", "text/event-stream")
				req.Header.Set("Origin", listedOrigin)
				req.Header.Set("Sec-Fetch-Site", "cross-site")
				req.Header.Set("Sec-Fetch-Mode", "cors")
				if lastEventID != "" {
					req.Header.Set("Last-Event-ID", lastEventID)
				}
				resp, err := e.client.Do(req)
				require.NoError(t, err)
				t.Cleanup(func() { resp.Body.Close() })
				return resp
			}
			wantCORS := func(resp *http.Response) {
				t.Helper()
				assert.Equal(t, listedOrigin, resp.Header.Get("Access-Control-Allow-Origin"))
				assert.Contains(t, resp.Header.Values("Vary"), "Origin")
				assertCredentials(t, resp, credentials)
			}

			resp := get("")
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
			wantCORS(resp)
			w := &watch{resp: resp, sse: sse.NewReader(resp.Body), cancel: func() {}}
			msgs := w.rest(t)
			require.NotEmpty(t, msgs)
			last := msgs[len(msgs)-1]
			assert.Equal(t, progress.StateSuccess, snapshotOf(t, last).State)

			again := get(last.ID)
			assert.Equal(t, http.StatusNoContent, again.StatusCode, "the end was seen: EventSource stops")
			wantCORS(again)
		})
	}
}

// TestCORSValidate checks that a bad CORS configuration is refused with a
// message naming the problem, by Validate and by New (a panic at
// start-up), and that good ones pass.
func TestCORSValidate(t *testing.T) {
	tests := []struct {
		name string
		cors ssehttp.CORS
		// inError is part of the error; "" means valid.
		inError string
	}{
		{"zero value", ssehttp.CORS{}, ""},
		{"origins", ssehttp.CORS{AllowedOrigins: []string{"https://app.example", "http://localhost:5173", "http://[::1]:3000", "capacitor://localhost"}}, ""},
		{"credentials with an origin", ssehttp.CORS{AllowedOrigins: []string{"https://app.example"}, AllowCredentials: true, MaxAge: time.Hour}, ""},
		{"extra headers", ssehttp.CORS{AllowedOrigins: []string{"https://app.example"}, AllowedHeaders: []string{"Authorization", "X-Request-Id", "content-type"}}, ""},
		{"wildcard", ssehttp.CORS{AllowedOrigins: []string{"*"}}, `"*" is not allowed`},
		{"null origin", ssehttp.CORS{AllowedOrigins: []string{"null"}}, `"null" is not allowed`},
		{"trailing slash", ssehttp.CORS{AllowedOrigins: []string{"https://app.example/"}}, "not an origin"},
		{"path", ssehttp.CORS{AllowedOrigins: []string{"https://app.example/app"}}, "not an origin"},
		{"query", ssehttp.CORS{AllowedOrigins: []string{"https://app.example?x=1"}}, "not an origin"},
		{"empty query", ssehttp.CORS{AllowedOrigins: []string{"https://app.example?"}}, "not an origin"},
		{"fragment", ssehttp.CORS{AllowedOrigins: []string{"https://app.example#top"}}, "not an origin"},
		{"no scheme", ssehttp.CORS{AllowedOrigins: []string{"app.example"}}, "not an origin"},
		{"host and port without scheme", ssehttp.CORS{AllowedOrigins: []string{"localhost:5173"}}, "not an origin"},
		{"user info", ssehttp.CORS{AllowedOrigins: []string{"https://me@app.example"}}, "not an origin"},
		{"empty origin", ssehttp.CORS{AllowedOrigins: []string{""}}, "not an origin"},
		{"header with a space", ssehttp.CORS{AllowedOrigins: []string{"https://app.example"}, AllowedHeaders: []string{"X Thing"}}, "not a header name"},
		{"empty header", ssehttp.CORS{AllowedOrigins: []string{"https://app.example"}, AllowedHeaders: []string{""}}, "not a header name"},
		{"negative max age", ssehttp.CORS{AllowedOrigins: []string{"https://app.example"}, MaxAge: -time.Second}, "MaxAge"},
		{"credentials without origins", ssehttp.CORS{AllowCredentials: true}, "AllowCredentials without AllowedOrigins"},
	}
	store := progress.NewMemoryStore(progress.MemoryConfig{})
	broker := queue.NewBroker(queue.NewMemory(queue.MemoryConfig{}), store, queue.BrokerConfig{})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cors.Validate()
			newHandler := func() { ssehttp.New(ssehttp.Config{Queue: broker, Progress: store, CORS: tc.cors}) }
			if tc.inError == "" {
				assert.NoError(t, err)
				assert.NotPanics(t, newHandler)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.inError)
			assert.PanicsWithValue(t, "ssehttp.New: "+err.Error(), newHandler)
		})
	}
}
