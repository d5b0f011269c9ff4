package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/refusal"
	"github.com/flowsrun/flows/progress"
)

// Defaults of a WebhookConfig's zero fields.
const (
	DefaultWebhookName    = "webhook"
	DefaultWebhookTimeout = 15 * time.Second
	// MaxRetryAfter caps the delay a receiver can ask for with
	// Retry-After.
	MaxRetryAfter = time.Hour
)

// ErrInvalidWebhook is returned (wrapped) by NewWebhook for a bad URL,
// secret or setting. Its text never includes the secret, nor the URL's
// password or query.
var ErrInvalidWebhook = errors.New("notify: invalid webhook")

// WebhookConfig configures a webhook channel. The target is set by the
// host, never taken from a request.
type WebhookConfig struct {
	// Name is the channel's name (see Channel). Empty means
	// DefaultWebhookName.
	Name string
	// URL is where deliveries are POSTed: an absolute http or https URL.
	// Required.
	URL string
	// Secret signs the deliveries: "whsec_" and the base64 of 24 to 64
	// bytes (see NewSecret). Required.
	Secret string
	// Timeout bounds one delivery attempt: connecting, sending and the
	// receiver's answer. Zero means DefaultWebhookTimeout.
	Timeout time.Duration
	// AllowPrivate lets the URL's host be, or resolve to, a loopback,
	// private or otherwise internal address (see Forbidden). Leave it off
	// unless the receiver runs on the host's own network: it is what
	// keeps a webhook from reaching internal services.
	AllowPrivate bool
	// Resolver resolves the URL's host name, when it is one: once in
	// NewWebhook, and again at every delivery. Nil means
	// net.DefaultResolver.
	Resolver *net.Resolver
	// Logger receives a line per delivery attempt. Nil means
	// slog.Default().
	Logger *slog.Logger
}

// Webhook is a channel that POSTs each notification as JSON to a URL,
// signed per Standard Webhooks (https://www.standardwebhooks.com): headers
// webhook-id (Notification.ID, the same on every retry), webhook-timestamp
// (the attempt's time, Unix seconds) and webhook-signature ("v1," and the
// base64 HMAC-SHA256 of id.timestamp.body). The body is
//
//	{"type": "task.succeeded" | "task.failed",
//	 "timestamp": "<when the task finished, RFC 3339>",
//	 "data": {"task_id", "flow", "owner", "requeued_from", "state", "attempts",
//	          "enqueued_at", "started_at", "finished_at", "snapshot": {...}}}
//
// where "owner" is the task's owner (Notification.Owner: with ssehttp,
// the Principal.ID of the caller that started it), for the receiver to
// know whom to tell, and "requeued_from" the dead task a re-queued task
// came from; each is left out when empty.
//
// A 2xx answer is a delivery. A 408, 409, 429 or 5xx answer, a timeout
// or a connection error is retried (after Retry-After at the earliest,
// when the answer has one); any other answer, a redirect included, is
// not. A receiver verifies deliveries with a Verifier.
type Webhook struct {
	name    string
	target  *url.URL
	display string // target without password or query, for errors and logs
	secret  Secret
	client  *http.Client
	timeout time.Duration
	log     *slog.Logger
}

// NewWebhook checks cfg and returns the channel. A URL that is not an
// absolute http(s) URL, a bad secret, and, unless AllowPrivate, a host
// that is or resolves to an internal address (ErrForbiddenAddress) are
// errors here, when the host starts, not at the first delivery.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultWebhookName
	}
	if err := checkChannelName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: timeout %s is negative", ErrInvalidWebhook, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultWebhookTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	target, display, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, err
	}
	secret, err := ParseSecret(cfg.Secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalidWebhook, display, err)
	}
	if !cfg.AllowPrivate {
		if err := checkTarget(target.Hostname(), cfg.Resolver, cfg.Timeout); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrInvalidWebhook, display, err)
		}
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout, Resolver: cfg.Resolver}
	if !cfg.AllowPrivate {
		dialer.Control = guardControl
	}
	transport := &http.Transport{
		Proxy:                 nil, // a proxy would be dialled instead of the target, past the guard
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
	}
	return &Webhook{
		name:    cfg.Name,
		target:  target,
		display: display,
		secret:  secret,
		timeout: cfg.Timeout,
		log:     cfg.Logger.With("channel", cfg.Name, "url", display),
		client: &http.Client{
			Transport: transport,
			// Redirects are not followed: the receiver's URL should be
			// fixed instead (and a redirect could lead past the guard).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// parseTarget checks a webhook URL and returns it with its display form.
func parseTarget(raw string) (*url.URL, string, error) {
	if raw == "" {
		return nil, "", fmt.Errorf("%w: no URL", ErrInvalidWebhook)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url's errors quote the whole URL, which may hold a password.
		return nil, "", fmt.Errorf("%w: the URL does not parse", ErrInvalidWebhook)
	}
	display := displayURL(u)
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, "", fmt.Errorf("%w: %s: the scheme must be http or https", ErrInvalidWebhook, display)
	case u.Host == "" || u.Hostname() == "":
		return nil, "", fmt.Errorf("%w: %s: the URL has no host", ErrInvalidWebhook, display)
	case u.Fragment != "":
		return nil, "", fmt.Errorf("%w: %s: the URL has a fragment", ErrInvalidWebhook, display)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, "", fmt.Errorf("%w: %s: bad port", ErrInvalidWebhook, display)
		}
	}
	return u, display, nil
}

