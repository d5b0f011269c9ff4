package notify_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/leakcheck"
	"github.com/flowsrun/flows/notify"
)

// publicIP is an address Forbidden accepts; nothing is ever sent to it:
// the tests that resolve a name to it only configure a webhook.
var publicIP = netip.MustParseAddr("93.184.216.34")

func TestNewWebhookErrors(t *testing.T) {
	dns := newFakeDNS()
	dns.set("hooks.test", publicIP)
	dns.set("intranet.test", netip.MustParseAddr("10.0.0.5"))
	dns.set("metadata.test", netip.MustParseAddr("169.254.169.254"))
	secret := notify.NewSecret()
	tests := []struct {
		name  string
		cfg   notify.WebhookConfig
		want  error
		inErr string
	}{
		{"no URL", notify.WebhookConfig{Secret: secret}, notify.ErrInvalidWebhook, "no URL"},
		{"not a URL", notify.WebhookConfig{URL: "http://[::1", Secret: secret}, notify.ErrInvalidWebhook, "does not parse"},
		{"relative", notify.WebhookConfig{URL: "/hook", Secret: secret}, notify.ErrInvalidWebhook, "scheme must be http or https"},
		{"other scheme", notify.WebhookConfig{URL: "ftp://hooks.test/x", Secret: secret}, notify.ErrInvalidWebhook, "scheme must be http or https"},
		{"no host", notify.WebhookConfig{URL: "https:///hook", Secret: secret}, notify.ErrInvalidWebhook, "no host"},
		{"bad port", notify.WebhookConfig{URL: "https://hooks.test:99999/", Secret: secret}, notify.ErrInvalidWebhook, "bad port"},
		{"fragment", notify.WebhookConfig{URL: "https://hooks.test/#x", Secret: secret}, notify.ErrInvalidWebhook, "fragment"},
		{"no secret", notify.WebhookConfig{URL: "https://hooks.test/"}, notify.ErrInvalidSecret, "must start with"},
		{"bad secret", notify.WebhookConfig{URL: "https://hooks.test/", Secret: "whsec_c2hvcnQ="}, notify.ErrInvalidSecret, "5 bytes"},
		{"bad name", notify.WebhookConfig{Name: "Web Hook", URL: "https://hooks.test/", Secret: secret}, notify.ErrInvalidChannel, "lowercase"},
		{"negative timeout", notify.WebhookConfig{URL: "https://hooks.test/", Secret: secret, Timeout: -time.Second}, notify.ErrInvalidWebhook, "negative"},
		{"loopback literal", notify.WebhookConfig{URL: "http://127.0.0.1:8080/hook", Secret: secret}, notify.ErrForbiddenAddress, "127.0.0.1 is a loopback"},
		{"IPv6 loopback literal", notify.WebhookConfig{URL: "http://[::1]/hook", Secret: secret}, notify.ErrForbiddenAddress, "::1"},
		{"private literal", notify.WebhookConfig{URL: "https://192.168.0.10/hook", Secret: secret}, notify.ErrForbiddenAddress, "192.168.0.10"},
		{"name of a private address", notify.WebhookConfig{URL: "https://intranet.test/hook", Secret: secret}, notify.ErrForbiddenAddress, "intranet.test resolves to 10.0.0.5"},
		{"name of the metadata address", notify.WebhookConfig{URL: "http://metadata.test/latest", Secret: secret}, notify.ErrForbiddenAddress, "169.254.169.254"},
		{"unknown name", notify.WebhookConfig{URL: "https://nowhere.test/hook", Secret: secret}, notify.ErrInvalidWebhook, "cannot resolve nowhere.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Resolver = dns.resolver(t)
			_, err := notify.NewWebhook(tt.cfg)
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.inErr)
		})
	}

	t.Run("a public name is accepted", func(t *testing.T) {
		w, err := notify.NewWebhook(notify.WebhookConfig{URL: "https://hooks.test/hook", Secret: secret, Resolver: dns.resolver(t)})
		require.NoError(t, err)
		assert.Equal(t, "webhook", w.Name())
	})
	t.Run("private targets allowed", func(t *testing.T) {
		w, err := notify.NewWebhook(notify.WebhookConfig{Name: "local", URL: "http://127.0.0.1:9/hook", Secret: secret, AllowPrivate: true})
		require.NoError(t, err)
		assert.Equal(t, "local", w.Name())
	})
}

// TestWebhookErrorsKeepCredentialsOut: the URL's password and query and
// the secret appear in no configuration error.
func TestWebhookErrorsKeepCredentialsOut(t *testing.T) {
	dns := newFakeDNS()
	dns.set("hooks.test", publicIP)
	const password, token = "hunter2-planted", "tok-planted-123"
	secret := "whsec_" + strings.Repeat("QUJD", 5) // 15 bytes: too short
	for _, raw := range []string{
		"https://user:" + password + "@hooks.test/x?token=" + token,
		"https://user:" + password + "@10.0.0.1/x?token=" + token,
		"ftp://user:" + password + "@hooks.test/x?token=" + token,
		"https://user:" + password + "@hooks.test:0/x?token=" + token,
		"https://user:" + password + "@[::1/x?token=" + token,
	} {
		_, err := notify.NewWebhook(notify.WebhookConfig{URL: raw, Secret: secret, Resolver: dns.resolver(t)})
		require.Error(t, err)
		for _, planted := range []string{password, token, "QUJD"} {
			assert.NotContains(t, err.Error(), planted)
		}
	}
}

