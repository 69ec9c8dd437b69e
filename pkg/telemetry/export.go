package telemetry

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	colmetricspb "go.opentelemetry.io/proto/slim/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/slim/otlp/metrics/v1"
	resourcepb "go.opentelemetry.io/proto/slim/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"
)

// NewSpanExporter returns an OTLP/HTTP exporter of the SDK's spans,
// configured by the OTEL_EXPORTER_OTLP_* variables getenv reads.
func NewSpanExporter(getenv func(string) string) (sdktrace.SpanExporter, error) {
	c, err := newOTLPClient(signalTraces, getenv)
	if err != nil {
		return nil, err
	}
	return &spanExporter{client: c}, nil
}

// spanExporter exports the SDK's spans over OTLP/HTTP.
type spanExporter struct {
	client *otlpClient
	closed atomic.Bool
}

var _ sdktrace.SpanExporter = (*spanExporter)(nil)

// ExportSpans implements sdktrace.SpanExporter.
func (e *spanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.closed.Load() || len(spans) == 0 {
		return nil
	}
	var resp coltracepb.ExportTraceServiceResponse
	if err := e.client.export(ctx, &coltracepb.ExportTraceServiceRequest{ResourceSpans: resourceSpans(spans)}, &resp); err != nil {
		return err
	}
	if p := resp.GetPartialSuccess(); p.GetRejectedSpans() > 0 || p.GetErrorMessage() != "" {
		otel.Handle(fmt.Errorf("OTLP collector rejected %d spans: %s", p.GetRejectedSpans(), p.GetErrorMessage()))
	}
	return nil
}

// Shutdown implements sdktrace.SpanExporter.
func (e *spanExporter) Shutdown(context.Context) error {
	e.closed.Store(true)
	return nil
}

// resourceSpans groups spans by resource and instrumentation scope.
func resourceSpans(spans []sdktrace.ReadOnlySpan) []*tracepb.ResourceSpans {
	type scopeKey struct {
		res                   attribute.Distinct
		name, version, schema string
		attrs                 attribute.Distinct
	}
	var out []*tracepb.ResourceSpans
	byRes := map[attribute.Distinct]*tracepb.ResourceSpans{}
	byScope := map[scopeKey]*tracepb.ScopeSpans{}
	for _, s := range spans {
		res := s.Resource()
		rk := res.Equivalent()
		rs := byRes[rk]
		if rs == nil {
			rs = &tracepb.ResourceSpans{Resource: resourceOf(res), SchemaUrl: res.SchemaURL()}
			byRes[rk] = rs
			out = append(out, rs)
		}
		sc := s.InstrumentationScope()
		sk := scopeKey{res: rk, name: sc.Name, version: sc.Version, schema: sc.SchemaURL, attrs: sc.Attributes.Equivalent()}
		ss := byScope[sk]
		if ss == nil {
			ss = &tracepb.ScopeSpans{Scope: scopeOf(sc), SchemaUrl: sc.SchemaURL}
			byScope[sk] = ss
			rs.ScopeSpans = append(rs.ScopeSpans, ss)
		}
		ss.Spans = append(ss.Spans, spanOf(s))
	}
	return out
}

// OTLP's span flags: the W3C trace flags in the low byte, and whether the
// span's parent is remote, and known to be.
const (
	flagHasIsRemote = 0x100
	flagIsRemote    = 0x200
)

func spanOf(s sdktrace.ReadOnlySpan) *tracepb.Span {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	out := &tracepb.Span{
		TraceId:                tid[:],
		SpanId:                 sid[:],
		TraceState:             sc.TraceState().String(),
		Name:                   s.Name(),
		Kind:                   spanKinds[s.SpanKind()],
		StartTimeUnixNano:      uint64(s.StartTime().UnixNano()),
		EndTimeUnixNano:        uint64(s.EndTime().UnixNano()),
		Attributes:             keyValues(s.Attributes()),
		DroppedAttributesCount: uint32(s.DroppedAttributes()),
		DroppedEventsCount:     uint32(s.DroppedEvents()),
		DroppedLinksCount:      uint32(s.DroppedLinks()),
		Flags:                  uint32(sc.TraceFlags()) | flagHasIsRemote,
		Status:                 statusOf(s.Status()),
	}
	if p := s.Parent(); p.IsValid() {
		psid := p.SpanID()
		out.ParentSpanId = psid[:]
		if p.IsRemote() {
			out.Flags |= flagIsRemote
		}
	}
	for _, ev := range s.Events() {
		out.Events = append(out.Events, &tracepb.Span_Event{
			TimeUnixNano: uint64(ev.Time.UnixNano()), Name: ev.Name,
			Attributes: keyValues(ev.Attributes), DroppedAttributesCount: uint32(ev.DroppedAttributeCount),
		})
	}
	for _, l := range s.Links() {
		ltid, lsid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		flags := uint32(l.SpanContext.TraceFlags()) | flagHasIsRemote
		if l.SpanContext.IsRemote() {
			flags |= flagIsRemote
		}
		out.Links = append(out.Links, &tracepb.Span_Link{
			TraceId: ltid[:], SpanId: lsid[:], TraceState: l.SpanContext.TraceState().String(),
			Attributes: keyValues(l.Attributes), DroppedAttributesCount: uint32(l.DroppedAttributeCount), Flags: flags,
		})
	}
	return out
}

