package telemetry

import (
	"context"
	"encoding/binary"

	"go.opentelemetry.io/otel/trace"
)

// A task carries its trace as the W3C Trace Context's traceparent and
// tracestate values. They are written and read here rather than with
// OpenTelemetry's propagation.TraceContext, which reads and writes
// through a carrier interface: a carrier and its strings allocated for
// each task, read by every run of it. What is accepted is what
// propagation.TraceContext accepts (TestParseMatchesTheW3CPropagator).

// traceparentLen is the length of a version 00 traceparent:
// 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>.
const traceparentLen = 55

// Inject returns the W3C traceparent and tracestate of the span in ctx,
// "" and "" when ctx has no valid span context.
func Inject(ctx context.Context) (parent, state string) {
	return Values(trace.SpanContextFromContext(ctx))
}

// Values returns the W3C traceparent and tracestate of sc, "" and "" when
// sc is not valid.
func Values(sc trace.SpanContext) (parent, state string) {
	if !sc.IsValid() {
		return "", ""
	}
	if ts := sc.TraceState(); ts.Len() > 0 {
		state = ts.String()
	}
	return Format(sc), state
}

// Format returns the W3C traceparent of sc, which must be valid. Only
// the flags the specification defines (sampled, random) are kept.
func Format(sc trace.SpanContext) string {
	var b [traceparentLen]byte
	tid, sid := sc.TraceID(), sc.SpanID()
	b[0], b[1], b[2] = '0', '0', '-'
	for i := 0; i < len(tid); i += 4 {
		binary.LittleEndian.PutUint64(b[3+2*i:], hex4(tid[i:i+4]))
	}
	b[35] = '-'
	for i := 0; i < len(sid); i += 4 {
		binary.LittleEndian.PutUint64(b[36+2*i:], hex4(sid[i:i+4]))
	}
	b[52] = '-'
	f := byte(sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom)) // 0 to 3
	b[53], b[54] = '0', '0'+f
	return string(b[:])
}

// hex4 returns the eight lower-case hex digits of the four bytes of p,
// in little-endian order: written at once, where a byte at a time cost a
// task's enqueue a hundred instructions more.
func hex4(p []byte) uint64 {
	_ = p[3]
	return uint64(hexPairs[p[0]]) | uint64(hexPairs[p[1]])<<16 |
		uint64(hexPairs[p[2]])<<32 | uint64(hexPairs[p[3]])<<48
}

// hexPairs maps a byte to its two lower-case hex digits, the first in
// the low byte.
var hexPairs = func() (t [256]uint16) {
	const digits = "0123456789abcdef"
	for i := range t {
		t[i] = uint16(digits[i>>4]) | uint16(digits[i&0x0f])<<8
	}
	return t
}()

// Extract returns ctx with the remote span context that parent and state
// name, or ctx itself when parent is empty or malformed.
func Extract(ctx context.Context, parent, state string) context.Context {
	sc := SpanContext(parent, state)
	if !sc.IsValid() {
		return ctx
	}
	return trace.ContextWithRemoteSpanContext(ctx, sc)
}

// SpanContext returns the remote span context that parent and state
// name, invalid when parent is empty or malformed. A malformed state is
// dropped, the parent kept, as the W3C specification asks.
func SpanContext(parent, state string) trace.SpanContext {
	var cfg trace.SpanContextConfig
	if !parseParent(parent, &cfg) {
		return trace.SpanContext{}
	}
	if state != "" {
		cfg.TraceState, _ = trace.ParseTraceState(state)
	}
	cfg.Remote = true
	sc := trace.NewSpanContext(cfg)
	if !sc.IsValid() { // an all-zero trace or span id
		return trace.SpanContext{}
	}
	return sc
}

// Unsampled reports whether parent, a W3C traceparent, has the shape of
// one (its length, dashes and flags) and its sampled flag off: the
// trace it names was not sampled. Its ids are not read (see
// SpanContext).
func Unsampled(parent string) bool {
	h := parent
	if len(h) < traceparentLen || h[2] != '-' || h[35] != '-' || h[52] != '-' {
		return false
	}
	hi, lo := unhex[h[53]], unhex[h[54]]
	return (hi|lo)&0xf0 == 0 && lo&byte(trace.FlagsSampled) == 0
}

// parseParent reads a traceparent into cfg's ids and flags. Version 00
// is exactly 55 characters; a later version (up to fe) may add fields
// after the flags, separated by a dash.
func parseParent(h string, cfg *trace.SpanContextConfig) bool {
	if len(h) < traceparentLen || h[2] != '-' || h[35] != '-' || h[52] != '-' {
		return false
	}
	var version, flags [1]byte
	if !decodeLowerHex(version[:], h[0:2]) || version[0] == 0xff ||
		!decodeLowerHex(cfg.TraceID[:], h[3:35]) ||
		!decodeLowerHex(cfg.SpanID[:], h[36:52]) ||
		!decodeLowerHex(flags[:], h[53:55]) {
		return false
	}
	if version[0] == 0 && (len(h) != traceparentLen || flags[0] > 3) {
		return false // version 00 has no more fields and no other flags
	}
	if len(h) > traceparentLen && h[traceparentLen] != '-' {
		return false
	}
	cfg.TraceFlags = trace.TraceFlags(flags[0]) & (trace.FlagsSampled | trace.FlagsRandom)
	return true
}

// decodeLowerHex decodes s, lower-case hex only, into dst (len(s)/2
// bytes). A table lookup per character: a task's runs each read its
// traceparent, 52 hex digits.
func decodeLowerHex(dst []byte, s string) bool {
	s = s[:2*len(dst)]
	var bad byte
	for i := range dst {
		hi, lo := unhex[s[2*i]], unhex[s[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0x0f
	}
	return bad&0xf0 == 0
}

// unhex maps a lower-case hex digit to its value, any other byte to 0xff.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()
