package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/internal/libflow"
	"github.com/flowsrun/flows/registry"
)

func noop(context.Context, *flow.Task) (any, error) { return nil, nil }

// describedFlow describes itself.
type describedFlow struct{ flow.Func }

func (describedFlow) Description() string { return "described by the flow" }

type questionInput struct {
	Question string `json:"question" desc:"what to search for"`
}

func newTyped() *flow.TypedFlow[questionInput, string] {
	return flow.Typed(func(_ context.Context, in questionInput, _ *flow.Task) (string, error) { return in.Question, nil })
}

func TestRegisterAndLookup(t *testing.T) {
	r := registry.New()
	typed := newTyped()
	require.NoError(t, r.Register("web_search_flow", typed, registry.Description("Searches the web"), registry.Label("model", "offline")))

	e, err := r.Lookup("web_search_flow")
	require.NoError(t, err)
	assert.Same(t, typed, e.Flow)
	assert.Equal(t, "web_search_flow", e.Name)
	assert.Equal(t, "Searches the web", e.Description)
	assert.Equal(t, map[string]string{"model": "offline"}, e.Labels)
	assert.Same(t, typed.InputSchema(), e.Schema, "the schema is the flow's own")
}

func TestRegisterDescription(t *testing.T) {
	tests := []struct {
		name string
		f    flow.Flow
		opts []registry.Option
		want string
	}{
		{"none", flow.Func(noop), nil, ""},
		{"from the flow", describedFlow{flow.Func(noop)}, nil, "described by the flow"},
		{"option wins over the flow", describedFlow{flow.Func(noop)}, []registry.Option{registry.Description("from the option")}, "from the option"},
		{"last option wins", flow.Func(noop), []registry.Option{registry.Description("first"), registry.Description("second")}, "second"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := registry.New()
			require.NoError(t, r.Register("f", tt.f, tt.opts...))
			e, err := r.Lookup("f")
			require.NoError(t, err)
			assert.Equal(t, tt.want, e.Description)
		})
	}
}

func TestRegisterDuplicate(t *testing.T) {
	r := registry.New()
	first := flow.Func(noop)
	require.NoError(t, r.Register("poem_flow", first, registry.Description("first")))

	err := r.Register("poem_flow", newTyped(), registry.Description("second"))
	assert.ErrorIs(t, err, registry.ErrDuplicate)
	assert.Contains(t, err.Error(), "poem_flow")

	e, err := r.Lookup("poem_flow")
	require.NoError(t, err)
	assert.Equal(t, "first", e.Description, "the first registration stays")

	assert.PanicsWithError(t, fmt.Sprintf("%s: %q", registry.ErrDuplicate, "poem_flow"), func() {
		r.MustRegister("poem_flow", flow.Func(noop))
	})
	assert.Len(t, r.List(), 1)
}

func TestRegisterInvalid(t *testing.T) {
	var nilTyped *flow.TypedFlow[questionInput, string]
	var nilFunc flow.Func
	tests := []struct {
		name     string
		flowName string
		f        flow.Flow
	}{
		{"empty name", "", flow.Func(noop)},
		{"space", "poem flow", flow.Func(noop)},
		{"slash", "poem/flow", flow.Func(noop)},
		{"leading underscore", "_poem", flow.Func(noop)},
		{"leading dash", "-poem", flow.Func(noop)},
		{"non-ASCII", "poème", flow.Func(noop)},
		{"too long", strings.Repeat("a", 129), flow.Func(noop)},
		{"newline", "poem\n", flow.Func(noop)},
		{"nil flow", "poem", nil},
		{"nil typed flow", "poem", nilTyped},
		{"nil func", "poem", nilFunc},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := registry.New()
			err := r.Register(tt.flowName, tt.f)
			assert.ErrorIs(t, err, registry.ErrInvalid)
			assert.Panics(t, func() { r.MustRegister(tt.flowName, tt.f) })
			assert.Empty(t, r.List(), "nothing registered")
		})
	}
}

func TestRegisterValidNames(t *testing.T) {
	r := registry.New()
	for _, name := range []string{"a", "poem_flow", "Poem", "9lives", "team.flow:v2-beta", strings.Repeat("a", 128)} {
		assert.NoError(t, r.Register(name, flow.Func(noop)), "name %q", name)
	}
	assert.Len(t, r.List(), 6)
}

func TestLookupUnknown(t *testing.T) {
	r := registry.New()
	require.NoError(t, r.Register("poem_flow", flow.Func(noop)))
	for _, name := range []string{"", "nope", "Poem_flow", "poem_flow "} {
		e, err := r.Lookup(name)
		assert.ErrorIs(t, err, registry.ErrUnknownFlow, "name %q", name)
		assert.Nil(t, e)
	}
}

