package redisurl

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/internal/redistest"
)

// TestConnectSaysWhichFormToUse gives Connect a Redis Sentinel setup
// named in the wrong form: a sentinel without master_set (rueidis then
// connects to it as to a Redis, where the backend's commands fail later
// and for ever, or, given several, takes them for cluster nodes and asks
// them for CLUSTER SLOTS), and a Redis that is no sentinel with
// master_set. Connect fails, and its error says what to change in
// REDIS_URL, not only what the server refused.
func TestConnectSaysWhichFormToUse(t *testing.T) {
	s := redistest.StartSentinel(t, redistest.SentinelOptions{Sentinels: 2})
	sentinel := "redis://" + s.Sentinels[0].Addr()
	primary := "redis://" + s.Data[0].Addr()
	for _, tt := range []struct {
		name, url string
		contains  []string
	}{
		{"a sentinel without master_set", sentinel, []string{"is a Redis Sentinel", "master_set=<name>"}},
		{"sentinels without master_set", sentinel + "?addr=" + s.Sentinels[1].Addr(), []string{"CLUSTER", "master_set=<name>"}},
		{"not a sentinel with master_set", primary + "?master_set=" + url.QueryEscape(s.MasterName()), []string{"SENTINEL", "not a Redis Sentinel", "drop master_set"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, _, err := Connect(tt.url)
			if client != nil {
				client.Close()
			}
			require.Error(t, err)
			for _, want := range tt.contains {
				assert.Contains(t, err.Error(), want)
			}
		})
	}

	client, opt, err := Connect(sentinel + "?master_set=" + url.QueryEscape(s.MasterName()))
	require.NoError(t, err, "the form the README gives")
	client.Close()
	assert.Equal(t, s.MasterName(), opt.Sentinel.MasterSet)
}