// displayURL is u without its user info and query, which may hold
// credentials.
func displayURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery, c.ForceQuery = "", false
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// checkTarget refuses a host that is, or resolves to, a forbidden address.
func checkTarget(host string, resolver *net.Resolver, timeout time.Duration) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		return checkTargetIPs(host, []netip.Addr{ip})
	}
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ips, err := resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("cannot resolve %s: %w", host, err)
	}
	return checkTargetIPs(host, ips)
}

// Name returns the channel's name.
func (w *Webhook) Name() string { return w.name }

// CloseIdleConnections closes the connections kept open for the next
// delivery; a host that drops the webhook calls it to free them.
func (w *Webhook) CloseIdleConnections() { w.client.CloseIdleConnections() }

// URL returns the target without its password or query, for display.
func (w *Webhook) URL() string { return w.display }

// webhookBody is the JSON body of a delivery.
type webhookBody struct {
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp,omitzero"`
	Data      webhookData `json:"data"`
}

// webhookData is the "data" of a delivery.
type webhookData struct {
	TaskID       string            `json:"task_id"`
	Flow         string            `json:"flow"`
	Owner        string            `json:"owner,omitempty"`         // the task's owner, whom to tell; only when it has one
	RequeuedFrom string            `json:"requeued_from,omitempty"` // only for a task re-queued from a dead one
	State        progress.State    `json:"state"`
	Attempts     int               `json:"attempts"`
	EnqueuedAt   time.Time         `json:"enqueued_at,omitzero"`
	StartedAt    time.Time         `json:"started_at,omitzero"`
	FinishedAt   time.Time         `json:"finished_at,omitzero"`
	Snapshot     progress.Snapshot `json:"snapshot"`
}

// Body returns the JSON body of n's delivery: the same bytes on every
// attempt.
func Body(n *Notification) ([]byte, error) {
	return json.Marshal(webhookBody{
		Type:      n.EventType(),
		Timestamp: n.FinishedAt,
		Data: webhookData{
			TaskID: n.TaskID, Flow: n.Flow, Owner: n.Owner, RequeuedFrom: n.RequeuedFrom, State: n.State, Attempts: n.Attempts,
			EnqueuedAt: n.EnqueuedAt, StartedAt: n.StartedAt, FinishedAt: n.FinishedAt,
			Snapshot: n.Snapshot,
		},
	})
}

// Deliver POSTs n to the webhook's URL, signed. See Webhook for which
// failures are retried.
func (w *Webhook) Deliver(ctx context.Context, n *Notification) error {
	body, err := Body(n)
	if err != nil {
		return flow.Permanent(fmt.Errorf("webhook %s: encode body: %w", w.name, err))
	}
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.target.String(), bytes.NewReader(body))
	if err != nil {
		return flow.Permanent(fmt.Errorf("webhook POST %s: %w", w.display, err))
	}
	now := time.Now()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "flows-webhook/1")
	req.Header.Set(HeaderID, n.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, w.secret.Sign(n.ID, now, body))

	resp, err := w.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // url.Error quotes the whole URL, query included
		}
		err = fmt.Errorf("webhook POST %s: %w", w.display, err)
		w.log.Info("flows: webhook delivery failed", "id", n.ID, "err", err)
		if errors.Is(err, ErrForbiddenAddress) {
			return flow.Permanent(err)
		}
		return err // timeouts, refused and reset connections: retried
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection can be reused
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		w.log.Debug("flows: webhook delivered", "id", n.ID, "status", resp.StatusCode)
		return nil
	}
	err = fmt.Errorf("webhook POST %s: %s%s", w.display, resp.Status, answerText(snippet))
	w.log.Info("flows: webhook delivery refused", "id", n.ID, "status", resp.StatusCode)
	if !refusal.Transient(resp.StatusCode) {
		return flow.Permanent(err) // 3xx, and 4xx but 408, 409 and 429: sending again will not help
	}
	if d, ok := retryAfter(resp.Header.Get("Retry-After"), now); ok {
		return flow.RetryAfter(err, d)
	}
	return err
}

// answerText is the start of a receiver's answer for an error message:
// one line, at most 200 characters, or "" when empty.
func answerText(b []byte) string {
	s := oneLine(strings.ToValidUTF8(string(b), "?"), 200)
	if s == "" {
		return ""
	}
	return ": " + s
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), capped
// at MaxRetryAfter.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if s, err := strconv.Atoi(v); err == nil {
		switch {
		case s < 0:
			return 0, false
		case s >= int(MaxRetryAfter/time.Second):
			return MaxRetryAfter, true
		}
		return time.Duration(s) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), MaxRetryAfter), true
	}
	return 0, false
}
