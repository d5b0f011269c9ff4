package refusal_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/internal/refusal"
)

func TestTransient(t *testing.T) {
	for code, want := range map[int]bool{
		408: true, 409: true, 429: true, 500: true, 502: true, 503: true, 599: true,
		200: false, 307: false, 400: false, 401: false, 403: false, 404: false,
		410: false, 413: false, 422: false, 600: false,
	} {
		assert.Equal(t, want, refusal.Transient(code), "Transient(%d)", code)
	}
}

func TestNoStatusIsBothRefusedAndTransient(t *testing.T) {
	for code := 100; code < 700; code++ {
		assert.False(t, refusal.Status(code) && refusal.Transient(code), "%d is both", code)
	}
}
