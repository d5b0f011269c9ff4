package flow_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowsrun/flows/flow"
	"github.com/flowsrun/flows/progress"
)

type validateInput struct {
	Question string   `json:"question"`
	Count    int      `json:"count,omitempty"`
	Ratio    *float64 `json:"ratio"`
	Where    address  `json:"where,omitempty"`
	Stops    []address
}

type optionalInput struct {
	Note  string `json:"note,omitempty"`
	Level *int   `json:"level"`
}

// TestTypedNumberOutOfRange checks the reasons given for a JSON number
// that its Go type cannot hold: the range of a sized integer, a negative
// number for an unsigned one, a float32 overflow.
func TestTypedNumberOutOfRange(t *testing.T) {
	type sized struct {
		Small  uint8            `json:"small,omitempty"`
		Tiny   *int8            `json:"tiny"`
		Big    uint64           `json:"big,omitempty"`
		Single float32          `json:"single,omitempty"`
		Many   []uint16         `json:"many,omitempty"`
		ByID   map[uint8]string `json:"by_id,omitempty"`
	}
	f := typedNoop[sized]()
	for inputs, want := range map[string]string{
		`{"small":256}`:                `"small": must be an integer from 0 to 255, got 256`,
		`{"small":-1}`:                 `"small": must be an integer from 0 to 255, got -1`,
		`{"tiny":128}`:                 `"tiny": must be an integer from -128 to 127, got 128`,
		`{"big":18446744073709551616}`: `"big": must be an integer from 0 to 18446744073709551615, got 18446744073709551616`,
		`{"single":1e39}`:              `"single": must be a number within the range of a 32-bit float, got 1e39`,
		`{"many":[1,70000]}`:           `must be an integer from 0 to 65535, got 70000`,
		`{"small":"7"}`:                `"small": must be an integer, got string`,
		`{"by_id":{"hello":"x"}}`:      `"by_id": must have integer keys, got key "hello"`,
		`{"by_id":{"256":"x"}}`:        `"by_id": must be an integer from 0 to 255, got 256`,
	} {
		_, err := f.Validate(json.RawMessage(inputs))
		require.Error(t, err, inputs)
		assert.ErrorIs(t, err, flow.ErrInvalidInputs)
		assert.Contains(t, err.Error(), want, inputs)
	}
	_, err := f.Validate(json.RawMessage(`{"small":255,"tiny":-128,"big":18446744073709551615,"single":3.4e38,"many":[65535]}`))
	require.NoError(t, err, "the bounds themselves fit")
}

