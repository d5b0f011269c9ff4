# Targets a newcomer runs; each is one command.
#
# The repository holds several Go modules, tied together by go.work: the
# library (.), the examples (./examples), the benchmark command
# (./cmd/flowbench), the OpenTelemetry tests with the SDK (./oteltest),
# the SMTP channel of notify (./notify/smtp) and the run history in
# PostgreSQL (./pghistory). PKGS names the packages of all of them, since
# ./... stops at a nested module's directory.
PKGS := ./... ./examples/... ./cmd/flowbench/... ./oteltest/... ./notify/smtp/... ./pghistory/...

.PHONY: test bench lint run

# test: vet, then every test with the race detector, never cached. The
# Redis backend's package takes about six minutes under the race detector
# on a quiet 2-core machine and has gone past go test's default limit of
# ten minutes on a loaded one; -timeout keeps a hang caught well within
# CI's time.
test:
	go vet $(PKGS) && go test -race -count=1 -timeout 20m $(PKGS)

# bench: every benchmark, no tests, with allocations.
bench:
	go test -run '^$$' -bench . -benchmem $(PKGS)

# lint: fail if a file is not gofmt-formatted, then vet.
lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "run gofmt -w on the files above"; exit 1; } && go vet $(PKGS)

# run: the demo server on :8080, in memory, with the example flows.
run:
	go run ./examples/server
