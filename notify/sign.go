package notify

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every Standard Webhooks signing secret: the secret
// is SecretPrefix followed by the standard base64 encoding of its bytes.
const SecretPrefix = "whsec_"

// Limits of a secret's size, in bytes, as Standard Webhooks sets them.
const (
	MinSecretBytes = 24
	MaxSecretBytes = 64
)

// ErrInvalidSecret is returned (wrapped) for a signing secret that is not
// "whsec_" followed by the base64 of 24 to 64 bytes. Its text never
// includes the secret.
var ErrInvalidSecret = errors.New("notify: invalid webhook secret")

// Secret is a webhook signing secret. Its String, GoString and LogValue
// never show the key, so a Secret can be printed or logged by mistake
// without leaking it.
type Secret struct{ key []byte }

// ParseSecret reads a secret given as "whsec_<base64>".
func ParseSecret(s string) (Secret, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), SecretPrefix)
	if !ok {
		return Secret{}, fmt.Errorf("%w: must start with %q", ErrInvalidSecret, SecretPrefix)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		// err quotes the offending byte and its offset: part of the
		// secret. Say only what is wrong.
		return Secret{}, fmt.Errorf("%w: the part after %q is not standard base64", ErrInvalidSecret, SecretPrefix)
	}
	if len(key) < MinSecretBytes || len(key) > MaxSecretBytes {
		return Secret{}, fmt.Errorf("%w: %d bytes, want %d to %d", ErrInvalidSecret, len(key), MinSecretBytes, MaxSecretBytes)
	}
	return Secret{key: key}, nil
}

// NewSecret returns a new random secret of 32 bytes, as "whsec_<base64>",
// to hand to a webhook's receiver.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// String returns a placeholder, never the secret.
func (s Secret) String() string { return SecretPrefix + "[redacted]" }

// GoString returns a placeholder, never the secret (for %#v).
func (s Secret) GoString() string { return s.String() }

// LogValue returns a placeholder, never the secret (for slog).
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// IsZero reports whether s holds no key.
func (s Secret) IsZero() bool { return len(s.key) == 0 }

// Sign returns the signature of one delivery as it goes in the
// webhook-signature header: "v1," followed by the base64 of
// HMAC-SHA256(key, id + "." + timestamp + "." + body), the timestamp in
// Unix seconds.
func (s Secret) Sign(id string, timestamp time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(s.mac(id, strconv.FormatInt(timestamp.Unix(), 10), body))
}

func (s Secret) mac(id, timestamp string, body []byte) []byte {
	m := hmac.New(sha256.New, s.key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(timestamp))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}
