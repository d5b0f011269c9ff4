// Package redisurl reads the REDIS_URL of the example server and worker
// and connects to it, keeping the URL's credentials (its password, a
// secret query parameter) out of every error it returns: such an error is
// logged, and a mistyped URL is the one most likely to be.
package redisurl

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/flowsrun/flows/internal/redact"
	"github.com/flowsrun/flows/internal/redisform"
)

// Options returns the client options raw names (redisform.ParseURL:
// rueidis.ParseURL, its errors without the URL's credentials, each TLS
// connection accepting a certificate valid for the host it dials or for
// the URL's first host, the sentinels dialed over TLS with rediss://),
// with the client-side cache off: the backend reads nothing through it.
func Options(raw string) (rueidis.ClientOption, error) {
	opt, err := redisform.ParseURL(raw)
	if err != nil {
		return opt, fmt.Errorf("REDIS_URL: %w", err)
	}
	opt.DisableCache = true
	return opt, nil
}

// Connect opens a client on the Redis raw names, and returns it with its
// options. It fails if Redis cannot be reached or refuses the
// credentials, and if raw names a Redis Sentinel in a form that does not
// reach its primary (see redisform): such an error says what to change
// in the URL.
func Connect(raw string) (rueidis.Client, rueidis.ClientOption, error) {
	opt, err := Options(raw)
	if err != nil {
		return nil, opt, err
	}
	addrs := strings.Join(opt.InitAddress, ",")
	client, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, opt, fmt.Errorf("connect to Redis at %s: %w%s", addrs, redact.Error(err, redact.Secrets(raw)...), redisform.Hint(opt, err))
	}
	if err := redisform.Check(client, opt); err != nil {
		client.Close()
		return nil, opt, fmt.Errorf("connect to Redis at %s: %w", addrs, err)
	}
	return client, opt, nil
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
