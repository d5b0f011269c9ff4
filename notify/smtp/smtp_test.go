package smtp_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/syncbuf"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/notify/smtp"
	"github.com/flowsrun/flows/progress"
)

const taskID = "0123456789abcdef0123456789abcdef"

// sample is the notification of a finished task.
func sample() *notify.Notification {
	finished := time.Date(2026, 12, 4, 10, 0, 3, 0, time.UTC)
	return &notify.Notification{
		ID: notify.ID(taskID, "email"), Channel: "email", TaskID: taskID, Flow: "poem_flow",
		State: progress.StateSuccess,
		Snapshot: progress.Snapshot{State: progress.StateSuccess, Details: progress.Details{
			Status: "Completed", Progress: 100, FinalResult: json.RawMessage(`"The sea <hums> & the deep replies."`),
		}},
		Attempts: 1, StartedAt: finished.Add(-2 * time.Second), FinishedAt: finished,
	}
}

func newSender(t *testing.T, cfg smtp.Config) *smtp.Sender {
	t.Helper()
	if cfg.From == "" {
		cfg.From = "Flows <flows@example.com>"
	}
	if cfg.To == nil {
		cfg.To = []string{"ops@example.com", "Ada <ada@example.org>"}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := smtp.New(cfg)
	require.NoError(t, err)
	return s
}

func TestNewErrors(t *testing.T) {
	const password = "planted-pass-42"
	tests := []struct {
		name  string
		cfg   smtp.Config
		inErr string
	}{
		{"no URL", smtp.Config{From: "a@b.c"}, "no URL"},
		{"not a URL", smtp.Config{URL: "smtp://u:" + password + "@[::1", From: "a@b.c"}, "does not parse"},
		{"other scheme", smtp.Config{URL: "http://u:" + password + "@mail.test", From: "a@b.c"}, "scheme must be smtp or smtps"},
		{"no host", smtp.Config{URL: "smtp://", From: "a@b.c"}, "no host"},
		{"bad port", smtp.Config{URL: "smtp://u:" + password + "@mail.test:70000", From: "a@b.c"}, "bad port"},
		{"a path", smtp.Config{URL: "smtp://mail.test/inbox", From: "a@b.c"}, "path"},
		{"unknown parameter", smtp.Config{URL: "smtp://mail.test?tls=yes", From: "a@b.c"}, `unknown parameter "tls"`},
		{"bad starttls", smtp.Config{URL: "smtp://mail.test?starttls=yes", From: "a@b.c"}, `starttls="yes"`},
		{"starttls with smtps", smtp.Config{URL: "smtps://mail.test?starttls=required", From: "a@b.c"}, "TLS from the start"},
		{"user without password", smtp.Config{URL: "smtp://user@mail.test", From: "a@b.c"}, "needs a password"},
		{"auth without user", smtp.Config{URL: "smtp://mail.test?auth=plain", From: "a@b.c"}, "without a user"},
		{"bad auth", smtp.Config{URL: "smtp://u:" + password + "@mail.test?auth=kerberos", From: "a@b.c"}, `auth="kerberos"`},
		{"PLAIN without TLS", smtp.Config{URL: "smtp://u:" + password + "@mail.test", From: "a@b.c"}, "without TLS"},
		{"LOGIN without TLS", smtp.Config{URL: "smtp://u:" + password + "@mail.test:2525?auth=login&starttls=off", From: "a@b.c"}, "without TLS"},
		{"no From", smtp.Config{URL: "smtps://u:" + password + "@mail.test"}, "From"},
		{"bad From", smtp.Config{URL: "smtp://mail.test", From: "not an address"}, "From"},
		{"bad To", smtp.Config{URL: "smtp://mail.test", From: "a@b.c", To: []string{"ops@example.com", "nobody"}}, `To "nobody"`},
		{"bad template", smtp.Config{URL: "smtp://mail.test", From: "a@b.c", Templates: notify.Templates{Subject: "{{"}}, "subject template"},
		{"negative timeout", smtp.Config{URL: "smtp://mail.test", From: "a@b.c", Timeout: -1}, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := smtp.New(tt.cfg)
			require.ErrorIs(t, err, smtp.ErrInvalidConfig)
			assert.Contains(t, err.Error(), tt.inErr)
			assert.NotContains(t, err.Error(), password)
		})
	}
	for _, url := range []string{
		"smtp://u:p@127.0.0.1:2525", "smtp://u:p@localhost", "smtp://u:p@[::1]:2525", // PLAIN to localhost
		"smtp://u:p@mail.test?auth=cram-md5", "smtp://u:p@mail.test?starttls=required",
		"smtp://u:p@mail.test?starttls=opportunistic&auth=plain", // refused at the dial if STARTTLS is not offered
	} {
		_, err := smtp.New(smtp.Config{URL: url, From: "a@b.c"})
		assert.NoError(t, err, url)
	}
	s, err := smtp.New(smtp.Config{URL: "smtps://user:" + password + "@mail.test", From: "a@b.c"})
	require.NoError(t, err)
	assert.Equal(t, "email", s.Name())
	assert.NotContains(t, s.Server(), password)
}

