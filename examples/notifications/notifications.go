// Package notifications wires package notify from the environment, for
// the example server and worker: one e-mail and one webhook about every
// finished task of any flow.
//
//	SMTP_URL               smtp://user:pass@127.0.0.1:2525, smtps://..., smtp://...?starttls=required
//	NOTIFY_EMAIL_TO        recipients, a comma-separated list
//	NOTIFY_EMAIL_FROM      the sender's address
//	WEBHOOK_URL            where webhooks are POSTed
//	WEBHOOK_SECRET         whsec_... , shared with the receiver
//	WEBHOOK_ALLOW_PRIVATE  1 to allow a loopback or private WEBHOOK_URL (local use only)
//
// E-mail needs all three of its variables, webhooks both of theirs; a
// channel half configured, a bad URL, address or secret stops the program
// at start-up. With none of them set, nothing is sent.
package notifications

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/notify/smtp"
)

// Config is what the environment says about notifications.
type Config struct {
	SMTPURL      string
	EmailFrom    string
	EmailTo      []string
	WebhookURL   string
	Secret       string
	AllowPrivate bool
}

// FromEnv reads the variables through getenv and checks that each channel
// is either fully configured or not at all. It does not check the values
// themselves: Channels does.
func FromEnv(getenv func(string) string) (Config, error) {
	c := Config{
		SMTPURL:    strings.TrimSpace(getenv("SMTP_URL")),
		EmailFrom:  strings.TrimSpace(getenv("NOTIFY_EMAIL_FROM")),
		WebhookURL: strings.TrimSpace(getenv("WEBHOOK_URL")),
		Secret:     strings.TrimSpace(getenv("WEBHOOK_SECRET")),
	}
	for to := range strings.SplitSeq(getenv("NOTIFY_EMAIL_TO"), ",") {
		if to = strings.TrimSpace(to); to != "" {
			c.EmailTo = append(c.EmailTo, to)
		}
	}
	switch v := getenv("WEBHOOK_ALLOW_PRIVATE"); v {
	case "", "0":
	case "1":
		c.AllowPrivate = true
	default:
		return Config{}, fmt.Errorf("WEBHOOK_ALLOW_PRIVATE=%q: want 1 or nothing", v)
	}
	var errs []error
	email := map[string]bool{"SMTP_URL": c.SMTPURL != "", "NOTIFY_EMAIL_TO": len(c.EmailTo) > 0, "NOTIFY_EMAIL_FROM": c.EmailFrom != ""}
	errs = append(errs, allOrNone("e-mail", email, "SMTP_URL", "NOTIFY_EMAIL_TO", "NOTIFY_EMAIL_FROM"))
	hook := map[string]bool{"WEBHOOK_URL": c.WebhookURL != "", "WEBHOOK_SECRET": c.Secret != ""}
	errs = append(errs, allOrNone("webhooks", hook, "WEBHOOK_URL", "WEBHOOK_SECRET"))
	if err := errors.Join(errs...); err != nil {
		return Config{}, err
	}
	return c, nil
}

// allOrNone returns an error naming the missing variables when some but
// not all of names are set.
func allOrNone(what string, set map[string]bool, names ...string) error {
	var have, missing []string
	for _, n := range names {
		if set[n] {
			have = append(have, n)
		} else {
			missing = append(missing, n)
		}
	}
	if len(have) == 0 || len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s set but not %s", what, strings.Join(have, ", "), strings.Join(missing, ", "))
}

// Enabled reports whether any channel is configured.
func (c Config) Enabled() bool { return c.SMTPURL != "" || c.WebhookURL != "" }

// Channels builds the configured channels: "email" and "webhook". A bad
// URL, address or secret is an error here; its text holds no secret.
func (c Config) Channels(logger *slog.Logger) ([]notify.Channel, error) {
	var channels []notify.Channel
	if c.SMTPURL != "" {
		email, err := smtp.New(smtp.Config{URL: c.SMTPURL, From: c.EmailFrom, To: c.EmailTo, Logger: logger})
		if err != nil {
			return nil, fmt.Errorf("SMTP_URL, NOTIFY_EMAIL_FROM, NOTIFY_EMAIL_TO: %w", err)
		}
		channels = append(channels, email)
	}
	if c.WebhookURL != "" {
		hook, err := notify.NewWebhook(notify.WebhookConfig{URL: c.WebhookURL, Secret: c.Secret, AllowPrivate: c.AllowPrivate, Logger: logger})
		if err != nil {
			if errors.Is(err, notify.ErrForbiddenAddress) {
				err = fmt.Errorf("%w (set WEBHOOK_ALLOW_PRIVATE=1 for a receiver on this machine or network)", err)
			}
			return nil, fmt.Errorf("WEBHOOK_URL, WEBHOOK_SECRET: %w", err)
		}
		channels = append(channels, hook)
	}
	return channels, nil
}

// New returns a Notifier of the configured channels that enqueues to q,
// or nil when none is configured.
func New(c Config, q notify.Enqueuer, logger *slog.Logger) (*notify.Notifier, error) {
	if !c.Enabled() {
		return nil, nil
	}
	channels, err := c.Channels(logger)
	if err != nil {
		return nil, err
	}
	return notify.New(notify.Config{Queue: q, Channels: channels, Logger: logger})
}
