package flow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"

	"github.com/flowsrun/flows/internal/strictjson"
)

// ErrInvalidInputs is wrapped by every error that reports inputs failing a
// flow's declared schema. The HTTP layer answers it with 422.
var ErrInvalidInputs = errors.New("invalid inputs")

// InputError describes inputs that fail a flow's schema.
type InputError struct {
	// Field is the JSON name of the offending field, "" for the whole input.
	Field string
	// Reason says what is wrong.
	Reason string
}

// Error implements error.
func (e *InputError) Error() string {
	if e.Field == "" {
		return "invalid inputs: " + e.Reason
	}
	return fmt.Sprintf("invalid inputs: field %q: %s", e.Field, e.Reason)
}

// Unwrap makes errors.Is(err, ErrInvalidInputs) true.
func (e *InputError) Unwrap() error { return ErrInvalidInputs }

// InputValidator may be implemented by a typed flow's input struct to add
// checks beyond the schema (ranges, formats). An error it returns is
// reported as invalid inputs.
type InputValidator interface {
	Validate() error
}

// TypedFlow is a Flow whose inputs are decoded into In. Build one with
// Typed. In must be a struct; its exported fields, named by their json tags,
// are the flow's inputs:
//
//   - a field is required unless its json tag has omitempty or omitzero
//     or it is a pointer, in nested structs as at the top; null counts as
//     absent;
//   - the fields of an embedded struct are inputs of the outer object, as
//     encoding/json promotes them;
//   - a `desc:"..."` tag becomes the field's description in the schema;
//   - unknown fields and wrong types are refused, and so are a key given
//     twice in one object and a key that matches a field's name only
//     without regard to case ("Name" for `json:"name"`), both of which
//     encoding/json would accept silently;
//   - if *In or In implements InputValidator, its Validate runs last.
type TypedFlow[In, Out any] struct {
	fn     func(ctx context.Context, in In, t *Task) (Out, error)
	schema *Schema
}

// Typed returns a flow that decodes and validates its inputs into In before
// calling fn. It panics if In is not a struct type, so a misdeclared flow
// fails at start-up rather than at run time.
func Typed[In, Out any](fn func(ctx context.Context, in In, t *Task) (Out, error)) *TypedFlow[In, Out] {
	rt := reflect.TypeFor[In]()
	if rt.Kind() != reflect.Struct {
		panic(fmt.Sprintf("flow.Typed: input type %s is not a struct", rt))
	}
	if fn == nil {
		panic("flow.Typed: nil function")
	}
	return &TypedFlow[In, Out]{fn: fn, schema: schemaForType(rt)}
}

// InputSchema returns the schema derived from In.
func (f *TypedFlow[In, Out]) InputSchema() *Schema { return f.schema }

// InputType returns In, the type the flow decodes its inputs into.
func (f *TypedFlow[In, Out]) InputType() reflect.Type { return reflect.TypeFor[In]() }

// Validate decodes inputs into In, checking the schema, and returns them
// normalized (absent inputs become an empty object).
func (f *TypedFlow[In, Out]) Validate(inputs json.RawMessage) (json.RawMessage, error) {
	if _, err := f.decode(inputs); err != nil {
		return nil, err
	}
	return normalizeObject(inputs)
}

func (*TypedFlow[In, Out]) refusesDuplicateKeys() {}

// Run decodes the task's inputs and calls the function.
func (f *TypedFlow[In, Out]) Run(ctx context.Context, t *Task) (any, error) {
	in, err := f.decode(t.Inputs)
	if err != nil {
		return nil, err
	}
	return f.fn(ctx, in, t)
}

func (f *TypedFlow[In, Out]) decode(inputs json.RawMessage) (In, error) {
	var in In
	obj, err := normalizeObject(inputs)
	if err != nil {
		return in, err
	}
	if err := checkFields(f.schema, obj, ""); err != nil {
		return in, err
	}
	dec := json.NewDecoder(bytes.NewReader(obj))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return in, decodeError(err)
	}
	var v any = &in
	if iv, ok := v.(InputValidator); ok {
		if err := iv.Validate(); err != nil {
			return in, inputErrorFrom(err)
		}
	} else if iv, ok := any(in).(InputValidator); ok {
		if err := iv.Validate(); err != nil {
			return in, inputErrorFrom(err)
		}
	}
	return in, nil
}

