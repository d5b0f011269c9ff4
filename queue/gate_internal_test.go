package queue

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/registry"
)

// admitting is a Memory backend that is an Admitter, as the Redis one is,
// and passes on what each Admit call names.
type admitting struct {
	*Memory
	calls chan map[string]Limit
}

func (a admitting) Admit(_ context.Context, limits map[string]Limit) (time.Duration, error) {
	a.calls <- limits
	return time.Second, nil
}

// TestGatekeeperDrainsFlowsWithoutLimits: the first Admit of a worker
// names the flows of its registry without limits (internal ones too),
// each with the zero Limit, next to the limited ones with theirs, so that
// the tasks still waiting behind limits a deploy removed are let
// through; the next calls, a second apart, name the limited ones only.
func TestGatekeeperDrainsFlowsWithoutLimits(t *testing.T) {
	noop := flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil })
	reg := registry.New()
	reg.MustRegister("capped", noop, registry.Concurrency(2))
	reg.MustRegister("plain", noop)
	reg.MustRegister("inner", noop, registry.Internal())
	backend := admitting{Memory: NewMemory(MemoryConfig{}), calls: make(chan map[string]Limit, 16)}
	w := NewWorker(backend, progress.NewMemoryStore(progress.MemoryConfig{}),
		WorkerConfig{Registry: reg, Logger: slog.New(slog.DiscardHandler)})
	runWorker(t, w)

	next := func() map[string]Limit {
		t.Helper()
		select {
		case limits := <-backend.calls:
			return limits
		case <-time.After(10 * time.Second):
			require.FailNow(t, "no Admit call")
			return nil
		}
	}
	assert.Equal(t, map[string]Limit{"capped": {Concurrency: 2}, "plain": {}, "inner": {}}, next(),
		"the first call drains the gates of the flows without limits")
	assert.Equal(t, map[string]Limit{"capped": {Concurrency: 2}}, next(),
		"the next names the limited flows only")
}
