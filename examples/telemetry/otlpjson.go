package telemetry

import (
	"math"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// The OTLP/HTTP JSON encoding of a trace export request, as the OTLP
// specification maps its protobuf messages to JSON: field names in
// lowerCamelCase, trace and span ids as hex strings (not base64), enums as
// their integer values, 64-bit integers as decimal strings.

type otlpTraceRequest struct {
	ResourceSpans []otlpResourceSpans `json:"resourceSpans"`
}

type otlpResourceSpans struct {
	Resource   otlpResource     `json:"resource"`
	ScopeSpans []otlpScopeSpans `json:"scopeSpans"`
	SchemaURL  string           `json:"schemaUrl,omitempty"`
}

type otlpResource struct {
	Attributes []otlpKeyValue `json:"attributes"`
}

type otlpScopeSpans struct {
	Scope     otlpScope  `json:"scope"`
	Spans     []otlpSpan `json:"spans"`
	SchemaURL string     `json:"schemaUrl,omitempty"`
}

type otlpScope struct {
	Name       string         `json:"name"`
	Version    string         `json:"version,omitempty"`
	Attributes []otlpKeyValue `json:"attributes,omitempty"`
}

type otlpSpan struct {
	TraceID                string         `json:"traceId"`
	SpanID                 string         `json:"spanId"`
	TraceState             string         `json:"traceState,omitempty"`
	ParentSpanID           string         `json:"parentSpanId,omitempty"`
	Flags                  uint32         `json:"flags"`
	Name                   string         `json:"name"`
	Kind                   int            `json:"kind"`
	StartTimeUnixNano      string         `json:"startTimeUnixNano"`
	EndTimeUnixNano        string         `json:"endTimeUnixNano"`
	Attributes             []otlpKeyValue `json:"attributes,omitempty"`
	DroppedAttributesCount int            `json:"droppedAttributesCount,omitempty"`
	Events                 []otlpEvent    `json:"events,omitempty"`
	DroppedEventsCount     int            `json:"droppedEventsCount,omitempty"`
	Links                  []otlpLink     `json:"links,omitempty"`
	DroppedLinksCount      int            `json:"droppedLinksCount,omitempty"`
	Status                 otlpStatus     `json:"status"`
}

type otlpEvent struct {
	TimeUnixNano           string         `json:"timeUnixNano"`
	Name                   string         `json:"name"`
	Attributes             []otlpKeyValue `json:"attributes,omitempty"`
	DroppedAttributesCount int            `json:"droppedAttributesCount,omitempty"`
}

type otlpLink struct {
	TraceID                string         `json:"traceId"`
	SpanID                 string         `json:"spanId"`
	TraceState             string         `json:"traceState,omitempty"`
	Attributes             []otlpKeyValue `json:"attributes,omitempty"`
	DroppedAttributesCount int            `json:"droppedAttributesCount,omitempty"`
	Flags                  uint32         `json:"flags"`
}

type otlpStatus struct {
	Message string `json:"message,omitempty"`
	Code    int    `json:"code"`
}

type otlpKeyValue struct {
	Key   string       `json:"key"`
	Value otlpAnyValue `json:"value"`
}

// otlpAnyValue is OTLP's AnyValue: exactly one field is set.
type otlpAnyValue struct {
	StringValue *string         `json:"stringValue,omitempty"`
	BoolValue   *bool           `json:"boolValue,omitempty"`
	IntValue    *string         `json:"intValue,omitempty"`
	DoubleValue any             `json:"doubleValue,omitempty"` // a float64, or "NaN", "Infinity", "-Infinity"
	ArrayValue  *otlpArrayValue `json:"arrayValue,omitempty"`
}

type otlpArrayValue struct {
	Values []otlpAnyValue `json:"values"`
}

// OTLP's span flags: the W3C trace flags in the low byte, and whether
// the parent is remote, with a bit that says this is known.
const (
	otlpFlagHasIsRemote = 0x100
	otlpFlagIsRemote    = 0x200
)

// OTLP's status codes, which are not numbered as the API's codes are.
const (
	otlpStatusUnset = 0
	otlpStatusOK    = 1
	otlpStatusError = 2
)

// otlpTraces encodes spans as one export request, grouped by resource and
// instrumentation scope in the order they first appear.
func otlpTraces(spans []sdktrace.ReadOnlySpan) otlpTraceRequest {
	var req otlpTraceRequest
	type scopeKey struct{ name, version, schema string }
	resources := map[attribute.Distinct]int{} // index in req.ResourceSpans
	scopes := map[attribute.Distinct]map[scopeKey]int{}
	for _, s := range spans {
		res := s.Resource()
		rkey := res.Equivalent()
		ri, ok := resources[rkey]
		if !ok {
			ri = len(req.ResourceSpans)
			resources[rkey] = ri
			scopes[rkey] = map[scopeKey]int{}
			req.ResourceSpans = append(req.ResourceSpans, otlpResourceSpans{
				Resource:  otlpResource{Attributes: otlpAttributes(res.Attributes())},
				SchemaURL: res.SchemaURL(),
			})
		}
		rs := &req.ResourceSpans[ri]
		scope := s.InstrumentationScope()
		skey := scopeKey{scope.Name, scope.Version, scope.SchemaURL}
		si, ok := scopes[rkey][skey]
		if !ok {
			si = len(rs.ScopeSpans)
			scopes[rkey][skey] = si
			rs.ScopeSpans = append(rs.ScopeSpans, otlpScopeSpans{
				Scope:     otlpScope{Name: scope.Name, Version: scope.Version, Attributes: otlpAttributes(scope.Attributes.ToSlice())},
				SchemaURL: scope.SchemaURL,
			})
		}
		rs.ScopeSpans[si].Spans = append(rs.ScopeSpans[si].Spans, otlpSpanOf(s))
	}
	return req
}

func otlpSpanOf(s sdktrace.ReadOnlySpan) otlpSpan {
	sc, parent := s.SpanContext(), s.Parent()
	out := otlpSpan{
		TraceID:                sc.TraceID().String(),
		SpanID:                 sc.SpanID().String(),
		TraceState:             sc.TraceState().String(),
		Flags:                  uint32(sc.TraceFlags()) | otlpFlagHasIsRemote,
		Name:                   s.Name(),
		Kind:                   int(s.SpanKind()), // the API numbers kinds as OTLP does
		StartTimeUnixNano:      otlpTime(s.StartTime()),
		EndTimeUnixNano:        otlpTime(s.EndTime()),
		Attributes:             otlpAttributes(s.Attributes()),
		DroppedAttributesCount: s.DroppedAttributes(),
		DroppedEventsCount:     s.DroppedEvents(),
		DroppedLinksCount:      s.DroppedLinks(),
		Status:                 otlpStatusOf(s.Status()),
	}
	if parent.SpanID().IsValid() {
		out.ParentSpanID = parent.SpanID().String()
		if parent.IsRemote() {
			out.Flags |= otlpFlagIsRemote
		}
	}
	for _, e := range s.Events() {
		out.Events = append(out.Events, otlpEvent{
			TimeUnixNano: otlpTime(e.Time), Name: e.Name,
			Attributes: otlpAttributes(e.Attributes), DroppedAttributesCount: e.DroppedAttributeCount,
		})
	}
	for _, l := range s.Links() {
		out.Links = append(out.Links, otlpLinkOf(l))
	}
	return out
}

func otlpLinkOf(l sdktrace.Link) otlpLink {
	flags := uint32(l.SpanContext.TraceFlags()) | otlpFlagHasIsRemote
	if l.SpanContext.IsRemote() {
		flags |= otlpFlagIsRemote
	}
	return otlpLink{
		TraceID: l.SpanContext.TraceID().String(), SpanID: l.SpanContext.SpanID().String(),
		TraceState: l.SpanContext.TraceState().String(), Flags: flags,
		Attributes: otlpAttributes(l.Attributes), DroppedAttributesCount: l.DroppedAttributeCount,
	}
}

func otlpStatusOf(s sdktrace.Status) otlpStatus {
	switch s.Code {
	case codes.Error:
		return otlpStatus{Code: otlpStatusError, Message: s.Description}
	case codes.Ok:
		return otlpStatus{Code: otlpStatusOK}
	default:
		return otlpStatus{Code: otlpStatusUnset}
	}
}

// otlpTime is t in nanoseconds since the Unix epoch, as a decimal string;
// the zero time is 0.
func otlpTime(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return strconv.FormatInt(t.UnixNano(), 10)
}

func otlpAttributes(kvs []attribute.KeyValue) []otlpKeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]otlpKeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, otlpKeyValue{Key: string(kv.Key), Value: otlpValue(kv.Value)})
	}
	return out
}

