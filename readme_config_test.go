package flows_test

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/progress"
	"github.com/flowsrun/flows/queue"
	"github.com/flowsrun/flows/queue/redisbackend"
	"github.com/flowsrun/flows/ssehttp"
)

// TestReadmeConfigTables holds the README's tables of config structs to
// the structs: a row for every exported field, and no row for a field
// that is gone.
func TestReadmeConfigTables(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	for _, c := range []struct {
		line string // the line the table follows
		typ  reflect.Type
	}{
		{"### `ssehttp.Config`", reflect.TypeFor[ssehttp.Config]()},
		{"`ssehttp.CORS`:", reflect.TypeFor[ssehttp.CORS]()},
		{"### `queue.WorkerConfig`", reflect.TypeFor[queue.WorkerConfig]()},
		{"### `queue.BrokerConfig`", reflect.TypeFor[queue.BrokerConfig]()},
		{"### `redisbackend.Config`", reflect.TypeFor[redisbackend.Config]()},
	} {
		t.Run(c.typ.String(), func(t *testing.T) {
			listed := tableFields(t, string(readme), c.line)
			for i := range c.typ.NumField() {
				if f := c.typ.Field(i); f.IsExported() {
					assert.True(t, listed[f.Name], "%s.%s has no row in the README's table under %q", c.typ, f.Name, c.line)
					delete(listed, f.Name)
				}
			}
			for name := range listed {
				t.Errorf("the README's table under %q has a row for %s, which %s does not have", c.line, name, c.typ)
			}
		})
	}
}

// TestReadmeMemoryConfigTable holds the README's one table of the two
// in-memory configs, whose rows name each field with its package and
// type (`progress.MemoryConfig.Retention`), to the structs: a row for
// every exported field, and no row for a field that is gone.
func TestReadmeMemoryConfigTable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	const line = "### `progress.MemoryConfig` and `queue.MemoryConfig`"
	_, rest, ok := strings.Cut(string(readme), "\n"+line+"\n")
	require.True(t, ok, "the README has the line %q", line)
	row := regexp.MustCompile("(?m)^\\| `((?:progress|queue)\\.MemoryConfig)\\.([A-Za-z]+)`")
	listed := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(strings.SplitN(rest, "\n#", 2)[0], -1) {
		listed[m[1]+"."+m[2]] = true
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[progress.MemoryConfig](), reflect.TypeFor[queue.MemoryConfig]()} {
		for i := range typ.NumField() {
			if f := typ.Field(i); f.IsExported() {
				name := typ.String() + "." + f.Name
				assert.True(t, listed[name], "%s has no row in the README's table under %q", name, line)
				delete(listed, name)
			}
		}
	}
	for name := range listed {
		t.Errorf("the README's table under %q has a row for %s, which does not exist", line, name)
	}
}

// tableFields returns the names in the first column of the first table
// after the line line of readme: the code spans of each row's first cell.
func tableFields(t *testing.T, readme, line string) map[string]bool {
	t.Helper()
	_, rest, ok := strings.Cut(readme, "\n"+line+"\n")
	require.True(t, ok, "the README has the line %q", line)
	name := regexp.MustCompile("`([A-Za-z]+)`")
	fields := map[string]bool{}
	rows := 0
	for l := range strings.SplitSeq(rest, "\n") {
		if !strings.HasPrefix(l, "|") {
			if rows > 0 {
				break
			}
			continue
		}
		rows++
		if rows <= 2 { // the header and its rule
			continue
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(l, "|"), "|")
		for _, m := range name.FindAllStringSubmatch(first, -1) {
			fields[m[1]] = true
		}
	}
	require.NotEmpty(t, fields, "the table under %q has rows", line)
	return fields
}
