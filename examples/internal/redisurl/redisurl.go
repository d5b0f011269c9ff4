// Package redisurl reads the REDIS_URL of the example server and worker
// and connects to it, keeping the URL's credentials (its password, a
// secret query parameter) out of every error it returns: such an error is
// logged, and a mistyped URL is the one most likely to be.
package redisurl

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/redact"
)

// Options returns the client options raw names (rueidis.ParseURL), with
// the client-side cache off: the backend reads nothing through it.
func Options(raw string) (rueidis.ClientOption, error) {
	opt, err := rueidis.ParseURL(raw)
	if err != nil {
		return opt, fmt.Errorf("REDIS_URL: %w", redact.Error(err, redact.Secrets(raw)...))
	}
	opt.DisableCache = true
	return opt, nil
}

// Connect opens a client on the Redis raw names, and returns it with its
// options. It fails if Redis cannot be reached or refuses the
// credentials, and if raw names a Redis Sentinel in a form that does not
// reach its primary: a sentinel without master_set (rueidis would talk
// to the sentinel itself, or take several for cluster nodes), or
// master_set on a server that is no sentinel. Such an error says what to
// change in the URL.
func Connect(raw string) (rueidis.Client, rueidis.ClientOption, error) {
	opt, err := Options(raw)
	if err != nil {
		return nil, opt, err
	}
	addrs := strings.Join(opt.InitAddress, ",")
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, opt, fmt.Errorf("connect to Redis at %s: %w%s", addrs, redact.Error(err, redact.Secrets(raw)...), formHint(opt, err))
	}
	if opt.Sentinel.MasterSet == "" && client.Mode() == rueidis.ClientModeStandalone && isSentinel(client) {
		client.Close()
		return nil, opt, fmt.Errorf("connect to Redis at %s: it is a Redis Sentinel, which holds no data: %s", addrs, nameTheMaster)
	}
	return client, opt, nil
}

// nameTheMaster says how REDIS_URL names a primary through its sentinels.
const nameTheMaster = "name the master the sentinels watch with master_set=<name> in REDIS_URL " +
	"(redis://sentinel1:26379?addr=sentinel2:26379&master_set=mymaster)"

// formHint returns what to change in REDIS_URL when err, rueidis's
// refusal to connect, comes of naming a sentinel as a Redis or a Redis as
// a sentinel; "" otherwise.
func formHint(opt rueidis.ClientOption, err error) string {
	re, ok := rueidis.IsRedisErr(err)
	if !ok {
		return ""
	}
	switch msg := re.Error(); {
	case opt.Sentinel.MasterSet == "" && strings.Contains(msg, "unknown command 'CLUSTER'"):
		// Given several addresses, rueidis takes them for cluster nodes.
		return "; if these are Redis Sentinels, " + nameTheMaster
	case opt.Sentinel.MasterSet != "" && strings.Contains(msg, "unknown command 'SENTINEL'"):
		return "; it is not a Redis Sentinel: drop master_set from REDIS_URL to use it directly, or name the sentinels"
	}
	return ""
}

// isSentinel reports whether the server client reaches is a Redis
// Sentinel (INFO server says redis_mode:sentinel). A server that refuses
// INFO is taken for a Redis.
func isSentinel(client rueidis.Client) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	info, err := client.Do(ctx, client.B().Info().Section("server").Build()).ToString()
	return err == nil && strings.Contains(info, "redis_mode:sentinel")
}

// WaitReplicas reads the value of -wait-replicas (FLOWS_WAIT_REPLICAS):
// the backend's durable mode, redisbackend.Config.WaitReplicas, a number
// of replicas, 0 or more.
func WaitReplicas(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("-wait-replicas %q: must be a number, 0 or more", v)
	}
	return n, nil
}

// Delay reads the value v of a batching delay flag of the backend
// (-enqueue-delay, -fetch-delay, -ack-delay, or the environment variable
// behind it): a duration of zero or more. name is the flag's name, which
// the error gives, as it gives example, a value that would do.
func Delay(name, v, example string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("-%s %q: must be a duration of zero or more, as %s", name, v, example)
	}
	return d, nil
}
