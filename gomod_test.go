package flows_test

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heavyModules are modules that must never be required by the library's
// own go.mod: an importer of the library gets every module it lists in
// their module graph. They belong to the examples, the benchmark command
// or an optional package's own module.
var heavyModules = []string{
	"github.com/chromedp/",         // browser tests of the demo page
	"cloud.google.com/",            // Google's SDKs
	"google.golang.org/",           // gRPC, protobuf, Google APIs
	"go.opentelemetry.io/otel/sdk", // only the OpenTelemetry API may enter the library
	"go.opentelemetry.io/otel/exporters/",
	"go.opentelemetry.io/contrib/",
	"github.com/prometheus/",
	"github.com/jackc/pgx",        // run history lives in its own module
	"github.com/emersion/go-smtp", // a test SMTP server
	"github.com/wneessen/go-mail", // the SMTP sender lives in its own module
}

// TestLibraryModuleStaysLight keeps the library's module graph free of
// what only the examples, benchmarks, browser tests or optional packages
// need (see the Makefile and go.work for where those live).
func TestLibraryModuleStaysLight(t *testing.T) {
	f, err := os.Open("go.mod")
	require.NoError(t, err)
	defer f.Close()

	var required []string
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "require (":
			inBlock = true
			continue
		case inBlock && line == ")":
			inBlock = false
			continue
		case strings.HasPrefix(line, "require "):
			line = strings.TrimPrefix(line, "require ")
		case !inBlock:
			continue
		}
		if fields := strings.Fields(line); len(fields) > 0 && !strings.HasPrefix(fields[0], "//") {
			required = append(required, fields[0])
		}
	}
	require.NoError(t, sc.Err())
	require.Contains(t, required, "github.com/redis/rueidis", "the parser found the requirements")

	for _, mod := range required {
		for _, heavy := range heavyModules {
			assert.False(t, strings.HasPrefix(mod, heavy),
				"go.mod requires %s: move the code that needs it to a module of its own", mod)
		}
	}
}
