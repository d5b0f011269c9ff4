package flow_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/flowsrun/flows/flow"
)

// fuzzInput has a little of everything the validator handles: required and
// optional fields, pointers, nesting, slices of structs and a validator.
type fuzzInput struct {
	Question string            `json:"question"`
	Count    int               `json:"count,omitempty"`
	Ratio    *float64          `json:"ratio"`
	Where    address           `json:"where,omitempty"`
	Stops    []address         `json:"stops,omitempty"`
	Extra    map[string]string `json:"extra,omitempty"`
	Raw      json.RawMessage   `json:"raw,omitempty"`
	Percent  uint8             `json:"percent,omitempty"`
}

func (in fuzzInput) Validate() error {
	if in.Count < 0 {
		return &flow.InputError{Field: "count", Reason: "must not be negative"}
	}
	return nil
}

// FuzzValidate checks that Typed.Validate never panics and either accepts
// inputs, returning a JSON object that validates again to itself, or
// refuses them with ErrInvalidInputs.
func FuzzValidate(f *testing.F) {
	for _, seed := range []string{
		``, `null`, `{}`, `[]`, `"x"`, `1`, `{"question":"q"}`,
		`{"question":"q","count":-1}`, `{"question":null}`, `{"question":1}`,
		`{"question":"q","where":{"city":"A"},"stops":[{"city":"B"},{},null]}`,
		`{"question":"q","ratio":1e400}`, `{"question":"q","percent":300}`,
		`{"question":"q","extra":{"a":"b"},"raw":[1,{"x":null}]}`,
		`{"question":"q","unknown":1}`, `{"question":"q"} {}`, `{"question":"\ud800"}`,
	} {
		f.Add([]byte(seed))
	}
	typed := typedNoop[fuzzInput]()
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := typed.Validate(data)
		if err != nil {
			if !errors.Is(err, flow.ErrInvalidInputs) {
				t.Fatalf("Validate(%q) = %v, not an ErrInvalidInputs", data, err)
			}
			if out != nil {
				t.Fatalf("Validate(%q) returned inputs with its error", data)
			}
			return
		}
		if !json.Valid(out) || len(out) == 0 || out[0] != '{' {
			t.Fatalf("Validate(%q) accepted and returned %q, not a JSON object", data, out)
		}
		again, err := typed.Validate(out)
		if err != nil {
			t.Fatalf("Validate(%q) accepted, but its output %q is refused: %v", data, out, err)
		}
		if string(again) != string(out) {
			t.Fatalf("validating %q again gave %q", out, again)
		}
	})
}