// parsed is a received message, taken apart.
type parsed struct {
	Header mail.Header
	Text   string
	HTML   string
}

func parse(t *testing.T, data []byte) parsed {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(data))
	require.NoError(t, err)
	p := parsed{Header: m.Header}
	mediaType, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	require.NoError(t, err)
	require.Equal(t, "multipart/alternative", mediaType)
	r := multipart.NewReader(m.Body, params["boundary"])
	for {
		part, err := r.NextPart() // decodes quoted-printable
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		b, err := io.ReadAll(part)
		require.NoError(t, err)
		switch ct, _, _ := mime.ParseMediaType(part.Header.Get("Content-Type")); ct {
		case "text/plain":
			p.Text = string(b)
		case "text/html":
			p.HTML = string(b)
		}
	}
	return p
}

// TestDeliverArrives: the message reaches a real SMTP server with the
// right envelope, headers and bodies.
func TestDeliverArrives(t *testing.T) {
	ms := startMailServer(t, serverOptions{}, nil)
	s := newSender(t, smtp.Config{URL: "smtp://" + ms.addr})
	require.NoError(t, s.Deliver(context.Background(), sample()))

	got := ms.received()
	require.Len(t, got, 1)
	assert.Equal(t, "flows@example.com", got[0].From)
	assert.Equal(t, []string{"ops@example.com", "ada@example.org"}, got[0].To)
	assert.False(t, got[0].TLS)
	p := parse(t, got[0].Data)
	assert.Equal(t, `"Flows" <flows@example.com>`, p.Header.Get("From"))
	assert.Equal(t, `<ops@example.com>, "Ada" <ada@example.org>`, p.Header.Get("To"))
	assert.Equal(t, "[flows] poem_flow succeeded ("+taskID+")", p.Header.Get("Subject"))
	assert.Equal(t, "<msg_"+taskID+"_email@example.com>", p.Header.Get("Message-Id"))
	assert.Equal(t, taskID, p.Header.Get("X-Flows-Task-Id"))
	assert.Equal(t, "SUCCESS", p.Header.Get("X-Flows-State"))
	_, err := p.Header.Date()
	assert.NoError(t, err, "a Date header")
	assert.Contains(t, p.Text, "Task "+taskID+" of flow poem_flow ended SUCCESS after 1 attempt(s).")
	assert.Contains(t, p.Text, "The sea <hums> & the deep replies.")
	assert.Contains(t, p.HTML, "<pre>The sea &lt;hums&gt; &amp; the deep replies.</pre>")

	// A retry sends the same Message-ID.
	require.NoError(t, s.Deliver(context.Background(), sample()))
	got = ms.received()
	require.Len(t, got, 2)
	assert.Equal(t, p.Header.Get("Message-Id"), parse(t, got[1].Data).Header.Get("Message-Id"))
}