func TestList(t *testing.T) {
	r := registry.New()
	assert.Empty(t, r.List())
	assert.NotNil(t, r.List(), "an empty list, not nil, so it encodes as []")

	require.NoError(t, r.Register("web_search_flow", newTyped(), registry.Description("Searches"), registry.Label("model", "gemini"), registry.Label("tools", "search")))
	require.NoError(t, r.Register("poem_flow", flow.Func(noop), registry.Description("Writes a poem")))
	require.NoError(t, r.Register("Alpha", flow.Func(noop)))

	list := r.List()
	names := make([]string, len(list))
	for i, info := range list {
		names[i] = info.Name
	}
	assert.Equal(t, []string{"Alpha", "poem_flow", "web_search_flow"}, names, "sorted by name")

	b, err := json.Marshal(list)
	require.NoError(t, err)
	assert.JSONEq(t, `[
		{"name": "Alpha", "description": "", "input_schema": {"type": "object"}},
		{"name": "poem_flow", "description": "Writes a poem", "input_schema": {"type": "object"}},
		{"name": "web_search_flow", "description": "Searches",
		 "input_schema": {"type": "object",
			"properties": {"question": {"type": "string", "description": "what to search for"}},
			"required": ["question"], "x-order": ["question"]},
		 "labels": {"model": "gemini", "tools": "search"}}
	]`, string(b))

	list[2].Labels["model"] = "changed"
	assert.Equal(t, "gemini", r.List()[2].Labels["model"], "List returns copies of the labels")
}

func TestInternal(t *testing.T) {
	r := registry.New()
	require.NoError(t, r.Register("poem_flow", flow.Func(noop)))
	require.NoError(t, r.Register("deliver", flow.Func(noop), registry.Internal(), registry.Description("sends")))

	e, err := r.Lookup("deliver")
	require.NoError(t, err, "workers find an internal flow")
	assert.True(t, e.Internal)
	assert.Equal(t, "sends", e.Description)
	list := r.List()
	require.Len(t, list, 1, "List leaves internal flows out")
	assert.Equal(t, "poem_flow", list[0].Name)
	assert.ErrorIs(t, r.Register("deliver", flow.Func(noop)), registry.ErrDuplicate, "the name is taken all the same")
}

func TestConcurrentUse(t *testing.T) {
	r := registry.New()
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("flow-%d-%d", w, i)
				if err := r.Register(name, flow.Func(noop)); err != nil {
					t.Errorf("register %s: %v", name, err)
					return
				}
				if _, err := r.Lookup(name); err != nil {
					t.Errorf("lookup %s: %v", name, err)
				}
				// Everyone also races for one shared name.
				_ = r.Register("shared", flow.Func(noop))
				_ = r.List()
			}
		})
	}
	wg.Wait()
	assert.Len(t, r.List(), workers*each+1)
}

func TestDefaultRegistry(t *testing.T) {
	saved := registry.Default
	registry.Default = registry.New()
	t.Cleanup(func() { registry.Default = saved })

	require.NoError(t, registry.Register("poem_flow", flow.Func(noop), registry.Description("Writes a poem")))
	registry.MustRegister("web_search_flow", newTyped())
	assert.ErrorIs(t, registry.Register("poem_flow", flow.Func(noop)), registry.ErrDuplicate)
	assert.Panics(t, func() { registry.MustRegister("web_search_flow", flow.Func(noop)) })

	e, err := registry.Lookup("poem_flow")
	require.NoError(t, err)
	assert.Equal(t, "Writes a poem", e.Description)
	_, err = registry.Lookup("missing")
	assert.ErrorIs(t, err, registry.ErrUnknownFlow)

	assert.Len(t, registry.List(), 2)
	assert.Equal(t, registry.List(), registry.Default.List(), "the functions use Default")
	assert.Empty(t, saved.List(), "the real Default was left alone")
}

// TestRegisterReservedPrefix: names that begin with "flows." belong to
// this module's own flows (notify's "flows.notify"), whose tasks a worker
// that lacks them hands back for hours rather than fail: Register refuses
// them for a flow of the host's own, and MustRegister panics.
func TestRegisterReservedPrefix(t *testing.T) {
	for _, name := range []string{"flows.mine", "flows.notify", "flows."} {
		t.Run(name, func(t *testing.T) {
			r := registry.New()
			err := r.Register(name, flow.Func(noop))
			require.ErrorIs(t, err, registry.ErrInvalid)
			assert.Contains(t, err.Error(), `names beginning "flows." are reserved`)
			assert.Panics(t, func() { r.MustRegister(name, flow.Func(noop)) })
			_, err = r.Lookup(name)
			assert.ErrorIs(t, err, registry.ErrUnknownFlow, "nothing registered")
		})
	}
	r := registry.New()
	for _, name := range []string{"flows", "flowsy.x", "Flows.x", "app.flows.x", "flows_x"} {
		assert.NoError(t, r.Register(name, flow.Func(noop)), "name %q", name)
	}
}

// TestRegisterLibraryFlow: a flow of this module's own packages, marked
// with libflow.Mark, is registered under a reserved name, and the
// registry keeps the flow itself (its schema, its Lookup), not the mark.
func TestRegisterLibraryFlow(t *testing.T) {
	r := registry.New()
	typed := newTyped()
	require.NoError(t, r.Register("flows.lib", libflow.Mark(typed), registry.Internal()))
	e, err := r.Lookup("flows.lib")
	require.NoError(t, err)
	assert.Same(t, typed, e.Flow)
	assert.Same(t, typed.InputSchema(), e.Schema)
	assert.True(t, e.Internal)

	assert.ErrorIs(t, r.Register("flows.lib", libflow.Mark(flow.Func(noop))), registry.ErrDuplicate)
	assert.ErrorIs(t, r.Register("flows.nil", libflow.Mark(nil)), registry.ErrInvalid, "a nil flow, marked or not")
	require.NoError(t, r.Register("marked_anyway", libflow.Mark(flow.Func(noop))), "a mark allows a reserved name; it needs none")
}
