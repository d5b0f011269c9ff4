package main

import (
	"bytes"
	"context"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/flowsrun/flows/internal/redistest"
)

// TestSentinelWithoutMasterSet gives the command a sentinel's address
// without master_set, the README's Sentinel form with the name
// forgotten: rueidis connects to the sentinel itself, which refuses the
// backend's commands (unknown command 'ZRANGE'). The command says what to
// add to the URL instead.
func TestSentinelWithoutMasterSet(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Sentinels: 1})
	var out, errw bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	code := run(ctx, []string{"ls"}, &out, &errw, func(k string) string {
		if k == "REDIS_URL" {
			return "redis://" + s.Sentinels[0].Addr()
		}
		return ""
	})
	assert.Equal(t, exitFailed, code)
	assert.Contains(t, errw.String(), "is a Redis Sentinel")
	assert.Contains(t, errw.String(), "master_set=<name>")
}
