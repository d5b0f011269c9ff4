# syntax=docker/dockerfile:1
#
# The example server and worker as small images: static binaries (no cgo)
# on distroless's static base, which holds CA certificates, time zone data
# and a non-root user, and no shell. Build from the repository root, since
# the examples are a module of their own tied to the library by go.work:
#
#	docker build --target server -t flows-server .
#	docker build --target worker -t flows-worker .
#
# compose.yaml builds and runs both. TestDockerfile (container_test.go)
# runs this file's go build without an engine and checks that the
# binaries are static.

ARG GO_VERSION=1.25

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# No "go mod download" layer first: in a workspace it fetches every module
# of the workspace modules' graphs (1.2 GB, langchaingo's providers included),
# where the build fetches the 68 MB it needs. The module and build caches
# are cache mounts instead, kept between builds. CGO_ENABLED=0: the
# binaries need no C library, so they run on a base image without one.
ENV CGO_ENABLED=0
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags="-s -w" -o /out/ ./examples/server ./examples/worker

# The worker: takes tasks from Redis (REDIS_URL) and runs the example flows.
FROM gcr.io/distroless/static-debian12:nonroot AS worker
COPY --from=build /out/worker /usr/local/bin/worker
USER nonroot:nonroot
ENTRYPOINT ["/usr/local/bin/worker"]

# The web process: the API and the demo page on :8080 (the default target).
FROM gcr.io/distroless/static-debian12:nonroot AS server
COPY --from=build /out/server /usr/local/bin/server
USER nonroot:nonroot
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/server", "-healthcheck"]
ENTRYPOINT ["/usr/local/bin/server"]
