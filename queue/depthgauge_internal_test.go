package queue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/embedded"
)

// deadlineReader is a DepthReader that fails while down and records how
// long each read was given.
type deadlineReader struct {
	down  bool
	given []time.Duration
}

func (r *deadlineReader) Depth(ctx context.Context) (Depth, error) {
	d, ok := ctx.Deadline()
	if !ok {
		r.given = append(r.given, -1)
	} else {
		r.given = append(r.given, time.Until(d))
	}
	if r.down {
		return Depth{}, errors.New("backend unreachable")
	}
	return Depth{Ready: 1}, nil
}

// countObserver counts what a callback observes.
type countObserver struct {
	embedded.Int64Observer
	n int
}

func (o *countObserver) Observe(int64, ...metric.ObserveOption) { o.n++ }

// TestDepthGaugeProbesShortlyWhileFailing: the first read that fails has
// the whole operation timeout (a slow backend is not taken for a dead
// one), but while the reads fail, each collection's read is bounded by
// depthProbeTimeout, so that a scrape or an export does not wait the
// whole timeout at every collection of an outage. The first read that
// works ends the probing.
func TestDepthGaugeProbesShortlyWhileFailing(t *testing.T) {
	r := &deadlineReader{down: true}
	g := &depthGauge{backend: r, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	o := &countObserver{}
	ctx := context.Background()

	require.NoError(t, g.observe(ctx, o)) // fails: the outage starts
	require.NoError(t, g.observe(ctx, o)) // fails again: a probe
	r.down = false
	require.NoError(t, g.observe(ctx, o)) // a probe that works
	require.NoError(t, g.observe(ctx, o)) // healthy again
	assert.Equal(t, 8, o.n, "two collections that worked, four counts each")

	require.Len(t, r.given, 4)
	assert.Greater(t, r.given[0], depthProbeTimeout, "the first read has the operation timeout")
	assert.LessOrEqual(t, r.given[1], depthProbeTimeout, "a read during an outage is a short probe")
	assert.LessOrEqual(t, r.given[2], depthProbeTimeout, "a read during an outage is a short probe")
	assert.Greater(t, r.given[3], depthProbeTimeout, "once a read works, reads have the operation timeout again")
}
