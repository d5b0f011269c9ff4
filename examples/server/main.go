// Command server is the demo server: the flows HTTP API and a web page to
// start flows and watch them run. By default it runs on the in-memory
// backend with workers in the same process, and needs nothing else
// running:
//
//	go run ./examples/server
//
// then open http://localhost:8080.
//
// The example flows (examples/flows) run on the model the environment
// names: GEMINI_API_KEY for Gemini, OPENAI_API_KEY (and OPENAI_BASE_URL)
// for OpenAI or a compatible endpoint, OLLAMA_HOST or OLLAMA_MODEL for
// Ollama. Their web search uses Tavily when TAVILY_API_KEY is set. Without
// these they use an offline scripted model and sample search results,
// labelled as such in the flow list and on the page.
//
// With REDIS_URL set (a redis://, rediss:// or unix:// URL, read as
// rueidis.ParseURL reads it, but with rediss:// and master_set the
// sentinels too are dialed over TLS, and sentinel_password is theirs;
// see the README, Options), the queue and the progress store live in
// Redis instead, so that worker processes (examples/worker) can run the
// flows:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/server -workers 0
//
// With SMTP_URL, NOTIFY_EMAIL_TO and NOTIFY_EMAIL_FROM, or WEBHOOK_URL and
// WEBHOOK_SECRET (WEBHOOK_ALLOW_PRIVATE=1 for a receiver on a private
// network or this machine), it sends an e-mail and a signed webhook about
// every finished task (see examples/notifications), and the page shows on
// each finished card whether they were sent.
//
// Flags; those that name an environment variable take their default
// from it:
//
//	-addr      listen address (ADDR, or ":"+PORT; default ":8080")
//	-workers   flows run at once by the in-process workers (default 8);
//	           0 runs none, and needs REDIS_URL
//	-queue     the Redis queue tasks go to (FLOWS_QUEUE; default "default")
//	-prefix    the prefix of every Redis key (FLOWS_PREFIX; default "flows")
//	-grace     how long running flows may finish on shutdown (default 10s)
//	-cors-origins
//	           comma-separated origins of front ends served elsewhere that
//	           may use the API, as in https://app.example.com
//	           (FLOWS_CORS_ORIGINS; default none)
//	-body-timeout
//	           how long a client may take to send a request body
//	           (default 10s)
//	-healthcheck
//	           instead of serving, ask the server on -addr for GET /flows/
//	           and exit 0 if it answers 200, else 1: the container image
//	           has no shell and no curl for its health check
//	-step-delay, -token-delay
//	           the pace of the example flows on the in-process workers
//	           (default 700ms and 40ms)
//	-ops-refresh
//	           how often the operators' page at /ops/ reads the stats
//	           (default 5s, at least 100ms)
//	-wait-replicas, -enqueue-delay, -ack-delay
//	           with Redis: durable mode, and the delays that share scripts
//	           at low rates (FLOWS_WAIT_REPLICAS, FLOWS_ENQUEUE_DELAY,
//	           FLOWS_ACK_DELAY; default 0)
//	-caller-starts, -caller-per, -caller-max-pending, -caller-max-streams,
//	-trusted-proxies
//	           the limits per caller, and the proxies whose X-Forwarded-For
//	           names an anonymous caller (FLOWS_CALLER_STARTS,
//	           FLOWS_CALLER_PER, FLOWS_CALLER_MAX_PENDING,
//	           FLOWS_CALLER_MAX_STREAMS, FLOWS_TRUSTED_PROXIES; none in
//	           memory, on Redis 600 starts a minute, 1,000 tasks waiting
//	           and 100 streams unless set, 0 turning one off)
//
// The README's "The demo server" lists them all.
//
// Observability and history:
//
//	GET /metrics   the metrics in the Prometheus text format (always)
//	OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
//	               export every task's trace over OTLP/HTTP, as in
//	               http://127.0.0.1:4318; the other OTEL_EXPORTER_OTLP_*
//	               variables and OTEL_SERVICE_NAME apply
//	DATABASE_URL   write every task the in-process workers end to the run
//	               history in PostgreSQL (pghistory), as in
//	               postgres://user:pass@127.0.0.1:5432/flows; the server
//	               fails to start if it cannot reach it
//
// It stops gracefully on SIGINT or SIGTERM: the HTTP server stops taking
// requests and closes live streams (browsers reconnect and resume), then
// the workers finish their running flows within their grace period.
package main

import (
	"context"
	"errors"
	"flag"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		logger.Error("bad configuration", "err", err)
		os.Exit(2)
	}
	cfg.Logger = logger
	if cfg.Healthcheck {
		if err := healthcheck(context.Background(), cfg.Addr); err != nil {
			logger.Error("unhealthy", "err", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // from now on a second signal ends the process at once
	}()
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		logger.Error("cannot listen", "addr", cfg.Addr, "err", err)
		os.Exit(1)
	}
	if err := serve(ctx, cfg, ln); err != nil {
		logger.Error("server stopped", "err", err)
		os.Exit(1)
	}
}