// TestAuth: user and password in the URL authenticate; a wrong password
// is refused for good, and the error does not quote it.
func TestAuth(t *testing.T) {
	ms := startMailServer(t, serverOptions{User: "flows", Pass: "right-pass", AllowInsecureAuth: true}, nil) // as a local test server does
	s := newSender(t, smtp.Config{URL: "smtp://flows:right-pass@" + ms.addr})
	require.NoError(t, s.Deliver(context.Background(), sample()), "PLAIN over plaintext is allowed to localhost")
	ok, _ := ms.auths()
	assert.Equal(t, 1, ok)
	require.Len(t, ms.received(), 1)

	logs := &syncbuf.Buffer{}
	wrong := newSender(t, smtp.Config{URL: "smtp://flows:planted-wrong-pass@" + ms.addr, Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	err := wrong.Deliver(context.Background(), sample())
	require.Error(t, err)
	assert.ErrorIs(t, err, flow.ErrPermanent, "535 is not retried: %v", err)
	assert.Contains(t, err.Error(), "535")
	assert.NotContains(t, err.Error(), "planted-wrong-pass")
	assert.NotContains(t, logs.String(), "planted-wrong-pass")
	assert.Contains(t, logs.String(), "e-mail not sent")
	_, bad := ms.auths()
	assert.Equal(t, 1, bad)
	assert.Len(t, ms.received(), 1, "nothing more arrived")

	// Without credentials the server refuses the MAIL command.
	anon := newSender(t, smtp.Config{URL: "smtp://" + ms.addr})
	err = anon.Deliver(context.Background(), sample())
	assert.ErrorIs(t, err, flow.ErrPermanent, "530: %v", err)
}

// TestSTARTTLS: starttls=required upgrades the connection and checks the
// server's certificate; without STARTTLS on offer, nothing is sent.
func TestSTARTTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	ms := startMailServer(t, serverOptions{STARTTLS: true, User: "flows", Pass: "tls-pass"}, cert)
	tlsConfig := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	s := newSender(t, smtp.Config{URL: "smtp://flows:tls-pass@" + ms.addr + "?starttls=required&auth=plain", TLSConfig: tlsConfig})
	require.NoError(t, s.Deliver(context.Background(), sample()))
	got := ms.received()
	require.Len(t, got, 1)
	assert.True(t, got[0].TLS, "the message went over TLS")

	// A certificate the client does not trust.
	untrusted := newSender(t, smtp.Config{URL: "smtp://flows:tls-pass@" + ms.addr + "?starttls=required", TLSConfig: &tls.Config{RootCAs: x509.NewCertPool(), ServerName: "127.0.0.1"}})
	err := untrusted.Deliver(context.Background(), sample())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate")
	assert.Len(t, ms.received(), 1)

	// A server without STARTTLS, when it is required.
	plain := startMailServer(t, serverOptions{}, nil)
	required := newSender(t, smtp.Config{URL: "smtp://" + plain.addr + "?starttls=required", TLSConfig: tlsConfig})
	assert.Error(t, required.Deliver(context.Background(), sample()))
	assert.Empty(t, plain.received())
	// ... and when it is only wished for.
	opportunistic := newSender(t, smtp.Config{URL: "smtp://" + plain.addr + "?starttls=opportunistic", TLSConfig: tlsConfig})
	require.NoError(t, opportunistic.Deliver(context.Background(), sample()))
	assert.Len(t, plain.received(), 1)
}

// TestImplicitTLS: smtps:// speaks TLS from the first byte.
func TestImplicitTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	ms := startMailServer(t, serverOptions{ImplicitTLS: true, User: "flows", Pass: "tls-pass"}, cert)
	s := newSender(t, smtp.Config{URL: "smtps://flows:tls-pass@" + ms.addr, TLSConfig: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}})
	require.NoError(t, s.Deliver(context.Background(), sample()))
	got := ms.received()
	require.Len(t, got, 1)
	assert.True(t, got[0].TLS)
	ok, _ := ms.auths()
	assert.Equal(t, 1, ok)
}

