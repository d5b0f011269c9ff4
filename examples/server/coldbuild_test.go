package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// accidentalPackages are import paths (prefixes) that once made, or would
// make, the demo's first build much longer while the demo does not need
// them: gRPC and protobuf (the OTLP exporters), the Prometheus client,
// Google's SDKs (the googleai provider), x/net's HTTP/2 and HTML. The
// BENCHMARKS.md cold build entries say what each cost.
var accidentalPackages = []string{
	"google.golang.org/",
	"cloud.google.com/",
	"github.com/google/generative-ai-go/",
	"github.com/grpc-ecosystem/",
	"go.opentelemetry.io/proto/",
	"go.opentelemetry.io/otel/exporters/",
	"go.opentelemetry.io/contrib/",
	"github.com/prometheus/",
	"golang.org/x/net/http2",
	"golang.org/x/net/html",
	"golang.org/x/net/trace",
	"github.com/chromedp/",
}

// maxDemoPackages bounds the packages `go run ./examples/server` compiles
// (396 when this test was written, the standard library's included), so
// that growth of the demo's cold build is a decision, not an accident:
// raise it, with the new figure in BENCHMARKS.md, when a feature needs it.
const maxDemoPackages = 430

// TestDemoBuildStaysLight keeps the server's and the worker's builds free
// of heavy packages they do not need, and their size within bounds.
func TestDemoBuildStaysLight(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	require.NoError(t, err, "this test lists the demo's packages with the go command: put it on PATH")

	for _, cmd := range []string{"server", "worker"} {
		pkg := "github.com/flowsrun/flows/examples/" + cmd
		out, err := exec.Command(goCmd, "list", "-deps", "-f", "{{.ImportPath}}", pkg).Output()
		require.NoError(t, err, "go list -deps %s", pkg)
		deps := strings.Fields(string(out))
		require.Contains(t, deps, pkg, "go list lists the package itself")
		require.Contains(t, deps, "github.com/redis/rueidis", "go list lists the dependencies")

		for _, dep := range deps {
			for _, bad := range accidentalPackages {
				assert.False(t, strings.HasPrefix(dep, bad),
					"%s imports %s: find the import that brings it (go list -deps -f '{{.ImportPath}}: {{.Imports}}') and avoid it", cmd, dep)
			}
		}
		assert.LessOrEqual(t, len(deps), maxDemoPackages,
			"%s compiles %d packages: see BENCHMARKS.md (the demo's cold build) before raising maxDemoPackages", cmd, len(deps))
		t.Logf("%s: %d packages", cmd, len(deps))
	}
}