// newTestWebhook returns a webhook to rc, which runs on loopback.
func newTestWebhook(t *testing.T, rc *receiver, secret string, timeout time.Duration) *notify.Webhook {
	t.Helper()
	w, err := notify.NewWebhook(notify.WebhookConfig{URL: rc.srv.URL + "/hook", Secret: secret, AllowPrivate: true, Timeout: timeout, Logger: discardLogger()})
	require.NoError(t, err)
	return w
}

func TestWebhookDelivers(t *testing.T) {
	baseline := runtime.NumGoroutine()
	secret := notify.NewSecret()
	rc := newReceiver(t, secret)
	w := newTestWebhook(t, rc, secret, 0)
	t.Cleanup(func() {
		w.CloseIdleConnections()
		rc.srv.Close()
		leakcheck.Settle(t, baseline, 5*time.Second)
	})
	n := sampleNotification("webhook")
	n.Owner = "user:ada" // whom the receiver tells
	before := time.Now().Unix()
	require.NoError(t, w.Deliver(context.Background(), n))

	got := rc.requests()
	require.Len(t, got, 1)
	r := got[0]
	assert.NoError(t, r.VerifyErr, "the receiver's Verifier accepts it")
	assert.Equal(t, n.ID, r.ID)
	assert.Equal(t, "application/json", r.ContentType)
	ts, err := strconv.ParseInt(r.Timestamp, 10, 64)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, ts, before, "the timestamp is the attempt's")
	assert.True(t, strings.HasPrefix(r.Signature, "v1,"))
	assert.JSONEq(t, `{
		"type": "task.succeeded",
		"timestamp": "2026-12-04T10:00:03Z",
		"data": {
			"task_id": "0123456789abcdef0123456789abcdef", "flow": "poem_flow", "owner": "user:ada", "state": "SUCCESS", "attempts": 1,
			"enqueued_at": "2026-12-04T10:00:00Z", "started_at": "2026-12-04T10:00:01Z", "finished_at": "2026-12-04T10:00:03Z",
			"snapshot": {"state": "SUCCESS", "details": {"status": "Completed", "progress": 100,
				"step_results": [{"type": "log", "message": "Choosing a theme: done"}],
				"final_result": "The sea <hums> & the deep replies."}}
		}}`, string(r.Body))
	body, err := notify.Body(n)
	require.NoError(t, err)
	assert.Equal(t, body, r.Body, "the body is what Body returns")
}

// TestWebhookAnswers: how each kind of answer is classified.
func TestWebhookAnswers(t *testing.T) {
	secret := notify.NewSecret()
	rc := newReceiver(t, secret)
	w := newTestWebhook(t, rc, secret, 0)
	httpDate := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		delivered  bool
		permanent  bool
		retryAfter time.Duration // -1: none asked
		inErr      string
	}{
		{name: "200", status: 200, delivered: true},
		{name: "204", status: 204, delivered: true},
		{name: "202", status: 202, delivered: true},
		{name: "500", status: 500, body: "database down", retryAfter: -1, inErr: "500 Internal Server Error: database down"},
		{name: "502", status: 502, retryAfter: -1, inErr: "502 Bad Gateway"},
		{name: "503 with Retry-After seconds", status: 503, header: map[string]string{"Retry-After": "7"}, retryAfter: 7 * time.Second, inErr: "503"},
		{name: "429 with Retry-After seconds", status: 429, header: map[string]string{"Retry-After": "12"}, retryAfter: 12 * time.Second, inErr: "429 Too Many Requests"},
		{name: "429 with Retry-After date", status: 429, header: map[string]string{"Retry-After": httpDate}, retryAfter: 30 * time.Second, inErr: "429"},
		{name: "429 asking too much", status: 429, header: map[string]string{"Retry-After": "99999999999"}, retryAfter: notify.MaxRetryAfter, inErr: "429"},
		{name: "429 without Retry-After", status: 429, retryAfter: -1, inErr: "429"},
		{name: "429 with a bad Retry-After", status: 429, header: map[string]string{"Retry-After": "soon"}, retryAfter: -1, inErr: "429"},
		{name: "400", status: 400, body: "bad payload\nsecond line", permanent: true, inErr: "400 Bad Request: bad payload second line"},
		{name: "401", status: 401, permanent: true, inErr: "401"},
		{name: "404", status: 404, permanent: true, inErr: "404"},
		{name: "408", status: 408, retryAfter: -1, inErr: "408 Request Timeout"},
		{name: "408 with Retry-After", status: 408, header: map[string]string{"Retry-After": "5"}, retryAfter: 5 * time.Second, inErr: "408"},
		{name: "409", status: 409, body: "still processing", retryAfter: -1, inErr: "409 Conflict: still processing"},
		{name: "403", status: 403, permanent: true, inErr: "403"},
		{name: "422", status: 422, permanent: true, inErr: "422"},
		{name: "410", status: 410, permanent: true, inErr: "410 Gone"},
		{name: "redirect not followed", status: 307, header: map[string]string{"Location": "/elsewhere"}, permanent: true, inErr: "307"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(rc.requests())
			rc.setRespond(func(_ int, w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			})
			err := w.Deliver(context.Background(), sampleNotification("webhook"))
			assert.Len(t, rc.requests(), before+1, "one request, no redirect followed")
			if tt.delivered {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.inErr)
			assert.Equal(t, tt.permanent, errorsIsPermanent(err), "permanent")
			d, ok := flow.RetryDelay(err)
			if tt.retryAfter < 0 || tt.permanent {
				assert.False(t, ok, "no Retry-After delay")
				return
			}
			require.True(t, ok, "a Retry-After delay")
			assert.InDelta(t, tt.retryAfter.Seconds(), d.Seconds(), 2)
		})
	}
}

