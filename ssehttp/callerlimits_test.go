package ssehttp_test

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/sse"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/ssehttp"
)

// plain is a start-task of poem_flow, sent as user ("" for none) with the
// headers of more (name, value pairs).
func plain(user string, more ...string) startReq {
	h := map[string]string{}
	if user != "" {
		h["Authorization"] = "Bearer " + user
	}
	for i := 0; i+1 < len(more); i += 2 {
		h[more[i]] = more[i+1]
	}
	return startReq{body: `{"flow":"poem_flow"}`, headers: h}
}

func TestCallerLimits(t *testing.T) {
	onEachBackend(t, func(t *testing.T, s *site) {
		t.Run("BurstOverTheRateOnTwoProcesses", func(t *testing.T) {
			const burst, calls = 5, 16
			lim := queue.BrokerConfig{CallerLimits: queue.CallerLimits{Starts: burst, Per: time.Hour}}
			var bases []string
			for range 2 {
				broker, store := s.process(t, lim)
				bases = append(bases, s.serve(t, ssehttp.Config{Queue: broker, Progress: store}))
			}
			before := s.taskCount(t)
			statuses, retry := make([]int, calls), make([]string, calls)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range calls {
				wg.Go(func() {
					<-start
					var h http.Header
					statuses[i], _, h = postStart(t, bases[i%2], plain(""))
					if h != nil {
						retry[i] = h.Get("Retry-After")
					}
				})
			}
			close(start)
			wg.Wait()
			ok := 0
			for i := range calls {
				switch statuses[i] {
				case http.StatusOK:
					ok++
				case http.StatusTooManyRequests:
					assert.Contains(t, []string{"720", "719"}, retry[i], "call %d: the next start is due an hour/5 after the burst", i)
				default:
					t.Errorf("call %d: status %d", i, statuses[i])
				}
			}
			assert.Equal(t, burst, ok, "one anonymous address, one limit, shared by both processes")
			assert.Equal(t, before+burst, s.taskCount(t), "the refused starts started nothing")
		})

		t.Run("EachPrincipalItsOwnRate", func(t *testing.T) {
			broker, store := s.process(t, queue.BrokerConfig{CallerLimits: queue.CallerLimits{Starts: 2, Per: time.Hour}})
			base := s.serve(t, ssehttp.Config{Queue: broker, Progress: store, Identify: bearerIdentify})
			for _, user := range []string{"carol", "dave"} {
				for i := range 2 {
					status, msg, _ := postStart(t, base, plain(user))
					require.Equal(t, http.StatusOK, status, "%s start %d: %s", user, i+1, msg)
				}
				status, msg, h := postStart(t, base, plain(user))
				assert.Equal(t, http.StatusTooManyRequests, status, user)
				assert.Contains(t, msg, "too many tasks started")
				assert.NotEmpty(t, h.Get("Retry-After"))
			}
		})

		t.Run("WaitingCap", func(t *testing.T) {
			broker, store := s.process(t, queue.BrokerConfig{CallerLimits: queue.CallerLimits{MaxPending: 2}})
			base := s.serve(t, ssehttp.Config{Queue: broker, Progress: store, Identify: bearerIdentify})
			for i := range 2 {
				status, msg, _ := postStart(t, base, plain("erin"))
				require.Equal(t, http.StatusOK, status, "start %d: %s", i+1, msg)
			}
			status, msg, h := postStart(t, base, plain("erin"))
			assert.Equal(t, http.StatusTooManyRequests, status)
			assert.Equal(t, "too many tasks waiting to start; try again once some have started", msg)
			assert.Equal(t, "3", h.Get("Retry-After"), "Config.Retry")
			status, _, _ = postStart(t, base, plain("frank"))
			assert.Equal(t, http.StatusOK, status, "another caller waits in its own line")
		})

		t.Run("StreamCap", func(t *testing.T) {
			base := s.serve(t, ssehttp.Config{Identify: bearerIdentify, MaxStreamsPerCaller: 2})
			status, id, _ := postStart(t, base, plain("gina"))
			require.Equal(t, http.StatusOK, status, id)
			first := openStream(t, base, id, "gina")
			require.Equal(t, http.StatusOK, first.status)
			second := openStream(t, base, id, "gina")
			require.Equal(t, http.StatusOK, second.status)

			// Over the cap, in both modes and for HEAD: an event stream
			// that holds only why and when to come back, then ends, which
			// an EventSource follows where a 429 would close it for good.
			for _, mode := range []string{"", "?mode=updates"} {
				for _, method := range []string{http.MethodGet, http.MethodHead} {
					third := peekStream(t, method, base+"/task-status/"+id+"/"+mode, "gina")
					assert.Equal(t, http.StatusOK, third.status, "%s %q", method, mode)
					assert.Equal(t, "text/event-stream", third.contentType, "%s %q", method, mode)
					assert.Equal(t, "3", third.header.Get("Retry-After"), "%s %q: Config.Retry, for clients that read headers", method, mode)
					if method == http.MethodHead {
						assert.Empty(t, third.messages, "HEAD %q: no body", mode)
						continue
					}
					require.Len(t, third.messages, 1, "%q: only the hint: %+v", mode, third.messages)
					assert.Equal(t, "3000", third.messages[0].Retry, "%q", mode)
					assert.Equal(t, []string{"too many open streams for this caller, reconnect in 3s"}, third.messages[0].Comments, "%q", mode)
					assert.False(t, third.hasData() || third.messages[0].HasID, "%q: nothing an EventSource dispatches, and its Last-Event-ID stays", mode)
				}
			}
			op := openStream(t, base, id, "op")
			assert.Equal(t, http.StatusOK, op.status, "another caller has streams of its own")
			op.close()

			// The refusals held no place: once one of gina's streams
			// closes, she reconnects, as an EventSource does after each
			// hint, until she gets a real stream; and then she is at her
			// cap again.
			first.close()
			for _, mode := range []string{"", "?mode=updates"} {
				deadline := time.Now().Add(testTimeout)
				for {
					again := peekStream(t, http.MethodGet, base+"/task-status/"+id+"/"+mode, "gina")
					require.Equal(t, http.StatusOK, again.status, "%q: %+v", mode, again)
					if again.hasData() {
						assert.Empty(t, again.header.Get("Retry-After"), "%q: a real stream", mode)
						break
					}
					require.NotEmpty(t, again.header.Get("Retry-After"), "%q: %+v", mode, again)
					require.True(t, time.Now().Before(deadline), "%q: a closed stream's place was never freed", mode)
					time.Sleep(10 * time.Millisecond)
				}
			}
			deadline := time.Now().Add(testTimeout)
			for {
				third := openStream(t, base, id, "gina")
				require.Equal(t, http.StatusOK, third.status)
				if third.header.Get("Retry-After") == "" {
					break // kept open
				}
				require.True(t, time.Now().Before(deadline), "the places of closed streams were never freed")
				time.Sleep(10 * time.Millisecond)
			}
			fourth := peekStream(t, http.MethodGet, base+"/task-status/"+id+"/", "gina")
			assert.Equal(t, "3", fourth.header.Get("Retry-After"), "second and third hold both places")
			assert.False(t, fourth.hasData(), "%+v", fourth)
			second.close()
		})
	})
}

