package notify_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/notify"
)

// The vector below was computed apart from this code, with
//
//	printf '%s' 'msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}' |
//	  openssl dgst -sha256 -mac HMAC -macopt hexkey:<hex of the secret's bytes> -binary | base64
const (
	vectorSecret    = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	vectorID        = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	vectorTimestamp = 1614265330
	vectorBody      = `{"test": 2432232314}`
	vectorSignature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignKnownVector(t *testing.T) {
	s, err := notify.ParseSecret(vectorSecret)
	require.NoError(t, err)
	assert.Equal(t, vectorSignature, s.Sign(vectorID, time.Unix(vectorTimestamp, 0), []byte(vectorBody)))
}

func TestParseSecret(t *testing.T) {
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	tests := []struct {
		name   string
		secret string
		inErr  string // "" for a valid secret
	}{
		{"24 bytes", "whsec_" + b64(24), ""},
		{"64 bytes", "whsec_" + b64(64), ""},
		{"spaces around", "  whsec_" + b64(32) + "\n", ""},
		{"empty", "", "must start with"},
		{"no prefix", b64(32), "must start with"},
		{"other prefix", "whsk_" + b64(32), "must start with"},
		{"not base64", "whsec_" + strings.Repeat("!", 40), "not standard base64"},
		{"url-safe base64", "whsec_" + strings.Repeat("-_", 20), "not standard base64"},
		{"too short", "whsec_" + b64(16), "16 bytes, want 24 to 64"},
		{"too long", "whsec_" + b64(65), "65 bytes, want 24 to 64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := notify.ParseSecret(tt.secret)
			if tt.inErr == "" {
				require.NoError(t, err)
				assert.False(t, s.IsZero())
				return
			}
			require.ErrorIs(t, err, notify.ErrInvalidSecret)
			assert.Contains(t, err.Error(), tt.inErr)
			if rest := strings.TrimPrefix(strings.TrimSpace(tt.secret), "whsec_"); len(rest) > 4 {
				assert.NotContains(t, err.Error(), rest[:5], "the error quotes none of the secret")
			}
		})
	}
}

func TestNewSecret(t *testing.T) {
	a, b := notify.NewSecret(), notify.NewSecret()
	assert.NotEqual(t, a, b)
	s, err := notify.ParseSecret(a)
	require.NoError(t, err, "a new secret parses")
	v, err := notify.NewVerifier(a)
	require.NoError(t, err)
	h := signedHeader(s, "msg_1", time.Now(), []byte("{}"))
	assert.NoError(t, v.Verify(h, []byte("{}")))
}

// TestSecretNeverPrinted: a Secret formatted or logged by mistake shows a
// placeholder.
func TestSecretNeverPrinted(t *testing.T) {
	raw := "whsec_" + base64.StdEncoding.EncodeToString([]byte("planted-secret-bytes-0123456789"))
	s, err := notify.ParseSecret(raw)
	require.NoError(t, err)
	key := strings.TrimPrefix(raw, "whsec_")
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "secret", s)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "secret", s, "struct", struct{ S notify.Secret }{s})
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s), fmt.Sprintf("%+v", struct{ S notify.Secret }{s}), logs.String()} {
		assert.NotContains(t, out, key)
		assert.NotContains(t, out, "planted")
	}
	assert.Contains(t, fmt.Sprint(s), "[redacted]")
}
