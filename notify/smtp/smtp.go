// Package smtp is the e-mail channel of package notify: it sends the
// notification of a finished task as an e-mail through an SMTP server,
// with a subject and text and HTML bodies rendered from the task's final
// snapshot (notify.Templates). A flow can also send a message as one of
// its steps (Sender.Send).
//
// It is a module of its own, github.com/flowsrun/flows/notify/smtp, so
// that the SMTP client it is built on, github.com/wneessen/go-mail, is in
// the module graph only of programs that send e-mail.
//
// The server is given as a URL:
//
//	smtp://host[:port]                    no TLS (port 25)
//	smtp://host[:port]?starttls=required  STARTTLS, refused without it (port 587)
//	smtp://host[:port]?starttls=opportunistic
//	                                      STARTTLS when the server offers it (port 587)
//	smtps://host[:port]                   TLS from the first byte (port 465)
//
// User and password in the URL (smtp://user:pass@host) turn on SMTP
// AUTH, with the strongest mechanism the server offers over TLS, PLAIN
// without TLS, or the one named by ?auth= (plain, login, cram-md5,
// scram-sha-1, scram-sha-256). PLAIN and LOGIN are refused on a
// connection without TLS, except to localhost (a local test server such
// as smtp://user:pass@127.0.0.1:2525): by New for a URL without TLS, at
// the dial for a server that does not offer the opportunistic STARTTLS.
// The password never leaves the SMTP
// conversation: it appears in no error and no log line.
package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	gomail "github.com/wneessen/go-mail"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/notify"
)

// Defaults of a Config's zero fields.
const (
	DefaultName    = "email"
	DefaultTimeout = 30 * time.Second
)

// ErrInvalidConfig is returned (wrapped) by New for a URL, address or
// template that cannot work. Its text never includes the password.
var ErrInvalidConfig = errors.New("smtp: invalid configuration")

// Config configures a Sender.
type Config struct {
	// Name is the channel's name (see notify.Channel). Empty means
	// DefaultName.
	Name string
	// URL is the SMTP server (see the package documentation). Required.
	URL string
	// From is the sender's address, "flows@example.com" or
	// "Flows <flows@example.com>". Required.
	From string
	// To are the recipients of the notifications. Required for a channel
	// (Deliver); Send takes its own. A message goes to all of them or to
	// none: one recipient refused fails it for all.
	To []string
	// Templates are the subject and bodies of a notification; zero fields
	// take notify's defaults.
	Templates notify.Templates
	// Timeout bounds connecting, and each command of the conversation.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// TLSConfig is used for STARTTLS and smtps. Nil means the system's
	// roots, with ServerName from the URL.
	TLSConfig *tls.Config
	// HELO is the name sent in EHLO. Empty means the host's name.
	HELO string
	// Logger receives a line per message sent. Nil means slog.Default().
	Logger *slog.Logger
}

// Sender sends e-mail through one SMTP server. It is a notify.Channel,
// and safe for concurrent use: each message is sent on a connection of
// its own.
type Sender struct {
	name     string
	host     string
	display  string // the URL without the password
	options  []gomail.Option
	password string
	from     string
	fromHost string
	to       []string
	render   *notify.Renderer
	log      *slog.Logger
}

// New checks cfg and returns a Sender. A URL, address or template that
// cannot work is an error here, when the host starts.
func New(cfg Config) (*Sender, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("%w: timeout %s is negative", ErrInvalidConfig, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Sender{name: cfg.Name}
	if err := s.parseURL(cfg); err != nil {
		return nil, err
	}
	from, err := mail.ParseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("%w: From %q: %v", ErrInvalidConfig, cfg.From, err)
	}
	s.from = from.String()
	s.fromHost = from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	for _, to := range cfg.To {
		addr, err := mail.ParseAddress(to)
		if err != nil {
			return nil, fmt.Errorf("%w: To %q: %v", ErrInvalidConfig, to, err)
		}
		s.to = append(s.to, addr.String())
	}
	if s.render, err = notify.NewRenderer(cfg.Templates); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	s.options = append(s.options, gomail.WithTimeout(cfg.Timeout))
	if cfg.HELO != "" {
		s.options = append(s.options, gomail.WithHELO(cfg.HELO))
	}
	if cfg.TLSConfig != nil {
		s.options = append(s.options, gomail.WithTLSConfig(cfg.TLSConfig))
	}
	s.log = cfg.Logger.With("channel", s.name, "smtp", s.display)
	return s, nil
}

