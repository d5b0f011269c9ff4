package ssehttp_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// keyed is a start-task of poem_flow with inputs and an Idempotency-Key,
// sent as user ("" for no Authorization).
func keyed(inputs, key, user string) startReq {
	h := map[string]string{"Idempotency-Key": key}
	if user != "" {
		h["Authorization"] = "Bearer " + user
	}
	return startReq{body: `{"flow":"poem_flow","inputs":` + inputs + `}`, headers: h}
}

func TestIdempotentStart(t *testing.T) {
	onEachBackend(t, func(t *testing.T, s *site) {
		t.Run("ConcurrentRepeatsOneTask", func(t *testing.T) {
			base := s.serve(t, ssehttp.Config{})
			const n = 20
			statuses, ids := make([]int, n), make([]string, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					statuses[i], ids[i], _ = postStart(t, base, keyed(`{"topic":"roses"}`, "order-1", ""))
				})
			}
			close(start)
			wg.Wait()
			for i := range n {
				require.Equal(t, http.StatusOK, statuses[i], "call %d: %s", i, ids[i])
				assert.Equal(t, queue.IdempotentID("", "order-1"), ids[i], "call %d", i)
			}
			assert.Equal(t, 1, s.taskCount(t), "20 calls with one key start one task")
		})

		t.Run("OtherBodyIs422", func(t *testing.T) {
			base := s.serve(t, ssehttp.Config{})
			status, id, _ := postStart(t, base, keyed(`{"topic":"roses"}`, "order-2", ""))
			require.Equal(t, http.StatusOK, status, id)
			before := s.taskCount(t)
			for _, r := range []startReq{
				keyed(`{"topic":"tulips"}`, "order-2", ""),
				{body: `{"flow":"other_flow","inputs":{"topic":"roses"}}`, headers: map[string]string{"Idempotency-Key": "order-2"}},
			} {
				status, msg, _ := postStart(t, base, r)
				assert.Equal(t, http.StatusUnprocessableEntity, status, r.body)
				assert.Equal(t, "Idempotency-Key already used for another flow or other inputs", msg)
			}
			assert.Equal(t, before, s.taskCount(t), "a conflict starts nothing")
			status, again, _ := postStart(t, base, keyed(` { "topic" : "roses" } `, "order-2", ""))
			assert.Equal(t, http.StatusOK, status)
			assert.Equal(t, id, again, "the first body, whitespace aside, still names the first task")
		})

		t.Run("ScopedByPrincipal", func(t *testing.T) {
			base := s.serve(t, ssehttp.Config{Identify: bearerIdentify})
			before := s.taskCount(t)
			got := map[string]string{}
			for _, user := range []string{"alice", "bob", "alice", "bob"} {
				status, id, _ := postStart(t, base, keyed(`{}`, "shared-key", user))
				require.Equal(t, http.StatusOK, status, id)
				if first, ok := got[user]; ok {
					assert.Equal(t, first, id, "%s's repeat", user)
				}
				got[user] = id
			}
			assert.NotEqual(t, got["alice"], got["bob"], "one key, two principals: two tasks")
			assert.Equal(t, before+2, s.taskCount(t))
		})
	})
}

func TestIdempotencyKeyRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name string
		keys []string
		want string
	}{
		{"empty", []string{""}, "Idempotency-Key is empty"},
		{"too long", []string{strings.Repeat("k", ssehttp.MaxIdempotencyKeyLen+1)}, "Idempotency-Key is longer than 255 bytes"},
		{"control byte", []string{"order\tx"}, "Idempotency-Key holds a byte that is not printable ASCII at offset 5"},
		{"not ASCII", []string{"ordér"}, "Idempotency-Key holds a byte that is not printable ASCII at offset 3"},
		{"twice", []string{"a", "b"}, "Idempotency-Key given more than once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, e.server.URL+"/start-task/", strings.NewReader(`{"flow":"poem_flow"}`))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			for _, k := range tc.keys {
				req.Header["Idempotency-Key"] = append(req.Header["Idempotency-Key"], k)
			}
			resp, body := e.do(t, req)
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
			assert.Equal(t, tc.want, errorOf(t, resp, body))
		})
	}
	assert.Empty(t, e.list(t, "").ids(), "a refused key starts nothing")
	t.Run("longest accepted", func(t *testing.T) {
		status, id, _ := postStart(t, e.server.URL, keyed(`{}`, strings.Repeat("k", ssehttp.MaxIdempotencyKeyLen), ""))
		assert.Equal(t, http.StatusOK, status, id)
	})
}