func errorsIsPermanent(err error) bool { return errorsIs(err, flow.ErrPermanent) }

func TestWebhookTimeoutIsRetried(t *testing.T) {
	secret := notify.NewSecret()
	rc := newReceiver(t, secret)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	rc.setRespond(func(_ int, w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	w := newTestWebhook(t, rc, secret, 200*time.Millisecond)
	err := w.Deliver(context.Background(), sampleNotification("webhook"))
	require.Error(t, err)
	assert.False(t, errorsIsPermanent(err), "a timeout is retried: %v", err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestWebhookConnectionRefusedIsRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now
	w, err := notify.NewWebhook(notify.WebhookConfig{URL: "http://" + addr + "/hook?token=planted-token", Secret: notify.NewSecret(), AllowPrivate: true, Logger: discardLogger()})
	require.NoError(t, err)
	err = w.Deliver(context.Background(), sampleNotification("webhook"))
	require.Error(t, err)
	assert.False(t, errorsIsPermanent(err))
	assert.Contains(t, err.Error(), "connection refused")
	assert.NotContains(t, err.Error(), "planted-token", "the query is not quoted")
}

// TestWebhookGuardAtDialTime: a name that resolved to a public address
// when the webhook was configured and resolves to loopback at delivery
// (DNS rebinding) is refused when dialled, and not retried; the receiver
// on loopback gets nothing.
func TestWebhookGuardAtDialTime(t *testing.T) {
	secret := notify.NewSecret()
	rc := newReceiver(t, secret)
	port := rc.srv.Listener.Addr().(*net.TCPAddr).Port
	dns := newFakeDNS()
	dns.set("rebind.test", publicIP)
	w, err := notify.NewWebhook(notify.WebhookConfig{
		URL: "http://rebind.test:" + strconv.Itoa(port) + "/hook", Secret: secret,
		Resolver: dns.resolver(t), Logger: discardLogger(),
	})
	require.NoError(t, err, "the name resolves to a public address now")
	queries := dns.queryCount()

	dns.set("rebind.test", netip.MustParseAddr("127.0.0.1"))
	err = w.Deliver(context.Background(), sampleNotification("webhook"))
	require.ErrorIs(t, err, notify.ErrForbiddenAddress)
	assert.True(t, errorsIsPermanent(err))
	assert.Contains(t, err.Error(), "127.0.0.1")
	assert.Greater(t, dns.queryCount(), queries, "the name was resolved again for the delivery")
	assert.Empty(t, rc.requests(), "nothing reached the loopback receiver")

	// The same receiver by a name that resolves to loopback from the
	// start is refused when the webhook is configured.
	_, err = notify.NewWebhook(notify.WebhookConfig{URL: "http://rebind.test:" + strconv.Itoa(port) + "/hook", Secret: secret, Resolver: dns.resolver(t)})
	assert.ErrorIs(t, err, notify.ErrForbiddenAddress)
}

func TestWebhookURLKeepsQueryForTheRequest(t *testing.T) {
	secret := notify.NewSecret()
	rc := newReceiver(t, secret)
	var gotQuery url.Values
	rc.setRespond(func(_ int, w http.ResponseWriter, r *http.Request) { gotQuery = r.URL.Query() })
	w, err := notify.NewWebhook(notify.WebhookConfig{URL: rc.srv.URL + "/hook?token=abc", Secret: secret, AllowPrivate: true})
	require.NoError(t, err)
	assert.Equal(t, rc.srv.URL+"/hook", w.URL(), "the display form has no query")
	require.NoError(t, w.Deliver(context.Background(), sampleNotification("webhook")))
	assert.Equal(t, "abc", gotQuery.Get("token"), "the request has it")
	var body map[string]any
	require.NoError(t, json.Unmarshal(rc.requests()[0].Body, &body))
}