// parseURL reads cfg.URL into s's host, port, TLS and auth options.
func (s *Sender) parseURL(cfg Config) error {
	if cfg.URL == "" {
		return fmt.Errorf("%w: no URL", ErrInvalidConfig)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return fmt.Errorf("%w: the URL does not parse", ErrInvalidConfig) // url's errors quote the password
	}
	s.display = u.Redacted() // the password as "xxxxx"
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, s.display, fmt.Sprintf(format, args...))
	}
	if u.Hostname() == "" {
		return bad("no host")
	}
	if u.Path != "" && u.Path != "/" || u.Fragment != "" {
		return bad("a path or fragment means nothing to SMTP")
	}
	s.host = u.Hostname()
	q := u.Query()
	for key := range q {
		if key != "starttls" && key != "auth" {
			return bad("unknown parameter %q (known: starttls, auth)", key)
		}
	}
	port := 25
	switch u.Scheme {
	case "smtps":
		if q.Has("starttls") {
			return bad("starttls with smtps: the connection is TLS from the start")
		}
		port = 465
		s.options = append(s.options, gomail.WithSSL())
	case "smtp":
		switch q.Get("starttls") {
		case "", "off":
			s.options = append(s.options, gomail.WithTLSPolicy(gomail.NoTLS))
		case "required":
			port = 587
			s.options = append(s.options, gomail.WithTLSPolicy(gomail.TLSMandatory))
		case "opportunistic":
			port = 587
			s.options = append(s.options, gomail.WithTLSPolicy(gomail.TLSOpportunistic))
		default:
			return bad("starttls=%q: want required, opportunistic or off", q.Get("starttls"))
		}
	default:
		return bad("the scheme must be smtp or smtps")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return bad("bad port")
		}
		port = n
	}
	s.options = append(s.options, gomail.WithPort(port))

	mech := q.Get("auth")
	if u.User == nil {
		if mech != "" {
			return bad("auth=%s without a user and password", mech)
		}
		return nil
	}
	password, ok := u.User.Password()
	if u.User.Username() == "" || !ok {
		return bad("a user needs a password (smtp://user:password@host)")
	}
	authType := gomail.SMTPAuthAutoDiscover
	if u.Scheme == "smtp" && (q.Get("starttls") == "" || q.Get("starttls") == "off") {
		// Autodiscovery picks nothing on a connection without TLS. PLAIN
		// is sent there only to localhost (a local test server); any
		// other host is refused below.
		authType = gomail.SMTPAuthPlain
	}
	if mech != "" {
		types := map[string]gomail.SMTPAuthType{
			"plain": gomail.SMTPAuthPlain, "login": gomail.SMTPAuthLogin, "cram-md5": gomail.SMTPAuthCramMD5,
			"scram-sha-1": gomail.SMTPAuthSCRAMSHA1, "scram-sha-256": gomail.SMTPAuthSCRAMSHA256,
		}
		if authType, ok = types[strings.ToLower(mech)]; !ok {
			return bad("auth=%q: want plain, login, cram-md5, scram-sha-1 or scram-sha-256", mech)
		}
	}
	if (authType == gomail.SMTPAuthPlain || authType == gomail.SMTPAuthLogin) && !tlsOn(u.Scheme, q.Get("starttls")) && !localhost(s.host) {
		// go-mail would refuse at every delivery, each retried.
		return bad("%s sends the password in clear: without TLS it goes only to localhost (use ?starttls=required, smtps:// or ?auth=cram-md5)", strings.ToUpper(mechName(authType)))
	}
	s.password = password
	s.options = append(s.options, gomail.WithSMTPAuth(authType), gomail.WithUsername(u.User.Username()), gomail.WithPassword(password))
	return nil
}