var spanKinds = map[trace.SpanKind]tracepb.Span_SpanKind{
	trace.SpanKindInternal: tracepb.Span_SPAN_KIND_INTERNAL,
	trace.SpanKindServer:   tracepb.Span_SPAN_KIND_SERVER,
	trace.SpanKindClient:   tracepb.Span_SPAN_KIND_CLIENT,
	trace.SpanKindProducer: tracepb.Span_SPAN_KIND_PRODUCER,
	trace.SpanKindConsumer: tracepb.Span_SPAN_KIND_CONSUMER,
}

// statusOf maps a span's status: OpenTelemetry Go numbers Error 1 and Ok 2,
// OTLP the other way round.
func statusOf(st sdktrace.Status) *tracepb.Status {
	switch st.Code {
	case codes.Error:
		return &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: st.Description}
	case codes.Ok:
		return &tracepb.Status{Code: tracepb.Status_STATUS_CODE_OK}
	}
	return &tracepb.Status{}
}

func resourceOf(res *resource.Resource) *resourcepb.Resource {
	return &resourcepb.Resource{Attributes: keyValues(res.Attributes())}
}

func scopeOf(sc instrumentation.Scope) *commonpb.InstrumentationScope {
	return &commonpb.InstrumentationScope{Name: sc.Name, Version: sc.Version, Attributes: keyValues(sc.Attributes.ToSlice())}
}

func keyValues(kvs []attribute.KeyValue) []*commonpb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]*commonpb.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, &commonpb.KeyValue{Key: string(kv.Key), Value: anyValue(kv.Value)})
	}
	return out
}

func anyValue(v attribute.Value) *commonpb.AnyValue {
	array := func(n int, at func(int) *commonpb.AnyValue) *commonpb.AnyValue {
		vs := make([]*commonpb.AnyValue, n)
		for i := range vs {
			vs[i] = at(i)
		}
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: vs}}}
	}
	switch v.Type() {
	case attribute.BOOL:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}}
	case attribute.INT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}}
	case attribute.FLOAT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}}
	case attribute.BOOLSLICE:
		s := v.AsBoolSlice()
		return array(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.BoolValue(s[i])) })
	case attribute.INT64SLICE:
		s := v.AsInt64Slice()
		return array(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.Int64Value(s[i])) })
	case attribute.FLOAT64SLICE:
		s := v.AsFloat64Slice()
		return array(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.Float64Value(s[i])) })
	case attribute.STRINGSLICE:
		s := v.AsStringSlice()
		return array(len(s), func(i int) *commonpb.AnyValue { return anyValue(attribute.StringValue(s[i])) })
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.Emit()}}
}

// metricExporter exports the SDK's metrics over OTLP/HTTP.
type metricExporter struct {
	client      *otlpClient
	temporality sdkmetric.TemporalitySelector
	closed      atomic.Bool
}

var _ sdkmetric.Exporter = (*metricExporter)(nil)

// temporalities are OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE's
// values, as the OTLP exporter specification defines them.
var temporalities = map[string]sdkmetric.TemporalitySelector{
	"cumulative": sdkmetric.DefaultTemporalitySelector,
	"delta": func(k sdkmetric.InstrumentKind) metricdata.Temporality {
		switch k {
		case sdkmetric.InstrumentKindUpDownCounter, sdkmetric.InstrumentKindObservableUpDownCounter:
			return metricdata.CumulativeTemporality
		}
		return metricdata.DeltaTemporality
	},
	"lowmemory": func(k sdkmetric.InstrumentKind) metricdata.Temporality {
		switch k {
		case sdkmetric.InstrumentKindCounter, sdkmetric.InstrumentKindHistogram:
			return metricdata.DeltaTemporality
		}
		return metricdata.CumulativeTemporality
	},
}

// NewMetricExporter returns an OTLP/HTTP exporter of the SDK's metrics,
// configured by the OTEL_EXPORTER_OTLP_* variables getenv reads.
func NewMetricExporter(getenv func(string) string) (sdkmetric.Exporter, error) {
	c, err := newOTLPClient(signalMetrics, getenv)
	if err != nil {
		return nil, err
	}
	const pref = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE"
	name := strings.ToLower(getenv(pref))
	if name == "" {
		name = "cumulative"
	}
	sel, ok := temporalities[name]
	if !ok {
		return nil, fmt.Errorf("%s=%q: want cumulative, delta or lowmemory", pref, getenv(pref))
	}
	return &metricExporter{client: c, temporality: sel}, nil
}

// Temporality implements sdkmetric.Exporter.
func (e *metricExporter) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return e.temporality(k)
}

