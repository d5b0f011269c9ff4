# Targets a newcomer runs; each is one command.
.PHONY: test bench lint run

# test: vet, then every test with the race detector, never cached.
test:
	go vet ./... && go test -race -count=1 ./...

# bench: every benchmark, no tests, with allocations.
bench:
	go test -run '^$$' -bench . -benchmem ./...

# lint: fail if a file is not gofmt-formatted, then vet.
lint:
	@test -z "$$(gofmt -l .)" || { gofmt -l .; echo "run gofmt -w on the files above"; exit 1; } && go vet ./...

# run: the demo server on :8080, in memory, with the example flows.
run:
	go run ./examples/server
