package telemetry

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// The examples serve their metrics in Prometheus' text exposition format
// (version 0.0.4) from a ManualReader of their own, instead of
// OpenTelemetry's Prometheus exporter, which brings the Prometheus client
// library and protobuf into the demo's build. It writes what that
// exporter writes for the instruments the library has (counters,
// up-down counters, gauges and histograms with explicit buckets): dots
// in names become underscores, a unit in seconds adds _seconds, a
// counter adds _total, each sample carries its scope's name and version,
// and the resource is target_info.

// metricsHandler serves what reader collects at each request.
func metricsHandler(reader *sdkmetric.ManualReader) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(r.Context(), &rm); err != nil {
			// A failed callback still leaves the rest: serve it, as
			// Prometheus' exporter does, and report the error.
			otel.Handle(err)
		}
		var buf bytes.Buffer
		writePrometheus(&buf, &rm)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = buf.WriteTo(w)
	})
}

// promFamily is one metric family: its samples are written together,
// under one TYPE line, whichever scopes they come from.
type promFamily struct {
	name, kind, help string
	samples          []string
}

// writePrometheus writes rm in the text exposition format.
func writePrometheus(w io.Writer, rm *metricdata.ResourceMetrics) {
	var families []*promFamily
	byName := map[string]*promFamily{}
	family := func(name, kind, help string) *promFamily {
		f, ok := byName[name]
		if !ok {
			f = &promFamily{name: name, kind: kind, help: help}
			byName[name] = f
			families = append(families, f)
		}
		if f.help == "" {
			f.help = help // the first scope may have given none
		}
		if f.kind != kind {
			return nil // two instruments of different kinds under one name: keep the first
		}
		return f
	}

	if rm.Resource != nil && rm.Resource.Len() > 0 {
		f := family("target_info", "gauge", "Target metadata")
		f.samples = append(f.samples, "target_info"+promLabels(rm.Resource.Attributes(), nil)+" 1")
	}
	// The SDK hands its scopes in no set order: sorted, a scrape is the
	// same every time, and so is the family a name's samples join first.
	scopes := slices.Clone(rm.ScopeMetrics)
	slices.SortStableFunc(scopes, func(a, b metricdata.ScopeMetrics) int {
		return cmp.Or(cmp.Compare(a.Scope.Name, b.Scope.Name), cmp.Compare(a.Scope.Version, b.Scope.Version))
	})
	for _, sm := range scopes {
		scope := []attribute.KeyValue{attribute.String("otel_scope_name", sm.Scope.Name)}
		if sm.Scope.Version != "" {
			scope = append(scope, attribute.String("otel_scope_version", sm.Scope.Version))
		}
		for _, m := range sm.Metrics {
			name := promName(m.Name, m.Unit)
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				promSum(family, name, m.Description, data, scope)
			case metricdata.Sum[float64]:
				promSum(family, name, m.Description, data, scope)
			case metricdata.Gauge[int64]:
				promGauge(family(name, "gauge", m.Description), data.DataPoints, scope)
			case metricdata.Gauge[float64]:
				promGauge(family(name, "gauge", m.Description), data.DataPoints, scope)
			case metricdata.Histogram[int64]:
				promHistogram(family(name, "histogram", m.Description), data.DataPoints, scope)
			case metricdata.Histogram[float64]:
				promHistogram(family(name, "histogram", m.Description), data.DataPoints, scope)
			default:
				// Exponential histograms and summaries: the library
				// records none, and the text format 0.0.4 has no
				// exponential histogram.
			}
		}
	}

	bw := bufio.NewWriter(w)
	for _, f := range families {
		if len(f.samples) == 0 {
			continue
		}
		if f.help != "" {
			fmt.Fprintf(bw, "# HELP %s %s\n", f.name, promHelpEscaper.Replace(f.help))
		}
		fmt.Fprintf(bw, "# TYPE %s %s\n", f.name, f.kind)
		for _, s := range f.samples {
			bw.WriteString(s)
			bw.WriteByte('\n')
		}
	}
	_ = bw.Flush()
}

