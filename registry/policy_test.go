package registry_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/registry"
)

func TestPolicyOptions(t *testing.T) {
	r := registry.New()
	backoff := func(int) time.Duration { return time.Second }
	require.NoError(t, r.Register("limited", flow.Func(noop),
		registry.Timeout(time.Minute), registry.MaxAttempts(5), registry.Backoff(backoff),
		registry.Concurrency(2), registry.Rate(10, time.Minute)))
	e, err := r.Lookup("limited")
	require.NoError(t, err)
	p := e.Policy
	assert.Equal(t, time.Minute, p.Timeout)
	assert.Equal(t, 5, p.MaxAttempts)
	assert.Equal(t, time.Second, p.Backoff(1))
	assert.Equal(t, 2, p.Concurrency)
	assert.Equal(t, 10, p.Rate)
	assert.Equal(t, time.Minute, p.Per)
	assert.True(t, p.Limited())

	require.NoError(t, r.Register("plain", flow.Func(noop)))
	e, err = r.Lookup("plain")
	require.NoError(t, err)
	assert.Zero(t, e.Policy.Timeout)
	assert.Zero(t, e.Policy.MaxAttempts)
	assert.Nil(t, e.Policy.Backoff)
	assert.Zero(t, e.Policy.Concurrency)
	assert.Zero(t, e.Policy.Rate)
	assert.False(t, e.Policy.Limited())

	require.Contains(t, r.Limited(), "limited")
	assert.Equal(t, 2, r.Limited()["limited"].Concurrency)
	assert.NotContains(t, r.Limited(), "plain", "Limited lists the flows with a concurrency or rate limit only")
	require.NoError(t, r.Register("inner", flow.Func(noop), registry.Internal()))
	assert.Equal(t, []string{"inner", "plain"}, r.Unlimited(), "Unlimited lists the others, internal ones too")
}

// TestPolicyInvalid: a policy value that cannot work fails Register with
// an error that names the flow, the option and the value, and registers
// nothing.
func TestPolicyInvalid(t *testing.T) {
	tests := []struct {
		name string
		opt  registry.Option
		want string
	}{
		{"zero timeout", registry.Timeout(0), `flow "f": Timeout 0s must be positive`},
		{"negative timeout", registry.Timeout(-time.Second), `flow "f": Timeout -1s must be positive`},
		{"zero attempts", registry.MaxAttempts(0), `flow "f": MaxAttempts 0 must be at least 1`},
		{"nil backoff", registry.Backoff(nil), `flow "f": Backoff is nil`},
		{"zero concurrency", registry.Concurrency(0), `flow "f": Concurrency 0 must be at least 1`},
		{"negative concurrency", registry.Concurrency(-2), `flow "f": Concurrency -2 must be at least 1`},
		{"zero rate", registry.Rate(0, time.Second), `flow "f": Rate 0 per 1s: the number of starts must be at least 1`},
		{"zero period", registry.Rate(5, 0), `flow "f": Rate 5 per 0s: the period must be at least 1ms`},
		{"sub-millisecond period", registry.Rate(5, time.Microsecond), `flow "f": Rate 5 per 1µs: the period must be at least 1ms`},
		{"period over a day", registry.Rate(5, 25*time.Hour), `flow "f": Rate 5 per 25h0m0s: the period must be at most 24h0m0s`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := registry.New()
			err := r.Register("f", flow.Func(noop), registry.Description("d"), tt.opt)
			require.Error(t, err)
			assert.True(t, errors.Is(err, registry.ErrInvalid), "wraps ErrInvalid: %v", err)
			assert.Contains(t, err.Error(), tt.want)
			_, err = r.Lookup("f")
			assert.ErrorIs(t, err, registry.ErrUnknownFlow, "nothing is registered")
			assert.Panics(t, func() { r.MustRegister("f", flow.Func(noop), tt.opt) })
		})
	}
}
