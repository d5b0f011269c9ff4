package ssehttp

import (
	"fmt"
	"net/http"
)

// IdempotencyKeyHeader is the request header that makes a start-task safe
// to repeat: see startTask and queue.EnqueueOptions.IdempotencyKey.
const IdempotencyKeyHeader = "Idempotency-Key"

// MaxIdempotencyKeyLen is the longest Idempotency-Key accepted, in bytes.
const MaxIdempotencyKeyLen = 255

// idempotencyKey returns the Idempotency-Key of r ("" when it has none),
// or a message for a 400 answer when the header is given twice, empty,
// longer than MaxIdempotencyKeyLen, or holds a byte that is not printable
// ASCII (space to tilde). The key is taken as sent, quotes included.
func idempotencyKey(r *http.Request) (key, msg string) {
	values := r.Header.Values(IdempotencyKeyHeader)
	switch {
	case len(values) == 0:
		return "", ""
	case len(values) > 1:
		return "", "Idempotency-Key given more than once"
	}
	key = values[0]
	if key == "" {
		return "", "Idempotency-Key is empty"
	}
	if len(key) > MaxIdempotencyKeyLen {
		return "", fmt.Sprintf("Idempotency-Key is longer than %d bytes", MaxIdempotencyKeyLen)
	}
	for i := range len(key) {
		if c := key[i]; c < 0x20 || c > 0x7e {
			return "", fmt.Sprintf("Idempotency-Key holds a byte that is not printable ASCII at offset %d", i)
		}
	}
	return key, ""
}
