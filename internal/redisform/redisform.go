// Package redisform reads a Redis URL (REDIS_URL) into client options
// (ParseURL: rueidis.ParseURL, with its errors' credentials masked and
// each TLS connection verifying the host it dials), and tells one that
// names a Redis Sentinel setup in a form that does not reach its
// primary: a sentinel without master_set, which rueidis takes for a
// Redis (given one address) or for cluster nodes (given several), and
// master_set on a server that is no sentinel. The example server and
// worker, the flows command and flowbench read their URLs with it; all
// but flowbench check their connections with it too, so that such a URL
// stops them with an error that says what to change in it, rather than
// with a refusal of one of the backend's commands.
package redisform

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/redact"
)

// NameTheMaster says how a Redis URL names a primary through its
// sentinels.
const NameTheMaster = "name the master the sentinels watch with master_set=<name> in REDIS_URL " +
	"(redis://sentinel1:26379?addr=sentinel2:26379&master_set=mymaster)"

// ErrSentinel is the error of Check: the URL names a sentinel without
// master_set.
var ErrSentinel = errors.New("it is a Redis Sentinel, which holds no data: " + NameTheMaster)

// Check returns ErrSentinel if client, connected with opt, talks to a
// Redis Sentinel itself (no master_set, and INFO server says
// redis_mode:sentinel), nil otherwise. A server that refuses INFO is
// taken for a Redis.
func Check(client rueidis.Client, opt rueidis.ClientOption) error {
	if opt.Sentinel.MasterSet != "" || client.Mode() != rueidis.ClientModeStandalone {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := client.Do(ctx, client.B().Info().Section("server").Build()).ToString()
	if err == nil && strings.Contains(info, "redis_mode:sentinel") {
		return ErrSentinel
	}
	return nil
}

// Hint returns what to change in the URL when err, rueidis.NewClient's
// refusal to connect with opt, comes of naming sentinels as cluster
// nodes or a Redis as a sentinel, as a clause to append to the error
// ("; ..."); "" otherwise.
func Hint(opt rueidis.ClientOption, err error) string {
	re, ok := rueidis.IsRedisErr(err)
	if !ok {
		return ""
	}
	switch msg := re.Error(); {
	case opt.Sentinel.MasterSet == "" && strings.Contains(msg, "unknown command 'CLUSTER'"):
		// Given several addresses, rueidis takes them for cluster nodes.
		return "; if these are Redis Sentinels, " + NameTheMaster
	case opt.Sentinel.MasterSet != "" && strings.Contains(msg, "unknown command 'SENTINEL'"):
		return "; it is not a Redis Sentinel: drop master_set from REDIS_URL to use it directly, or name the sentinels"
	}
	return ""
}

// ParseURL returns the client options raw names, as rueidis.ParseURL
// reads them, but for two things:
//
//   - Its error keeps raw's credentials out (redact): url.Parse's error,
//     which rueidis.ParseURL returns, quotes the whole URL, password
//     included, and a mistyped URL's error is the one most likely to be
//     logged.
//   - Over TLS (rediss://), TLSConfig.ServerName is left empty, so that
//     each connection verifies the server's certificate against the host
//     it dials (crypto/tls takes the name from the address when none is
//     set). rueidis.ParseURL sets it to the URL's first host, and rueidis
//     dials every node of a Redis Cluster, and the primary it finds
//     through sentinels, with that one tls.Config: a node whose
//     certificate names only itself failed verification, and with the
//     first node listed down, the others could not be reached at all.
//     The address a URL names is dialed as written, so for it nothing
//     changes. A URL cannot set a server name of its own; a caller that
//     needs one (a proxy in front of the servers, say) sets
//     TLSConfig.ServerName on the options returned.
func ParseURL(raw string) (rueidis.ClientOption, error) {
	opt, err := rueidis.ParseURL(raw)
	if err != nil {
		return opt, redact.Error(err, redact.Secrets(raw)...)
	}
	if opt.TLSConfig != nil {
		opt.TLSConfig.ServerName = ""
	}
	return opt, nil
}