func TestTypedValidate(t *testing.T) {
	f := typedNoop[validateInput]()
	tests := []struct {
		name      string
		inputs    string
		wantField string // "" with wantErr: an error about the whole input
		wantErr   string // part of the message; "" means valid
	}{
		{name: "all fields", inputs: `{"question":"why?","count":3,"ratio":0.5,"where":{"city":"Oslo","country":"NO"},"Stops":[{"city":"Bergen"}]}`},
		{name: "only required", inputs: `{"question":"why?","Stops":[]}`},
		{name: "null optional fields but null required slice", inputs: `{"question":"why?","ratio":null,"count":null,"Stops":null}`, wantField: "Stops", wantErr: "is required"},
		{name: "missing required", inputs: `{"Stops":[]}`, wantField: "question", wantErr: "is required"},
		{name: "null required", inputs: `{"question":null,"Stops":[]}`, wantField: "question", wantErr: "is required"},
		{name: "nested required missing", inputs: `{"question":"q","Stops":[],"where":{"country":"NO"}}`, wantField: "where.city", wantErr: "is required"},
		{name: "required missing in array element", inputs: `{"question":"q","Stops":[{"city":"A"},{}]}`, wantField: "Stops[1].city", wantErr: "is required"},
		{name: "wrong type string for int", inputs: `{"question":"q","Stops":[],"count":"three"}`, wantField: "count", wantErr: "must be an integer, got string"},
		{name: "wrong type number for string", inputs: `{"question":42,"Stops":[]}`, wantField: "question", wantErr: "must be a string, got number"},
		{name: "fraction for int", inputs: `{"question":"q","Stops":[],"count":1.5}`, wantField: "count", wantErr: "must be an integer, written without a fraction or an exponent, got 1.5"},
		{name: "exponent for int", inputs: `{"question":"q","Stops":[],"count":1e2}`, wantField: "count", wantErr: "without a fraction or an exponent, got 1e2"},
		{name: "int out of range", inputs: `{"question":"q","Stops":[],"count":9223372036854775808}`, wantField: "count", wantErr: "must be an integer from -9223372036854775808 to 9223372036854775807, got 9223372036854775808"},
		{name: "wrong nested type", inputs: `{"question":"q","Stops":[],"where":{"city":7}}`, wantField: "where.city", wantErr: "must be a string, got number"},
		{name: "object for array", inputs: `{"question":"q","Stops":{}}`, wantField: "Stops", wantErr: "must be an array, got object"},
		{name: "unknown field", inputs: `{"question":"q","Stops":[],"colour":"red"}`, wantField: "colour", wantErr: "is not a known input"},
		{name: "unknown nested field", inputs: `{"question":"q","Stops":[],"where":{"city":"A","zip":"1"}}`, wantField: "where.zip", wantErr: "is not a known input"},
		{name: "unknown field in an array element", inputs: `{"question":"q","Stops":[{"city":"A","zip":"1"}]}`, wantField: "Stops[0].zip", wantErr: "is not a known input"},
		{name: "field in the wrong case", inputs: `{"Question":"q","Stops":[]}`, wantField: "Question", wantErr: `names are case-sensitive: did you mean "question"?`},
		{name: "untagged field in the wrong case", inputs: `{"question":"q","stops":[]}`, wantField: "stops", wantErr: `did you mean "Stops"?`},
		{name: "field in the wrong case beside the right one", inputs: `{"question":"q","QUESTION":"r","Stops":[]}`, wantField: "QUESTION", wantErr: "case-sensitive"},
		{name: "nested field in the wrong case", inputs: `{"question":"q","Stops":[],"where":{"City":"A"}}`, wantField: "where.City", wantErr: "case-sensitive"},
		{name: "field in the wrong case in an array element", inputs: `{"question":"q","Stops":[{"city":"A"},{"CITY":"B"}]}`, wantField: "Stops[1].CITY", wantErr: "case-sensitive"},
		{name: "field matching only by Unicode folding", inputs: `{"question":"q","Stopſ":[]}`, wantField: "Stopſ", wantErr: "case-sensitive"},
		{name: "duplicate field", inputs: `{"question":"q","question":"r","Stops":[]}`, wantField: "question", wantErr: "is given twice"},
		{name: "duplicate nested field", inputs: `{"question":"q","Stops":[{"city":"A","city":"B"}]}`, wantField: "Stops[0].city", wantErr: "is given twice"},
		{name: "duplicate key under an unknown field", inputs: `{"question":"q","Stops":[],"raw":{"a":1,"a":2}}`, wantField: "raw.a", wantErr: "is given twice"},
		{name: "array", inputs: `[1,2]`, wantErr: "must be a JSON object"},
		{name: "string", inputs: `"question"`, wantErr: "must be a JSON object"},
		{name: "number", inputs: `12`, wantErr: "must be a JSON object"},
		{name: "invalid JSON", inputs: `{"question":`, wantErr: "must be a JSON object"},
		{name: "trailing data", inputs: `{"question":"q","Stops":[]} {}`, wantErr: "must be a JSON object"},
		{name: "empty inputs with required fields", inputs: ``, wantField: "question", wantErr: "is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := f.Validate(json.RawMessage(tt.inputs))
			if tt.wantErr == "" {
				require.NoError(t, err)
				assert.JSONEq(t, tt.inputs, string(out), "valid inputs are returned as given")
				return
			}
			require.Error(t, err)
			assert.Nil(t, out)
			assert.ErrorIs(t, err, flow.ErrInvalidInputs)
			var ie *flow.InputError
			require.ErrorAs(t, err, &ie)
			assert.Equal(t, tt.wantField, ie.Field)
			assert.Contains(t, err.Error(), tt.wantErr)
			if tt.wantField != "" {
				assert.Contains(t, err.Error(), fmt.Sprintf("%q", tt.wantField), "the message names the field")
			}

			// Generic validation agrees, and Run refuses the same inputs.
			_, err2 := flow.Validate(f, json.RawMessage(tt.inputs))
			assert.Equal(t, err.Error(), err2.Error())
			_, err = f.Run(context.Background(), &flow.Task{Inputs: json.RawMessage(tt.inputs), Progress: progress.Discard})
			assert.ErrorIs(t, err, flow.ErrInvalidInputs, "Run")
		})
	}
}

func TestTypedValidateEmptyInputs(t *testing.T) {
	f := typedNoop[optionalInput]()
	for _, inputs := range []string{"", "null", "  ", " null ", "{}", " {} "} {
		t.Run(fmt.Sprintf("%q", inputs), func(t *testing.T) {
			out, err := f.Validate(json.RawMessage(inputs))
			require.NoError(t, err)
			assert.JSONEq(t, `{}`, string(out))
		})
	}
	t.Run("nil", func(t *testing.T) {
		out, err := f.Validate(nil)
		require.NoError(t, err)
		assert.Equal(t, `{}`, string(out))
	})
}

// rangedInput checks its own range on a value receiver.
type rangedInput struct {
	Percent int `json:"percent"`
}

func (in rangedInput) Validate() error {
	if in.Percent < 0 || in.Percent > 100 {
		return errors.New("percent must be within 0-100")
	}
	return nil
}

// fieldCheckedInput reports its own InputError from a pointer receiver.
type fieldCheckedInput struct {
	Email string `json:"email"`
}