// peekStream sends one request of a task's stream (url) as user ("" for
// an anonymous caller), reads its messages up to the first one an
// EventSource dispatches or the end, whichever comes first, and closes
// it.
func peekStream(t *testing.T, method, url, user string) peekedStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	require.NoError(t, err)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	p := peekedStream{streamAnswer: streamAnswer{status: resp.StatusCode, contentType: resp.Header.Get("Content-Type")}, header: resp.Header}
	r := sse.NewReader(resp.Body)
	for !p.hasData() {
		m, err := r.Next()
		if err != nil {
			break
		}
		p.messages = append(p.messages, m)
	}
	return p
}

// peekedStream is what peekStream read: the answer and its headers.
type peekedStream struct {
	streamAnswer
	header http.Header
}

// openedStream is a GET /task-status/{id}/ whose answer has begun.
type openedStream struct {
	status int
	header http.Header
	close  func()
}

// openStream opens the task's event stream as user ("" for an anonymous
// caller) and leaves it open until close (called at the end of the test at the latest).
func openStream(t *testing.T, base, id, user string) openedStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/task-status/"+id+"/", nil)
	require.NoError(t, err)
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		require.NoError(t, err)
	}
	var once sync.Once
	closeIt := func() {
		once.Do(func() {
			cancel()
			resp.Body.Close()
		})
	}
	t.Cleanup(closeIt)
	return openedStream{status: resp.StatusCode, header: resp.Header, close: closeIt}
}