func promSum[N int64 | float64](family func(name, kind, help string) *promFamily, name, help string, data metricdata.Sum[N], scope []attribute.KeyValue) {
	if !data.IsMonotonic {
		promGauge(family(name, "gauge", help), data.DataPoints, scope)
		return
	}
	name = strings.TrimSuffix(name, "_total") + "_total"
	f := family(name, "counter", help)
	if f == nil {
		return
	}
	for _, dp := range data.DataPoints {
		f.samples = append(f.samples, name+promLabels(dp.Attributes.ToSlice(), scope)+" "+promNumber(dp.Value))
	}
}

func promGauge[N int64 | float64](f *promFamily, points []metricdata.DataPoint[N], scope []attribute.KeyValue) {
	if f == nil {
		return
	}
	for _, dp := range points {
		f.samples = append(f.samples, f.name+promLabels(dp.Attributes.ToSlice(), scope)+" "+promNumber(dp.Value))
	}
}

func promHistogram[N int64 | float64](f *promFamily, points []metricdata.HistogramDataPoint[N], scope []attribute.KeyValue) {
	if f == nil {
		return
	}
	for _, dp := range points {
		attrs := dp.Attributes.ToSlice()
		var cumulative uint64
		for i, bound := range dp.Bounds {
			if i < len(dp.BucketCounts) {
				cumulative += dp.BucketCounts[i]
			}
			le := attribute.String("le", promFloat(bound))
			f.samples = append(f.samples, f.name+"_bucket"+promLabels(attrs, append(scope[:len(scope):len(scope)], le))+" "+strconv.FormatUint(cumulative, 10))
		}
		inf := attribute.String("le", "+Inf")
		f.samples = append(f.samples,
			f.name+"_bucket"+promLabels(attrs, append(scope[:len(scope):len(scope)], inf))+" "+strconv.FormatUint(dp.Count, 10),
			f.name+"_sum"+promLabels(attrs, scope)+" "+promNumber(dp.Sum),
			f.name+"_count"+promLabels(attrs, scope)+" "+strconv.FormatUint(dp.Count, 10))
	}
}

// promUnits are the unit suffixes of the units OpenTelemetry's semantic
// conventions use; a unit in braces is an annotation and adds nothing.
var promUnits = map[string]string{
	"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds",
	"By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "min": "minutes", "h": "hours", "d": "days",
}

// promName is the Prometheus name of an instrument: invalid characters as
// underscores, and the unit's suffix unless the name already ends with it.
func promName(name, unit string) string {
	name = promSanitize(name)
	if suffix := promUnits[unit]; suffix != "" && !strings.HasSuffix(name, "_"+suffix) {
		name += "_" + suffix
	}
	return name
}

// promSanitize makes s a valid metric or label name: each character
// outside [a-zA-Z0-9_:] becomes an underscore, and a leading digit gets
// one before it.
func promSanitize(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_', r == ':':
			b.WriteRune(r)
		case r >= '0' && r <= '9':
			if i == 0 {
				b.WriteByte('_')
			}
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

var (
	promHelpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	promLabelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

// promLabels is the label set {k="v",...} of attrs then extra; empty when
// there are none. Two attributes that sanitize to one label name keep
// both values, joined by ";".
func promLabels(attrs, extra []attribute.KeyValue) string {
	if len(attrs)+len(extra) == 0 {
		return ""
	}
	var names []string
	values := map[string]string{}
	for _, kv := range append(attrs[:len(attrs):len(attrs)], extra...) {
		name := promSanitize(string(kv.Key))
		if old, ok := values[name]; ok {
			values[name] = old + ";" + kv.Value.Emit()
			continue
		}
		names = append(names, name)
		values[name] = kv.Value.Emit()
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(name)
		b.WriteString(`="`)
		b.WriteString(promLabelEscaper.Replace(values[name]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

func promNumber[N int64 | float64](v N) string {
	switch v := any(v).(type) {
	case int64:
		return strconv.FormatInt(v, 10)
	default:
		return promFloat(v.(float64))
	}
}

func promFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