// tlsOn reports whether a URL of scheme with the starttls parameter v
// has TLS (STARTTLS required, or smtps). An opportunistic STARTTLS may
// not happen: go-mail checks then, at the dial.
func tlsOn(scheme, v string) bool {
	return scheme == "smtps" || v == "required" || v == "opportunistic"
}

// localhost reports whether go-mail sends PLAIN and LOGIN to host without
// TLS: the names its smtp package takes for the local machine.
func localhost(host string) bool { return host == "localhost" || host == "127.0.0.1" || host == "::1" }

// mechName names a clear-text mechanism for an error message.
func mechName(t gomail.SMTPAuthType) string {
	if t == gomail.SMTPAuthLogin {
		return "login"
	}
	return "plain"
}

// Name returns the channel's name.
func (s *Sender) Name() string { return s.name }

// Server returns the server's URL without the password, for display.
func (s *Sender) Server() string { return s.display }

// Message is an e-mail that a flow sends with Send.
type Message struct {
	// To are the recipients. Empty means Config.To.
	To []string
	// Subject is the subject line; line breaks become spaces.
	Subject string
	// Text is the plain-text body. Required unless HTML is set.
	Text string
	// HTML, when set, is sent as an alternative to Text.
	HTML string
	// ID, when set, makes the Message-ID "<ID@from's domain>", so that a
	// message sent again (the flow's task retried) can be recognised as
	// the same: derive it from the task's id and the step. Empty means a
	// new random one. It must be 1-128 letters, digits, _ . or -.
	ID string
}

// Deliver sends the notification n to Config.To, with the subject and
// bodies rendered from the templates, the Message-ID "<n.ID@from's
// domain>", the same on every retry, and the headers X-Flows-Task-Id,
// X-Flows-Flow, X-Flows-State and, for a task re-queued from a dead one,
// X-Flows-Requeued-From (n.RequeuedFrom). A 5xx answer of the
// server (a refused recipient, a failed authentication) is not retried;
// connection errors, timeouts and 4xx answers are. A message the server
// has accepted (250 to its end) is sent, even if the conversation then
// fails (RSET or QUIT refused, the connection lost): that failure is only
// logged. A connection lost between the message's end and the server's
// answer leaves it unknown whether the server has the message; it is
// sent again, with the same Message-ID.
func (s *Sender) Deliver(ctx context.Context, n *notify.Notification) error {
	if len(s.to) == 0 {
		return flow.Permanent(fmt.Errorf("smtp %s: no recipients configured", s.name))
	}
	m, err := s.render.Render(n)
	if err != nil {
		return flow.Permanent(fmt.Errorf("smtp %s: %w", s.name, err))
	}
	headers := map[string]string{
		"X-Flows-Task-Id": n.TaskID,
		"X-Flows-Flow":    n.Flow,
		"X-Flows-State":   string(n.State),
	}
	if n.RequeuedFrom != "" {
		headers["X-Flows-Requeued-From"] = n.RequeuedFrom
	}
	return s.send(ctx, Message{To: s.to, Subject: m.Subject, Text: m.Text, HTML: m.HTML, ID: n.ID}, headers)
}

