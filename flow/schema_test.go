package flow_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
)

// typedNoop returns a typed flow over In whose function does nothing.
func typedNoop[In any]() *flow.TypedFlow[In, struct{}] {
	return flow.Typed(func(context.Context, In, *flow.Task) (struct{}, error) { return struct{}{}, nil })
}

func schemaJSON(t *testing.T, s *flow.Schema) string {
	t.Helper()
	b, err := json.Marshal(s)
	require.NoError(t, err)
	return string(b)
}

type address struct {
	City    string `json:"city" desc:"city name"`
	Country string `json:"country,omitempty"`
}

type searchInput struct {
	Question string            `json:"question" desc:"what to ask"`
	MaxHits  int               `json:"max_hits,omitempty" desc:"upper bound"`
	Budget   *float64          `json:"budget" desc:"dollars to spend"`
	Strict   bool              `json:"strict"`
	Tags     []string          `json:"tags,omitzero"`
	Where    address           `json:"where"`
	Stops    []address         `json:"stops,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
	Raw      json.RawMessage   `json:"raw,omitempty"`
	Anything any               `json:"anything,omitempty"`
	Untagged string
	Hidden   string `json:"-"`
	Dash     string `json:"-,"`
	internal string //nolint:unused // unexported fields are not inputs
}

func TestTypedSchema(t *testing.T) {
	f := typedNoop[searchInput]()
	want := `{
		"type": "object",
		"properties": {
			"question": {"type": "string", "description": "what to ask"},
			"max_hits": {"type": "integer", "description": "upper bound"},
			"budget":   {"type": "number", "description": "dollars to spend"},
			"strict":   {"type": "boolean"},
			"tags":     {"type": "array", "items": {"type": "string"}},
			"where": {
				"type": "object",
				"properties": {
					"city":    {"type": "string", "description": "city name"},
					"country": {"type": "string"}
				},
				"required": ["city"],
				"x-order": ["city", "country"]
			},
			"stops": {"type": "array", "items": {
				"type": "object",
				"properties": {
					"city":    {"type": "string", "description": "city name"},
					"country": {"type": "string"}
				},
				"required": ["city"],
				"x-order": ["city", "country"]
			}},
			"extra":    {"type": "object"},
			"raw":      {},
			"anything": {},
			"Untagged": {"type": "string"},
			"-":        {"type": "string"}
		},
		"required": ["question", "strict", "where", "Untagged", "-"],
		"x-order": ["question", "max_hits", "budget", "strict", "tags", "where", "stops", "extra", "raw", "anything", "Untagged", "-"]
	}`
	assert.JSONEq(t, want, schemaJSON(t, f.InputSchema()))
	assert.Same(t, f.InputSchema(), flow.SchemaOf(f), "SchemaOf uses the flow's own schema")
}

type base struct {
	Model string `json:"model" desc:"model name"`
	Temp  int    `json:"temp"`
}

// Options is exported: encoding/json cannot fill an embedded pointer to an
// unexported struct.
type Options struct {
	Verbose bool `json:"verbose"`
}

type embeddingInput struct {
	base
	*Options
	Temp   float64 `json:"temp,omitempty" desc:"outer wins"`
	Prompt string  `json:"prompt"`
}

type named struct {
	Label string `json:"label"`
}

type tree struct {
	Name     string `json:"name"`
	Children []tree `json:"children,omitempty"`
}

type kinds struct {
	When  time.Time  `json:"when"`
	Maybe *time.Time `json:"maybe"`
	Blob  []byte     `json:"blob,omitempty"`
	Grid  [][]int    `json:"grid,omitempty"`
	Named named      `json:"named_struct,omitempty"`
	U8    uint8      `json:"u8,omitempty"`
	F32   float32    `json:"f32,omitempty"`
	Ptr   **int      `json:"ptr"`
}

func TestTypedSchemaShapes(t *testing.T) {
	tests := []struct {
		name   string
		schema *flow.Schema
		want   string
	}{
		{
			name:   "no fields",
			schema: typedNoop[struct{}]().InputSchema(),
			want:   `{"type":"object"}`,
		},
		{
			name:   "embedded structs are promoted, outer fields win",
			schema: typedNoop[embeddingInput]().InputSchema(),
			want: `{
				"type": "object",
				"properties": {
					"model":   {"type": "string", "description": "model name"},
					"temp":    {"type": "number", "description": "outer wins"},
					"verbose": {"type": "boolean"},
					"prompt":  {"type": "string"}
				},
				"required": ["model", "prompt"],
				"x-order": ["model", "temp", "verbose", "prompt"]
			}`,
		},
		{
			name:   "recursive types stop at the first repeat",
			schema: typedNoop[tree]().InputSchema(),
			want: `{
				"type": "object",
				"properties": {
					"name": {"type": "string"},
					"children": {"type": "array", "items": {"type": "object"}}
				},
				"required": ["name"],
				"x-order": ["name", "children"]
			}`,
		},
		{
			name:   "types with their own encoding",
			schema: typedNoop[kinds]().InputSchema(),
			want: `{
				"type": "object",
				"properties": {
					"when":  {"type": "string"},
					"maybe": {"type": "string"},
					"blob":  {"type": "string"},
					"grid":  {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}},
					"named_struct": {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"], "x-order": ["label"]},
					"u8":    {"type": "integer"},
					"f32":   {"type": "number"},
					"ptr":   {"type": "integer"}
				},
				"required": ["when"],
				"x-order": ["when", "maybe", "blob", "grid", "named_struct", "u8", "f32", "ptr"]
			}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.JSONEq(t, tt.want, schemaJSON(t, tt.schema))
		})
	}
}

func TestSchemaOfUntypedFlow(t *testing.T) {
	f := flow.Func(func(context.Context, *flow.Task) (any, error) { return nil, nil })
	assert.JSONEq(t, `{"type":"object"}`, schemaJSON(t, flow.SchemaOf(f)))
	assert.NotNil(t, flow.SchemaOf(f).Properties, "an empty property set, not nil, for form builders")
}

// nilSchemer declares a schema method that returns nil.
type nilSchemer struct{ flow.Func }

func (nilSchemer) InputSchema() *flow.Schema { return nil }

func TestSchemaOfNilSchema(t *testing.T) {
	s := flow.SchemaOf(nilSchemer{})
	require.NotNil(t, s)
	assert.Equal(t, "object", s.Type)
}