// checkFields checks raw, a value of schema s, against the names of its
// fields: it reports the first key that is not a field's name exactly (in
// sorted order, so that the report does not vary), then the first
// required field that raw lacks or has as null, in nested objects and
// arrays of objects too. encoding/json would match a key to a field
// without regard to case ("Name" or "NAME" to "name"); the schema, the
// demo page and every other reader of the inputs would not, so such a key
// is refused. Values of the wrong type are left for the decoder to report.
// path is the JSON path of raw, as "outer.items[2]".
//
// A type that contains itself has no properties where it recurs
// (schemaFor), so its fields below that point are left to the decoder.
func checkFields(s *Schema, raw json.RawMessage, path string) error {
	switch {
	case s.Type == "object" && s.Properties != nil:
		var fields map[string]json.RawMessage
		if json.Unmarshal(raw, &fields) != nil || fields == nil {
			if path == "" {
				return &InputError{Reason: "inputs must be a JSON object"}
			}
			return nil
		}
		for _, key := range slices.Sorted(maps.Keys(fields)) {
			if _, ok := s.Properties[key]; ok {
				continue
			}
			for _, name := range s.Order {
				if strings.EqualFold(key, name) {
					return &InputError{Field: joinPath(path, key), Reason: fmt.Sprintf("names are case-sensitive: did you mean %q?", name)}
				}
			}
			return &InputError{Field: joinPath(path, key), Reason: "is not a known input"}
		}
		for _, name := range s.Required {
			if v, ok := fields[name]; !ok || isNull(v) {
				return &InputError{Field: joinPath(path, name), Reason: "is required"}
			}
		}
		for _, name := range s.Order {
			if v, ok := fields[name]; ok && !isNull(v) {
				if err := checkFields(s.Properties[name], v, joinPath(path, name)); err != nil {
					return err
				}
			}
		}
	case s.Type == "array" && s.Items != nil && (s.Items.Type == "object" || s.Items.Type == "array"):
		var items []json.RawMessage
		if json.Unmarshal(raw, &items) != nil {
			return nil
		}
		for i, v := range items {
			if isNull(v) {
				continue
			}
			if err := checkFields(s.Items, v, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

func isNull(v json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(v), []byte("null")) }

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func inputErrorFrom(err error) error {
	var ie *InputError
	if errors.As(err, &ie) {
		return err
	}
	return &InputError{Reason: err.Error()}
}

func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		field := te.Field
		if lit, ok := strings.CutPrefix(te.Value, "number "); ok && te.Type != nil {
			if reason, ok := numberReason(te.Type, lit); ok {
				return &InputError{Field: field, Reason: reason}
			}
		}
		return &InputError{Field: field, Reason: fmt.Sprintf("must be %s, got %s", jsonKind(te.Type), te.Value)}
	}
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return &InputError{Field: strings.Trim(name, `"`), Reason: "is not a known input"}
	}
	return &InputError{Reason: strings.TrimPrefix(msg, "json: ")}
}

// normalizeObject checks that raw is a JSON object, null or empty, and
// returns it with absent inputs as {}.
func normalizeObject(raw json.RawMessage) (json.RawMessage, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	if trimmed[0] != '{' || !json.Valid(trimmed) {
		return nil, &InputError{Reason: "inputs must be a JSON object"}
	}
	if err := checkDuplicates(trimmed); err != nil {
		return nil, err
	}
	return json.RawMessage(trimmed), nil
}

// checkDuplicates refuses a JSON object, raw, in which a key appears twice
// in one object at any depth: encoding/json would keep the last silently,
// and a check and the flow could each see a different one.
func checkDuplicates(raw json.RawMessage) error {
	var dup *strictjson.DuplicateKeyError
	if errors.As(strictjson.Check(raw), &dup) {
		return &InputError{Field: dup.Path, Reason: "is given twice"}
	}
	return nil
}

// numberReason says why the JSON number lit does not fit t, a Go number
// type, where "must be an integer, got number 256" would not: the
// integer types' range, and that encoding/json takes no fraction or
// exponent for an integer (1.5, 1e2), or, when lit is not a number, that
// a map's keys must be integers. It returns false for a type that is not
// a number.
func numberReason(t reflect.Type, lit string) (string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	bits := t.Bits
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if !json.Valid([]byte(lit)) || lit[0] != '-' && (lit[0] < '0' || lit[0] > '9') {
			// Not a number: encoding/json says "number" of an object's
			// key that a map with integer keys cannot take too.
			return fmt.Sprintf("must have integer keys, got key %q", lit), true
		}
		if strings.ContainsAny(lit, ".eE") {
			return "must be an integer, written without a fraction or an exponent, got " + lit, true
		}
		if t.Kind() >= reflect.Uint {
			return fmt.Sprintf("must be an integer from 0 to %d, got %s", uint64(1)<<bits()-1, lit), true
		}
		return fmt.Sprintf("must be an integer from %d to %d, got %s", -(int64(1) << (bits() - 1)), int64(1)<<(bits()-1)-1, lit), true
	case reflect.Float32, reflect.Float64:
		return fmt.Sprintf("must be a number within the range of a %d-bit float, got %s", bits(), lit), true
	}
	return "", false
}
