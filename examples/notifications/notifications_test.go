package notifications_test

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/examples/notifications"
	"github.com/flowsrun/flows/notify"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestFromEnv(t *testing.T) {
	secret := notify.NewSecret()
	tests := []struct {
		name    string
		env     map[string]string
		want    notifications.Config
		inErr   string
		enabled bool
	}{
		{name: "nothing", env: map[string]string{}},
		{name: "e-mail", env: map[string]string{"SMTP_URL": "smtp://u:p@127.0.0.1:2525", "NOTIFY_EMAIL_TO": " a@example.com, b@example.com ,", "NOTIFY_EMAIL_FROM": "flows@example.com"},
			want: notifications.Config{SMTPURL: "smtp://u:p@127.0.0.1:2525", EmailTo: []string{"a@example.com", "b@example.com"}, EmailFrom: "flows@example.com"}, enabled: true},
		{name: "webhook", env: map[string]string{"WEBHOOK_URL": "http://127.0.0.1:9000/hook", "WEBHOOK_SECRET": secret, "WEBHOOK_ALLOW_PRIVATE": "1"},
			want: notifications.Config{WebhookURL: "http://127.0.0.1:9000/hook", Secret: secret, AllowPrivate: true}, enabled: true},
		{name: "e-mail without recipients", env: map[string]string{"SMTP_URL": "smtp://127.0.0.1", "NOTIFY_EMAIL_FROM": "f@example.com"}, inErr: "e-mail: SMTP_URL, NOTIFY_EMAIL_FROM set but not NOTIFY_EMAIL_TO"},
		{name: "recipients only", env: map[string]string{"NOTIFY_EMAIL_TO": "a@example.com"}, inErr: "set but not SMTP_URL, NOTIFY_EMAIL_FROM"},
		{name: "webhook without secret", env: map[string]string{"WEBHOOK_URL": "https://hooks.example.com/"}, inErr: "webhooks: WEBHOOK_URL set but not WEBHOOK_SECRET"},
		{name: "bad allow", env: map[string]string{"WEBHOOK_ALLOW_PRIVATE": "yes"}, inErr: "WEBHOOK_ALLOW_PRIVATE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := notifications.FromEnv(env(tt.env))
			if tt.inErr != "" {
				assert.ErrorContains(t, err, tt.inErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, c)
			assert.Equal(t, tt.enabled, c.Enabled())
		})
	}
}

func TestChannels(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	c := notifications.Config{SMTPURL: "smtp://u:planted-pass@127.0.0.1:2525", EmailFrom: "f@example.com", EmailTo: []string{"a@example.com"},
		WebhookURL: "http://127.0.0.1:9000/hook", Secret: notify.NewSecret(), AllowPrivate: true}
	chs, err := c.Channels(log)
	require.NoError(t, err)
	require.Len(t, chs, 2)
	assert.Equal(t, "email", chs[0].Name())
	assert.Equal(t, "webhook", chs[1].Name())

	private := c
	private.AllowPrivate = false
	_, err = private.Channels(log)
	assert.ErrorIs(t, err, notify.ErrForbiddenAddress)
	assert.ErrorContains(t, err, "WEBHOOK_ALLOW_PRIVATE=1")

	bad := c
	bad.SMTPURL = "smtp://u:planted-pass@127.0.0.1:99999"
	_, err = bad.Channels(log)
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "planted-pass")

	badSecret := c
	badSecret.Secret = "whsec_cGxhbnRlZA=="
	_, err = badSecret.Channels(log)
	assert.ErrorIs(t, err, notify.ErrInvalidSecret)
	assert.NotContains(t, err.Error(), "cGxhbnRlZA")

	n, err := notifications.New(notifications.Config{}, nil, log)
	require.NoError(t, err)
	assert.Nil(t, n, "nothing configured, nothing sent")
	mem := queue.NewMemory(queue.MemoryConfig{})
	n, err = notifications.New(c, queue.NewBroker(mem, progress.NewMemoryStore(progress.MemoryConfig{}), queue.BrokerConfig{}), log)
	require.NoError(t, err)
	assert.Equal(t, []string{"email", "webhook"}, n.Channels())
}