// Aggregation implements sdkmetric.Exporter.
func (e *metricExporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

// Export implements sdkmetric.Exporter.
func (e *metricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	if e.closed.Load() {
		return nil
	}
	out := &metricspb.ResourceMetrics{Resource: resourceOf(rm.Resource), SchemaUrl: rm.Resource.SchemaURL()}
	for _, sm := range rm.ScopeMetrics {
		ss := &metricspb.ScopeMetrics{Scope: scopeOf(sm.Scope), SchemaUrl: sm.Scope.SchemaURL}
		for _, m := range sm.Metrics {
			pm, err := metricOf(m)
			if err != nil {
				otel.Handle(err)
				continue
			}
			ss.Metrics = append(ss.Metrics, pm)
		}
		out.ScopeMetrics = append(out.ScopeMetrics, ss)
	}
	var resp colmetricspb.ExportMetricsServiceResponse
	if err := e.client.export(ctx, &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{out}}, &resp); err != nil {
		return err
	}
	if p := resp.GetPartialSuccess(); p.GetRejectedDataPoints() > 0 || p.GetErrorMessage() != "" {
		otel.Handle(fmt.Errorf("OTLP collector rejected %d data points: %s", p.GetRejectedDataPoints(), p.GetErrorMessage()))
	}
	return nil
}

// ForceFlush implements sdkmetric.Exporter: nothing is buffered here.
func (e *metricExporter) ForceFlush(context.Context) error { return nil }

// Shutdown implements sdkmetric.Exporter.
func (e *metricExporter) Shutdown(context.Context) error {
	e.closed.Store(true)
	return nil
}

func metricOf(m metricdata.Metrics) (*metricspb.Metric, error) {
	out := &metricspb.Metric{Name: m.Name, Description: m.Description, Unit: m.Unit}
	switch d := m.Data.(type) {
	case metricdata.Gauge[int64]:
		out.Data = &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: numberPoints(d.DataPoints)}}
	case metricdata.Gauge[float64]:
		out.Data = &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: numberPoints(d.DataPoints)}}
	case metricdata.Sum[int64]:
		out.Data = &metricspb.Metric_Sum{Sum: &metricspb.Sum{DataPoints: numberPoints(d.DataPoints),
			AggregationTemporality: temporalityOf(d.Temporality), IsMonotonic: d.IsMonotonic}}
	case metricdata.Sum[float64]:
		out.Data = &metricspb.Metric_Sum{Sum: &metricspb.Sum{DataPoints: numberPoints(d.DataPoints),
			AggregationTemporality: temporalityOf(d.Temporality), IsMonotonic: d.IsMonotonic}}
	case metricdata.Histogram[int64]:
		out.Data = &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{DataPoints: histogramPoints(d.DataPoints),
			AggregationTemporality: temporalityOf(d.Temporality)}}
	case metricdata.Histogram[float64]:
		out.Data = &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{DataPoints: histogramPoints(d.DataPoints),
			AggregationTemporality: temporalityOf(d.Temporality)}}
	default:
		// berth makes counters and explicit-bucket histograms only.
		return nil, fmt.Errorf("metric %s: %T is not exported", m.Name, m.Data)
	}
	return out, nil
}

func temporalityOf(t metricdata.Temporality) metricspb.AggregationTemporality {
	switch t {
	case metricdata.DeltaTemporality:
		return metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	case metricdata.CumulativeTemporality:
		return metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	}
	return metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_UNSPECIFIED
}

func numberPoints[N int64 | float64](dps []metricdata.DataPoint[N]) []*metricspb.NumberDataPoint {
	out := make([]*metricspb.NumberDataPoint, 0, len(dps))
	for _, dp := range dps {
		p := &metricspb.NumberDataPoint{Attributes: keyValues(dp.Attributes.ToSlice()),
			StartTimeUnixNano: uint64(dp.StartTime.UnixNano()), TimeUnixNano: uint64(dp.Time.UnixNano())}
		switch v := any(dp.Value).(type) {
		case int64:
			p.Value = &metricspb.NumberDataPoint_AsInt{AsInt: v}
		case float64:
			p.Value = &metricspb.NumberDataPoint_AsDouble{AsDouble: v}
		}
		out = append(out, p)
	}
	return out
}

func histogramPoints[N int64 | float64](dps []metricdata.HistogramDataPoint[N]) []*metricspb.HistogramDataPoint {
	out := make([]*metricspb.HistogramDataPoint, 0, len(dps))
	for _, dp := range dps {
		sum := float64(dp.Sum)
		p := &metricspb.HistogramDataPoint{Attributes: keyValues(dp.Attributes.ToSlice()),
			StartTimeUnixNano: uint64(dp.StartTime.UnixNano()), TimeUnixNano: uint64(dp.Time.UnixNano()),
			Count: dp.Count, Sum: &sum, BucketCounts: dp.BucketCounts, ExplicitBounds: dp.Bounds}
		if v, ok := dp.Min.Value(); ok {
			f := float64(v)
			p.Min = &f
		}
		if v, ok := dp.Max.Value(); ok {
			f := float64(v)
			p.Max = &f
		}
		out = append(out, p)
	}
	return out
}