// TestRefusedRecipient: a 5xx answer is permanent, a 4xx one is retried.
func TestRefusedRecipient(t *testing.T) {
	ms := startMailServer(t, serverOptions{}, nil)
	s := newSender(t, smtp.Config{URL: "smtp://" + ms.addr})
	for code, permanent := range map[int]bool{550: true, 450: false} {
		ms.mu.Lock()
		ms.rcptCode = code
		ms.mu.Unlock()
		err := s.Deliver(context.Background(), sample())
		require.Error(t, err)
		assert.Equal(t, permanent, errors.Is(err, flow.ErrPermanent), "%d: %v", code, err)
	}
	assert.Empty(t, ms.received())
}

func TestServerDownIsRetryable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	s := newSender(t, smtp.Config{URL: "smtp://flows:planted-pass@" + addr})
	err = s.Deliver(context.Background(), sample())
	require.Error(t, err)
	assert.NotErrorIs(t, err, flow.ErrPermanent)
	assert.Contains(t, err.Error(), "connection refused")
	assert.NotContains(t, err.Error(), "planted-pass")
}

func TestSend(t *testing.T) {
	ms := startMailServer(t, serverOptions{}, nil)
	s := newSender(t, smtp.Config{URL: "smtp://" + ms.addr})
	require.NoError(t, s.Send(context.Background(), smtp.Message{To: []string{"reader@example.net"}, Subject: "Report\r\nBcc: x@example.com", Text: "All good.", ID: taskID + "-report"}))
	got := ms.received()
	require.Len(t, got, 1)
	assert.Equal(t, []string{"reader@example.net"}, got[0].To, "no recipient added through the subject")
	m, err := mail.ReadMessage(bytes.NewReader(got[0].Data))
	require.NoError(t, err)
	assert.Equal(t, "Report Bcc: x@example.com", m.Header.Get("Subject"))
	assert.Equal(t, "<"+taskID+"-report@example.com>", m.Header.Get("Message-Id"))
	body, _ := io.ReadAll(m.Body)
	assert.Equal(t, "All good.", strings.TrimSpace(string(body)))

	for name, msg := range map[string]smtp.Message{
		"no body":        {Subject: "x"},
		"bad recipient":  {To: []string{"nobody"}, Text: "x"},
		"bad message id": {Text: "x", ID: "a b"},
	} {
		err := s.Send(context.Background(), msg)
		assert.ErrorIs(t, err, flow.ErrPermanent, name)
	}
}

// TestSendLeavesRecipientsAlone: Send reads its recipients and the
// Sender's without writing to them, so that flows may send at once
// through one Sender (run with -race) and a caller's slice stays as given.
func TestSendLeavesRecipientsAlone(t *testing.T) {
	ms := startMailServer(t, serverOptions{}, nil)
	s := newSender(t, smtp.Config{URL: "smtp://" + ms.addr})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			assert.NoError(t, s.Send(context.Background(), smtp.Message{Subject: "s", Text: "t"})) // Config.To
		})
	}
	wg.Wait()
	to := []string{"Ada <ada@example.org>"}
	require.NoError(t, s.Send(context.Background(), smtp.Message{To: to, Subject: "s", Text: "t"}))
	assert.Equal(t, []string{"Ada <ada@example.org>"}, to)
	assert.Len(t, ms.received(), 5)
}

// TestDeliverTellsARequeuedTask: the message about a task re-queued from
// a dead one names that task in an X-Flows-Requeued-From header and in
// its text; other messages have no such header.
func TestDeliverTellsARequeuedTask(t *testing.T) {
	ms := startMailServer(t, serverOptions{}, nil)
	s := newSender(t, smtp.Config{URL: "smtp://" + ms.addr})
	require.NoError(t, s.Deliver(context.Background(), sample()))
	const dead = "fedcba9876543210fedcba9876543210"
	n := sample()
	n.RequeuedFrom = dead
	require.NoError(t, s.Deliver(context.Background(), n))

	got := ms.received()
	require.Len(t, got, 2)
	plain, requeued := parse(t, got[0].Data), parse(t, got[1].Data)
	assert.NotContains(t, plain.Header, "X-Flows-Requeued-From")
	assert.Equal(t, dead, requeued.Header.Get("X-Flows-Requeued-From"))
	assert.Contains(t, requeued.Text, "Re-queued from task "+dead+".")
}
