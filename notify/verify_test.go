package notify_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/notify"
)

// signedHeader returns the headers of a delivery signed with s.
func signedHeader(s notify.Secret, id string, ts time.Time, body []byte) http.Header {
	h := http.Header{}
	h.Set(notify.HeaderID, id)
	h.Set(notify.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(notify.HeaderSignature, s.Sign(id, ts, body))
	return h
}

func TestVerify(t *testing.T) {
	now := time.Unix(vectorTimestamp, 0)
	current, err := notify.ParseSecret(vectorSecret)
	require.NoError(t, err)
	other := notify.NewSecret()
	otherSecret, err := notify.ParseSecret(other)
	require.NoError(t, err)
	body := []byte(vectorBody)
	good := signedHeader(current, vectorID, now, body)
	with := func(key, value string) http.Header {
		h := good.Clone()
		if value == "" {
			h.Del(key)
		} else {
			h.Set(key, value)
		}
		return h
	}
	tests := []struct {
		name    string
		secrets []string
		header  http.Header
		body    []byte
		now     time.Time
		want    error // nil: accepted
	}{
		{"the known vector", []string{vectorSecret}, good, body, now, nil},
		{"the known vector's header as given", []string{vectorSecret}, with(notify.HeaderSignature, vectorSignature), body, now, nil},
		{"rotated: the old secret still verifies", []string{other, vectorSecret}, good, body, now, nil},
		{"several signatures, one valid", []string{vectorSecret}, with(notify.HeaderSignature, "v1a,bm90IGl0 v1,AAAA "+vectorSignature+" v2,x"), body, now, nil},
		{"within the tolerance", []string{vectorSecret}, good, body, now.Add(4 * time.Minute), nil},
		{"within the tolerance, ahead", []string{vectorSecret}, good, body, now.Add(-4 * time.Minute), nil},
		{"body changed", []string{vectorSecret}, good, []byte(`{"test": 2432232315}`), now, notify.ErrSignature},
		{"body re-encoded", []string{vectorSecret}, good, []byte(`{"test":2432232314}`), now, notify.ErrSignature},
		{"wrong secret", []string{other}, good, body, now, notify.ErrSignature},
		{"id changed", []string{vectorSecret}, with(notify.HeaderID, "msg_other"), body, now, notify.ErrSignature},
		{"timestamp changed", []string{vectorSecret}, with(notify.HeaderTimestamp, strconv.Itoa(vectorTimestamp+1)), body, now, notify.ErrSignature},
		{"only an asymmetric signature", []string{vectorSecret}, with(notify.HeaderSignature, "v1a,"+strings.TrimPrefix(vectorSignature, "v1,")), body, now, notify.ErrSignature},
		{"signature not base64", []string{vectorSecret}, with(notify.HeaderSignature, "v1,!!!"), body, now, notify.ErrSignature},
		{"signed by another secret", []string{vectorSecret}, signedHeader(otherSecret, vectorID, now, body), body, now, notify.ErrSignature},
		{"too old", []string{vectorSecret}, good, body, now.Add(6 * time.Minute), notify.ErrTimestamp},
		{"too far ahead", []string{vectorSecret}, good, body, now.Add(-6 * time.Minute), notify.ErrTimestamp},
		{"timestamp not a number", []string{vectorSecret}, with(notify.HeaderTimestamp, "2021-02-25T15:02:10Z"), body, now, notify.ErrTimestamp},
		{"no id", []string{vectorSecret}, with(notify.HeaderID, ""), body, now, notify.ErrMissingHeader},
		{"no timestamp", []string{vectorSecret}, with(notify.HeaderTimestamp, ""), body, now, notify.ErrMissingHeader},
		{"no signature", []string{vectorSecret}, with(notify.HeaderSignature, ""), body, now, notify.ErrMissingHeader},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := notify.NewVerifier(tt.secrets...)
			require.NoError(t, err)
			v.Now = func() time.Time { return tt.now }
			err = v.Verify(tt.header, tt.body)
			if tt.want == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, tt.want)
		})
	}
}