// Send sends m, from a flow's step for instance:
//
//	err := sender.Send(ctx, smtp.Message{
//		Subject: "Your report is ready",
//		Text:    report,
//		ID:      t.ID + "-report", // the same message if the task runs again
//	})
//
// Its errors are as Deliver's: a flow that returns one is retried, unless
// the server refused the message for good (flow.ErrPermanent).
func (s *Sender) Send(ctx context.Context, m Message) error {
	to := m.To
	if len(to) == 0 {
		to = s.to
	}
	if len(to) == 0 {
		return flow.Permanent(fmt.Errorf("smtp %s: no recipients", s.name))
	}
	// A slice of its own: m.To is the caller's, s.to is shared by every
	// Send at once.
	m.To = make([]string, len(to))
	for i, rcpt := range to {
		addr, err := mail.ParseAddress(rcpt)
		if err != nil {
			return flow.Permanent(fmt.Errorf("smtp %s: recipient %q: %v", s.name, rcpt, err))
		}
		m.To[i] = addr.String()
	}
	if m.Text == "" && m.HTML == "" {
		return flow.Permanent(fmt.Errorf("smtp %s: the message has no body", s.name))
	}
	return s.send(ctx, m, nil)
}

// send builds and sends one message.
func (s *Sender) send(ctx context.Context, m Message, headers map[string]string) error {
	msg := gomail.NewMsg()
	if err := msg.From(s.from); err != nil {
		return flow.Permanent(fmt.Errorf("smtp %s: From: %w", s.name, err))
	}
	if err := msg.To(m.To...); err != nil {
		return flow.Permanent(fmt.Errorf("smtp %s: To: %w", s.name, err))
	}
	msg.Subject(strings.Join(strings.Fields(m.Subject), " "))
	if m.ID != "" {
		if !validID(m.ID) {
			return flow.Permanent(fmt.Errorf("smtp %s: message id %q: want 1-128 letters, digits, _ . or -", s.name, m.ID))
		}
		msg.SetMessageIDWithValue(m.ID + "@" + s.fromHost)
	} else {
		msg.SetMessageID()
	}
	msg.SetDate()
	msg.SetUserAgent("flows")
	for k, v := range headers {
		msg.SetGenHeader(gomail.Header(k), v)
	}
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(gomail.TypeTextHTML, m.HTML)
	case m.HTML != "":
		msg.SetBodyString(gomail.TypeTextHTML, m.HTML)
	default:
		msg.SetBodyString(gomail.TypeTextPlain, m.Text)
	}

	client, err := gomail.NewClient(s.host, s.options...)
	if err != nil {
		return flow.Permanent(s.wrap(err))
	}
	if err := client.DialAndSendWithContext(ctx, msg); err != nil {
		err = s.wrap(err)
		if msg.IsDelivered() {
			// The server answered 250 to the message: it has it. What
			// failed is the rest of the conversation (RSET, QUIT, the
			// connection). An error would send it again on retry, and a
			// 5xx one would dead-letter a message that arrived.
			s.log.Info("flows: e-mail sent; the conversation failed after", "id", m.ID, "err", err)
			return nil
		}
		s.log.Info("flows: e-mail not sent", "id", m.ID, "err", err)
		if permanent(err) {
			return flow.Permanent(err)
		}
		return err
	}
	s.log.Debug("flows: e-mail sent", "id", m.ID, "to", len(m.To))
	return nil
}

// permanent reports whether err is a refusal for good: a 5xx answer.
func permanent(err error) bool {
	var se *gomail.SendError
	if errors.As(err, &se) && se.ErrorCode() >= 500 {
		return true
	}
	var te *textproto.Error
	return errors.As(err, &te) && te.Code >= 500
}

// wrap adds the channel and server to err, and hides the password should
// err quote it.
func (s *Sender) wrap(err error) error {
	return &sendError{err: err, prefix: fmt.Sprintf("smtp %s (%s)", s.name, s.display), password: s.password}
}

// sendError is an error of the SMTP conversation whose text never holds
// the password.
type sendError struct {
	err      error
	prefix   string
	password string
}

func (e *sendError) Error() string {
	msg := e.prefix + ": " + e.err.Error()
	if e.password != "" {
		msg = strings.ReplaceAll(msg, e.password, "[redacted]")
	}
	return msg
}

func (e *sendError) Unwrap() error { return e.err }

// validID reports whether id can be the local part of a Message-ID.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '-', c == '.':
		default:
			return false
		}
	}
	return true
}