// TestCallerNamesDisjoint: a principal whose ID reads like the name of an
// anonymous caller (ip:127.0.0.1, the address these tests connect from)
// is still another caller, with a start rate and streams of its own; and
// so is one whose ID reads like that principal's escaped name.
func TestCallerNamesDisjoint(t *testing.T) {
	lookalikes := []string{"", "ip:127.0.0.1", "id:ip:127.0.0.1", "id:id:ip:127.0.0.1"}
	onEachBackend(t, func(t *testing.T, s *site) {
		t.Run("Starts", func(t *testing.T) {
			broker, store := s.process(t, queue.BrokerConfig{CallerLimits: queue.CallerLimits{Starts: 1, Per: time.Hour}})
			base := s.serve(t, ssehttp.Config{Queue: broker, Progress: store, Identify: bearerIdentify})
			for _, user := range lookalikes {
				status, msg, _ := postStart(t, base, plain(user))
				assert.Equal(t, http.StatusOK, status, "caller %q: its first start: %s", user, msg)
			}
			for _, user := range lookalikes {
				status, _, _ := postStart(t, base, plain(user))
				assert.Equal(t, http.StatusTooManyRequests, status, "caller %q: its second start", user)
			}
		})
		t.Run("Streams", func(t *testing.T) {
			base := s.serve(t, ssehttp.Config{Identify: bearerIdentify, MaxStreamsPerCaller: 1})
			for _, user := range lookalikes {
				status, id, _ := postStart(t, base, plain(user))
				require.Equal(t, http.StatusOK, status, id)
				st := openStream(t, base, id, user)
				assert.Equal(t, http.StatusOK, st.status, "caller %q: its first stream", user)
				again := peekStream(t, http.MethodGet, base+"/task-status/"+id+"/", user)
				assert.Equal(t, "3", again.header.Get("Retry-After"), "caller %q: its second stream is refused", user)
				assert.False(t, again.hasData(), "caller %q: its second stream: %+v", user, again)
			}
		})
	})
}

func TestCallerAddress(t *testing.T) {
	local := netip.MustParsePrefix("127.0.0.0/8")
	for _, tc := range []struct {
		name    string
		trusted []netip.Prefix
		// xff are the X-Forwarded-For of three starts from 127.0.0.1, with
		// one start an hour allowed per caller.
		xff  [3]string
		want [3]int
	}{
		{"not trusted: the connection's address", nil,
			[3]string{"203.0.113.1", "203.0.113.2", ""}, [3]int{200, 429, 429}},
		{"trusted proxy: the address it was given", []netip.Prefix{local},
			[3]string{"203.0.113.1", "203.0.113.2", "203.0.113.1"}, [3]int{200, 200, 429}},
		{"the right-most untrusted hop, not a forged one", []netip.Prefix{local},
			[3]string{"203.0.113.1", "198.51.100.7, 203.0.113.1", "203.0.113.3, 127.0.0.9"}, [3]int{200, 429, 200}},
		{"entries with a port: the address is the caller", []netip.Prefix{local},
			[3]string{"203.0.113.1:5678", "203.0.113.1:9999", "[2001:db8:1:2::1]:443"}, [3]int{200, 429, 200}},
		{"IPv6: one /64 is one caller", []netip.Prefix{local},
			[3]string{"2001:db8:1:2::1", "2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:3::1"}, [3]int{200, 429, 200}},
		{"a proxy range written IPv4-mapped", []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.0/104")},
			[3]string{"203.0.113.1", "203.0.113.2", "203.0.113.1, ::ffff:127.0.0.9"}, [3]int{200, 200, 429}},
		{"a proxy address written IPv4-mapped", []netip.Prefix{netip.MustParsePrefix("::ffff:127.0.0.1/128")},
			[3]string{"203.0.113.1", "203.0.113.2", "203.0.113.1"}, [3]int{200, 200, 429}},
		{"a trusted IPv4 hop written IPv4-mapped", []netip.Prefix{local},
			[3]string{"203.0.113.1, [::ffff:127.0.0.9]:80", "203.0.113.2, ::ffff:127.0.0.9", "203.0.113.1"}, [3]int{200, 200, 429}},
		{"an IPv6 proxy between", []netip.Prefix{local, netip.MustParsePrefix("2001:db8:ff::/48")},
			[3]string{"203.0.113.1, 2001:db8:ff::7", "203.0.113.1, [2001:db8:ff::8]:443", "203.0.113.1, 2001:db8:fe::7"}, [3]int{200, 429, 200}},
		{"an IPv6 range takes in no IPv4 address", []netip.Prefix{netip.MustParsePrefix("::/0")},
			[3]string{"203.0.113.1", "203.0.113.2", ""}, [3]int{200, 429, 429}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSite(t, backendKinds[0].make)
			broker, store := s.process(t, queue.BrokerConfig{CallerLimits: queue.CallerLimits{Starts: 1, Per: time.Hour}})
			base := s.serve(t, ssehttp.Config{Queue: broker, Progress: store, TrustedProxies: tc.trusted})
			for i, xff := range tc.xff {
				var more []string
				if xff != "" {
					more = []string{"X-Forwarded-For", xff}
				}
				status, msg, _ := postStart(t, base, plain("", more...))
				assert.Equal(t, tc.want[i], status, "start %d (X-Forwarded-For %q): %s", i+1, xff, msg)
			}
		})
	}
}