func (in *fieldCheckedInput) Validate() error {
	if in.Email != "" && !containsAt(in.Email) {
		return &flow.InputError{Field: "email", Reason: "is not an e-mail address"}
	}
	return nil
}

func containsAt(s string) bool {
	for _, r := range s {
		if r == '@' {
			return true
		}
	}
	return false
}

func TestTypedInputValidator(t *testing.T) {
	t.Run("value receiver", func(t *testing.T) {
		f := typedNoop[rangedInput]()
		_, err := f.Validate(json.RawMessage(`{"percent":50}`))
		assert.NoError(t, err)

		_, err = f.Validate(json.RawMessage(`{"percent":150}`))
		assert.ErrorIs(t, err, flow.ErrInvalidInputs)
		assert.EqualError(t, err, "invalid inputs: percent must be within 0-100")
	})
	t.Run("pointer receiver with its own InputError", func(t *testing.T) {
		f := typedNoop[fieldCheckedInput]()
		_, err := f.Validate(json.RawMessage(`{"email":"a@b.c"}`))
		assert.NoError(t, err)

		_, err = f.Validate(json.RawMessage(`{"email":"nobody"}`))
		assert.ErrorIs(t, err, flow.ErrInvalidInputs)
		var ie *flow.InputError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, "email", ie.Field)
		assert.EqualError(t, err, `invalid inputs: field "email": is not an e-mail address`)
	})
	t.Run("runs after the schema checks", func(t *testing.T) {
		f := typedNoop[rangedInput]()
		_, err := f.Validate(json.RawMessage(`{"percent":"lots"}`))
		var ie *flow.InputError
		require.ErrorAs(t, err, &ie)
		assert.Equal(t, "percent", ie.Field, "the type error, not the validator's")
	})
}

func TestTypedEmbeddedInputsDecode(t *testing.T) {
	var got embeddingInput
	f := flow.Typed(func(_ context.Context, in embeddingInput, _ *flow.Task) (string, error) {
		got = in
		return in.Model, nil
	})
	inputs := json.RawMessage(`{"model":"m1","prompt":"p","verbose":true,"temp":0.5}`)
	_, err := f.Validate(inputs)
	require.NoError(t, err)
	out, err := f.Run(context.Background(), &flow.Task{Inputs: inputs, Progress: progress.Discard})
	require.NoError(t, err)
	assert.Equal(t, "m1", out)
	require.NotNil(t, got.Options)
	assert.True(t, got.Verbose)
	assert.InDelta(t, 0.5, got.Temp, 1e-9)

	_, err = f.Validate(json.RawMessage(`{"prompt":"p"}`))
	var ie *flow.InputError
	require.ErrorAs(t, err, &ie)
	assert.Equal(t, "model", ie.Field, "a promoted field is required like any other")
}

func TestTypedRun(t *testing.T) {
	type in struct {
		Name string `json:"name"`
	}
	var seen *flow.Task
	f := flow.Typed(func(ctx context.Context, in in, task *flow.Task) (string, error) {
		seen = task
		if in.Name == "fail" {
			return "", errors.New("refused")
		}
		return "hello " + in.Name, ctx.Err()
	})
	task := &flow.Task{ID: "t1", Flow: "greet", Attempt: 2, Inputs: json.RawMessage(`{"name":"Ada"}`), Progress: progress.Discard}
	out, err := f.Run(context.Background(), task)
	require.NoError(t, err)
	assert.Equal(t, "hello Ada", out)
	assert.Same(t, task, seen, "the function gets the task")

	_, err = f.Run(context.Background(), &flow.Task{Inputs: json.RawMessage(`{"name":"fail"}`), Progress: progress.Discard})
	assert.EqualError(t, err, "refused")
	assert.NotErrorIs(t, err, flow.ErrInvalidInputs)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.Run(ctx, task)
	assert.ErrorIs(t, err, context.Canceled, "the function gets the context")
}

func TestTypedPanicsOnBadDeclarations(t *testing.T) {
	tests := []struct {
		name  string
		build func()
	}{
		{"string input", func() {
			flow.Typed(func(context.Context, string, *flow.Task) (any, error) { return nil, nil })
		}},
		{"pointer to struct input", func() {
			flow.Typed(func(context.Context, *optionalInput, *flow.Task) (any, error) { return nil, nil })
		}},
		{"map input", func() {
			flow.Typed(func(context.Context, map[string]any, *flow.Task) (any, error) { return nil, nil })
		}},
		{"nil function", func() {
			flow.Typed[optionalInput, string](nil)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Panics(t, tt.build)
		})
	}
	assert.NotPanics(t, func() { typedNoop[optionalInput]() })
}

func TestInputError(t *testing.T) {
	assert.EqualError(t, &flow.InputError{Reason: "bad"}, "invalid inputs: bad")
	assert.EqualError(t, &flow.InputError{Field: "x", Reason: "bad"}, `invalid inputs: field "x": bad`)
	assert.ErrorIs(t, fmt.Errorf("start: %w", &flow.InputError{Reason: "bad"}), flow.ErrInvalidInputs)
}
