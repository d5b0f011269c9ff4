// Command worker runs flows and nothing else: it takes tasks from a Redis
// queue, runs the example flows, and records their progress in the same
// Redis, where a web process (examples/server started with REDIS_URL and
// -workers 0) serves them to browsers. Start as many workers as the load
// needs, on as many machines as you like:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/worker -concurrency 16
//
// REDIS_URL is required: a redis://, rediss:// or unix:// URL, read as
// rueidis.ParseURL reads it, but with rediss:// and master_set the
// sentinels too are dialed over TLS, and sentinel_password is theirs
// (see the README, Options). A Redis Cluster is named by any of its nodes, the
// others in addr parameters:
//
//	REDIS_URL='redis://10.0.0.1:7000?addr=10.0.0.2:7000&addr=10.0.0.3:7000'
//
// Flags, some with an environment variable as their default:
//
//	-concurrency  flows run at once (default 10)
//	-queue        the queue to take tasks from (FLOWS_QUEUE; default "default")
//	-prefix       the prefix of every Redis key (FLOWS_PREFIX; default "flows")
//	-lease        how long a task stays claimed without news from this
//	              worker: if the worker dies, its tasks run elsewhere once
//	              the lease has passed (default 30s)
//	-grace        on shutdown, how long running flows may finish before
//	              they are interrupted and their tasks handed back (default 30s)
//	-metrics-addr serve the worker's metrics at /metrics on this address,
//	              in the Prometheus text format (default: none)
//
// DATABASE_URL, when set, makes the worker write every task it ends to the
// run history in PostgreSQL (pghistory); OTEL_EXPORTER_OTLP_ENDPOINT makes
// it export the spans of its runs over OTLP/HTTP, in the traces that the
// web process started.
//
// With SMTP_URL, NOTIFY_EMAIL_TO and NOTIFY_EMAIL_FROM, or WEBHOOK_URL and
// WEBHOOK_SECRET (WEBHOOK_ALLOW_PRIVATE=1 for a receiver on a private
// network), the worker sends an e-mail and a signed webhook about every
// task it ends, and delivers the notifications queued by other processes
// (see examples/notifications). Give every worker the same settings.
//
// The example flows choose their model and search tool from the
// environment (GEMINI_API_KEY, TAVILY_API_KEY, ...; see examples/flows),
// so the API keys belong in the workers' environment.
//
// On SIGTERM or SIGINT it stops fetching, lets the flows in flight finish
// within -grace, hands the others back to the queue for other workers, and
// exits with status 0. A second signal ends it at once.
package main

import (
	"os"
	"syscall"

	exampleflows "github.com/flowsrun/flows/examples/flows"
)

func main() {
	os.Exit(command(os.Args[1:], os.Getenv, os.Stderr, exampleflows.Register, os.Interrupt, syscall.SIGTERM))
}
