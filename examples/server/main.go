// Command server is the demo server: the flows HTTP API and a web page to
// start flows and watch them run, on the in-memory backend with workers in
// the same process. It needs nothing else running:
//
//	go run ./examples/server
//
// then open http://localhost:8080.
//
// Flags, each with an environment variable as its default:
//
//	-addr      listen address (ADDR, or ":"+PORT; default ":8080")
//	-workers   flows run at once by the in-process workers (default 8)
//	-grace     how long running flows may finish on shutdown (default 10s)
//	-step-delay, -token-delay
//	           the pace of the example flows (default 700ms and 40ms)
//
// REDIS_URL is reserved for the Redis backend, which is not built yet: the
// server refuses to start when it is set rather than silently running in
// memory.
//
// It stops gracefully on SIGINT or SIGTERM: the HTTP server stops taking
// requests and closes live streams (browsers reconnect and resume), then
// the workers finish their running flows within their grace period.
package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := parseConfig(os.Args[1:], os.Getenv)
	if err != nil {
		logger.Error("bad configuration", "err", err)
		os.Exit(2)
	}
	cfg.Logger = logger
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
