package flow

import (
	"encoding"
	"encoding/json"
	"reflect"
	"slices"
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

var (
	rawMessageType      = reflect.TypeFor[json.RawMessage]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

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
	// Types that decode themselves: a TextUnmarshaler (time.Time, say) is
	// a JSON string; any other json.Unmarshaler can be any JSON value.
	if pt := reflect.PointerTo(t); pt.Implements(textUnmarshalerType) {
		return &Schema{Type: "string"}
	} else if pt.Implements(jsonUnmarshalerType) {
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
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
			return &Schema{Type: "string"} // encoding/json uses base64
		}
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
		var fields []schemaField
		collectFields(&fields, t, seen, 0, false)
		for _, f := range fields {
			s.Properties[f.name] = f.schema
			s.Order = append(s.Order, f.name)
			if f.required {
				s.Required = append(s.Required, f.name)
			}
		}
		return s
	default:
		return &Schema{}
	}
}

// schemaField is one input of a struct as encoding/json sees it.
type schemaField struct {
	name     string
	schema   *Schema
	required bool
	depth    int // how deeply embedded the field is
}

// collectFields appends the JSON fields of struct type t to fields, in
// declaration order, following encoding/json's rules: the fields of an
// embedded struct without a json name are promoted into the outer object,
// and of two fields with one name the less deeply embedded wins. optional
// is set inside an embedded pointer, whose fields may all be absent.
func collectFields(fields *[]schemaField, t reflect.Type, seen map[reflect.Type]bool, depth int, optional bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		name, opts, hasOpts := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" && !hasOpts {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if f.Type.Kind() == reflect.Pointer && !f.IsExported() {
					continue // encoding/json cannot allocate it
				}
				if !seen[ft] {
					seen[ft] = true
					collectFields(fields, ft, seen, depth+1, optional || f.Type.Kind() == reflect.Pointer)
					delete(seen, ft)
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fs := schemaFor(f.Type, seen)
		fs.Description = f.Tag.Get("desc")
		omitempty := false
		for o := range strings.SplitSeq(opts, ",") {
			omitempty = omitempty || o == "omitempty" || o == "omitzero"
		}
		field := schemaField{
			name:     name,
			schema:   fs,
			required: !optional && !omitempty && f.Type.Kind() != reflect.Pointer,
			depth:    depth,
		}
		if j := slices.IndexFunc(*fields, func(g schemaField) bool { return g.name == name }); j >= 0 {
			if (*fields)[j].depth > depth {
				(*fields)[j] = field
			}
			continue
		}
		*fields = append(*fields, field)
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
