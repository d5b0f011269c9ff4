package notify

import (
	"crypto/hmac"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flowsrun/flows/internal/text"
)

// The headers of a Standard Webhooks delivery.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultTolerance is how far a delivery's timestamp may be from the
// receiver's clock, either way, when Verifier.Tolerance is zero.
const DefaultTolerance = 5 * time.Minute

// DefaultMaxBodyBytes bounds the body VerifyRequest reads when its limit
// is zero.
const DefaultMaxBodyBytes = 1 << 20

// Errors of verification; each error Verify returns wraps one of them.
var (
	// ErrMissingHeader: a webhook-id, webhook-timestamp or
	// webhook-signature header is absent or empty.
	ErrMissingHeader = errors.New("notify: webhook header missing")
	// ErrTimestamp: the timestamp is not an integer, or is further from
	// now than the tolerance (a replay, or a clock far off).
	ErrTimestamp = errors.New("notify: webhook timestamp not acceptable")
	// ErrSignature: no v1 signature of the header matches the body with
	// any of the verifier's secrets.
	ErrSignature = errors.New("notify: no webhook signature matches")
	// ErrBodyTooLarge: the body is larger than VerifyRequest's limit.
	ErrBodyTooLarge = errors.New("notify: webhook body too large")
)

// Verifier checks deliveries signed per Standard Webhooks, on the
// receiving side. It is safe for concurrent use.
type Verifier struct {
	secrets []Secret
	// Tolerance is how far webhook-timestamp may be from now, either way.
	// Zero means DefaultTolerance.
	Tolerance time.Duration
	// Now returns the current time. Nil means time.Now.
	Now func() time.Time
}

// NewVerifier returns a Verifier for the given secrets ("whsec_<base64>"):
// a delivery is accepted when one of its signatures matches with any of
// them, so that a secret can be rotated without downtime.
func NewVerifier(secrets ...string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, fmt.Errorf("%w: no secret given", ErrInvalidSecret)
	}
	v := &Verifier{}
	for i, s := range secrets {
		sec, err := ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("secret %d: %w", i+1, err)
		}
		v.secrets = append(v.secrets, sec)
	}
	return v, nil
}

// Verify checks a delivery's headers against its body, exactly as
// received (before any JSON decoding: a re-encoded body does not verify).
// It checks that the timestamp is within the tolerance and that one of the
// space-separated signatures of webhook-signature is a valid "v1,"
// signature; others (such as asymmetric "v1a," ones) are skipped. The
// comparison takes constant time. Use the webhook-id header, the same on
// every retry of one delivery, to process each delivery once.
func (v *Verifier) Verify(h http.Header, body []byte) error {
	id, ts, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	switch {
	case id == "":
		return fmt.Errorf("%w: %s", ErrMissingHeader, HeaderID)
	case ts == "":
		return fmt.Errorf("%w: %s", ErrMissingHeader, HeaderTimestamp)
	case sigs == "":
		return fmt.Errorf("%w: %s", ErrMissingHeader, HeaderSignature)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q is not Unix seconds", ErrTimestamp, clip(ts, 20))
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	tolerance := v.Tolerance
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	if d := now().Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off the receiver's clock, more than %s", ErrTimestamp, d.Abs().Round(time.Second), tolerance)
	}
	matched := false
	for _, s := range v.secrets {
		want := s.mac(id, ts, body)
		for sig := range strings.FieldsSeq(sigs) {
			b64, ok := strings.CutPrefix(sig, "v1,")
			if !ok {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				matched = true // no early return: the time taken does not say which matched
			}
		}
	}
	if !matched {
		return ErrSignature
	}
	return nil
}

// VerifyRequest reads r's body, up to maxBytes (DefaultMaxBodyBytes when
// zero or less), and verifies it with r's headers. It returns the body,
// the bytes to decode once verified.
func (v *Verifier) VerifyRequest(r *http.Request, maxBytes int64) ([]byte, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBodyBytes
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("notify: read webhook body: %w", err)
	}
	if int64(len(body)) > maxBytes {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrBodyTooLarge, maxBytes)
	}
	if err := v.Verify(r.Header, body); err != nil {
		return nil, err
	}
	return body, nil
}

// clip returns s cut to at most n bytes before a rune, then "...", for
// error messages.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return text.Clip(s, n) + "..."
}