func TestVerifierTolerance(t *testing.T) {
	v, err := notify.NewVerifier(vectorSecret)
	require.NoError(t, err)
	v.Tolerance = time.Minute
	s, _ := notify.ParseSecret(vectorSecret)
	sent := time.Unix(vectorTimestamp, 0)
	h := signedHeader(s, "msg_1", sent, nil)
	v.Now = func() time.Time { return sent.Add(59 * time.Second) }
	assert.NoError(t, v.Verify(h, nil))
	v.Now = func() time.Time { return sent.Add(61 * time.Second) }
	assert.ErrorIs(t, v.Verify(h, nil), notify.ErrTimestamp)
}

func TestNewVerifierErrors(t *testing.T) {
	_, err := notify.NewVerifier()
	assert.ErrorIs(t, err, notify.ErrInvalidSecret)
	_, err = notify.NewVerifier(vectorSecret, "whsec_short")
	assert.ErrorIs(t, err, notify.ErrInvalidSecret)
	assert.Contains(t, err.Error(), "secret 2")
}

func TestVerifyRequest(t *testing.T) {
	s, _ := notify.ParseSecret(vectorSecret)
	v, err := notify.NewVerifier(vectorSecret)
	require.NoError(t, err)
	body := []byte(`{"type":"task.succeeded"}`)
	req := httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
	req.Header = signedHeader(s, "msg_1", time.Now(), body)
	got, err := v.VerifyRequest(req, 0)
	require.NoError(t, err)
	assert.Equal(t, body, got)

	req = httptest.NewRequest(http.MethodPost, "/hook", bytes.NewReader(body))
	req.Header = signedHeader(s, "msg_1", time.Now(), body)
	_, err = v.VerifyRequest(req, int64(len(body)-1))
	assert.ErrorIs(t, err, notify.ErrBodyTooLarge)
}

// FuzzVerify: whatever the headers and body, Verify returns an error or
// accepts, never panics, and never accepts what was not signed.
func FuzzVerify(f *testing.F) {
	f.Add(vectorID, strconv.Itoa(vectorTimestamp), vectorSignature, []byte(vectorBody))
	f.Add("", "", "", []byte{})
	f.Add("x", "99999999999999999999", "v1, v1,,, v1a,=", []byte("{"))
	v, err := notify.NewVerifier(vectorSecret)
	if err != nil {
		f.Fatal(err)
	}
	v.Now = func() time.Time { return time.Unix(vectorTimestamp, 0) }
	f.Fuzz(func(t *testing.T, id, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(notify.HeaderID, id)
		h.Set(notify.HeaderTimestamp, ts)
		h.Set(notify.HeaderSignature, sig)
		if v.Verify(h, body) == nil {
			// Only the vector itself is signed.
			if id != vectorID || ts != strconv.Itoa(vectorTimestamp) || string(body) != vectorBody {
				t.Fatalf("accepted an unsigned delivery: id %q ts %q sig %q body %q", id, ts, sig, body)
			}
		}
	})
}

// TestVerifierQuotesABadTimestampWhole checks that a long timestamp that is
// not a number is quoted in the error cut before a rune, never within one
// (which %q would show as a stray \x escape).
func TestVerifierQuotesABadTimestampWhole(t *testing.T) {
	v, err := notify.NewVerifier(vectorSecret)
	require.NoError(t, err)
	s, _ := notify.ParseSecret(vectorSecret)
	h := signedHeader(s, "msg_1", time.Unix(vectorTimestamp, 0), nil)
	h.Set(notify.HeaderTimestamp, "1234567890123456789é tail") // é's two bytes straddle byte 20
	err = v.Verify(h, nil)
	require.ErrorIs(t, err, notify.ErrTimestamp)
	assert.Contains(t, err.Error(), `"1234567890123456789..."`)
	assert.NotContains(t, err.Error(), `\x`)
}
