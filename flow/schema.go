package flow

import (
	"encoding/json"
	"reflect"
	"strings"
)

// Schema is the JSON-Schema subset that describes a flow's inputs: enough
// for a client to build a form and for a person to read.
type Schema struct {
	// Type is a JSON type: object, string, integer, number, boolean, array.
	// Empty means any JSON value.
	Type string `json:"type,omitempty"`
	// Description is taken from a field's desc tag.
	Description string `json:"description,omitempty"`
	// Properties are the fields of an object, by JSON name.
	Properties map[string]*Schema `json:"properties,omitempty"`
	// Required lists the names of the object's required fields.
	Required []string `json:"required,omitempty"`
	// Order lists the object's fields in declaration order, which JSON
	// objects do not keep, so that a form shows them as declared.
	Order []string `json:"x-order,omitempty"`
	// Items is the schema of an array's elements.
	Items *Schema `json:"items,omitempty"`
}

var rawMessageType = reflect.TypeFor[json.RawMessage]()

func schemaForType(t reflect.Type) *Schema {
	return schemaFor(t, map[reflect.Type]bool{})
}

func schemaFor(t reflect.Type, seen map[reflect.Type]bool) *Schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == rawMessageType {
		return &Schema{}
	}
	switch t.Kind() {
	case reflect.String:
		return &Schema{Type: "string"}
	case reflect.Bool:
		return &Schema{Type: "boolean"}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return &Schema{Type: "integer"}
	case reflect.Float32, reflect.Float64:
		return &Schema{Type: "number"}
	case reflect.Slice, reflect.Array:
		return &Schema{Type: "array", Items: schemaFor(t.Elem(), seen)}
	case reflect.Map:
		return &Schema{Type: "object"}
	case reflect.Struct:
		if seen[t] {
			return &Schema{Type: "object"}
		}
		seen[t] = true
		defer delete(seen, t)
		s := &Schema{Type: "object", Properties: map[string]*Schema{}}
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" && opts == "" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			fs := schemaFor(f.Type, seen)
			fs.Description = f.Tag.Get("desc")
			s.Properties[name] = fs
			s.Order = append(s.Order, name)
			omitempty := false
			for o := range strings.SplitSeq(opts, ",") {
				omitempty = omitempty || o == "omitempty" || o == "omitzero"
			}
			if !omitempty && f.Type.Kind() != reflect.Pointer {
				s.Required = append(s.Required, name)
			}
		}
		return s
	default:
		return &Schema{}
	}
}

func jsonKind(t reflect.Type) string {
	if t == nil {
		return "a valid value"
	}
	switch s := schemaForType(t); s.Type {
	case "":
		return "a JSON value"
	case "integer", "object", "array":
		return "an " + s.Type
	default:
		return "a " + s.Type
	}
}