func otlpValue(v attribute.Value) otlpAnyValue {
	switch v.Type() {
	case attribute.BOOL:
		b := v.AsBool()
		return otlpAnyValue{BoolValue: &b}
	case attribute.INT64:
		return otlpInt(v.AsInt64())
	case attribute.FLOAT64:
		return otlpDouble(v.AsFloat64())
	case attribute.BOOLSLICE:
		var vals []otlpAnyValue
		for _, b := range v.AsBoolSlice() {
			vals = append(vals, otlpAnyValue{BoolValue: &b})
		}
		return otlpAnyValue{ArrayValue: &otlpArrayValue{Values: otlpNonNil(vals)}}
	case attribute.INT64SLICE:
		var vals []otlpAnyValue
		for _, i := range v.AsInt64Slice() {
			vals = append(vals, otlpInt(i))
		}
		return otlpAnyValue{ArrayValue: &otlpArrayValue{Values: otlpNonNil(vals)}}
	case attribute.FLOAT64SLICE:
		var vals []otlpAnyValue
		for _, f := range v.AsFloat64Slice() {
			vals = append(vals, otlpDouble(f))
		}
		return otlpAnyValue{ArrayValue: &otlpArrayValue{Values: otlpNonNil(vals)}}
	case attribute.STRINGSLICE:
		var vals []otlpAnyValue
		for _, s := range v.AsStringSlice() {
			vals = append(vals, otlpAnyValue{StringValue: &s})
		}
		return otlpAnyValue{ArrayValue: &otlpArrayValue{Values: otlpNonNil(vals)}}
	default: // STRING, and anything newer read as its string form
		s := v.Emit()
		return otlpAnyValue{StringValue: &s}
	}
}

func otlpInt(i int64) otlpAnyValue {
	s := strconv.FormatInt(i, 10)
	return otlpAnyValue{IntValue: &s}
}

// otlpDouble is f as a JSON number, or as the string protobuf's JSON
// mapping uses for a value JSON numbers cannot hold.
func otlpDouble(f float64) otlpAnyValue {
	switch {
	case math.IsNaN(f):
		return otlpAnyValue{DoubleValue: "NaN"}
	case math.IsInf(f, 1):
		return otlpAnyValue{DoubleValue: "Infinity"}
	case math.IsInf(f, -1):
		return otlpAnyValue{DoubleValue: "-Infinity"}
	default:
		return otlpAnyValue{DoubleValue: f}
	}
}

// otlpNonNil makes an empty array encode as [] rather than null.
func otlpNonNil(vals []otlpAnyValue) []otlpAnyValue {
	if vals == nil {
		return []otlpAnyValue{}
	}
	return vals
}
