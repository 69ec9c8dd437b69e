package otlpsink_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/berth-dev/berth/pkg/telemetry"
	"github.com/berth-dev/berth/pkg/testing/otlpsink"
)

func startSink(t *testing.T) *otlpsink.Sink {
	t.Helper()
	s, err := otlpsink.Start("127.0.0.1:0")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func serviceResource(name string) *resource.Resource {
	return resource.NewSchemaless(attribute.String("service.name", name))
}

// env is what getenv reads: vars, as an environment would hold them.
func env(vars ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(vars); i += 2 {
		m[vars[i]] = vars[i+1]
	}
	return func(k string) string { return m[k] }
}

// TestTracesFromSDK: berth's OTLP exporter (pkg/telemetry) posts the SDK's
// spans; the sink reads them back.
func TestTracesFromSDK(t *testing.T) {
	tests := []struct {
		name        string
		compression string
	}{
		{"plain", "none"},
		{"gzip", "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			sink := startSink(t)
			exp, err := telemetry.NewSpanExporter(env("OTEL_EXPORTER_OTLP_ENDPOINT", sink.URL(),
				"OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", tt.compression))
			if err != nil {
				t.Fatalf("NewSpanExporter: %v", err)
			}
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(serviceResource("ledger")))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			tracer := tp.Tracer("otlpsink_test")

			_, cause := tracer.Start(ctx, "enqueue", trace.WithSpanKind(trace.SpanKindProducer))
			cause.End()
			pctx, parent := tracer.Start(ctx, "reserve", trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("berth.function", "pg"), attribute.Int("berth.port", 30001)))
			_, child := tracer.Start(pctx, "update configmap", trace.WithSpanKind(trace.SpanKindClient),
				trace.WithLinks(trace.Link{SpanContext: cause.SpanContext()}),
				trace.WithAttributes(
					attribute.Bool("retry", true),
					attribute.Float64("ratio", 0.5),
					attribute.StringSlice("ports", []string{"80", "443"}),
					attribute.Int64Slice("codes", []int64{1, 2}),
				))
			time.Sleep(time.Millisecond)
			child.SetStatus(codes.Error, "conflict")
			child.End()
			parent.SetStatus(codes.Ok, "")
			parent.End()
			if err := tp.ForceFlush(ctx); err != nil {
				t.Fatalf("ForceFlush: %v", err)
			}

			traceID := parent.SpanContext().TraceID().String()
			causeTrace := cause.SpanContext().TraceID().String()
			if got := sink.Spans(); len(got) != 3 {
				t.Fatalf("Spans() = %d spans, want 3: %+v", len(got), got)
			}
			if got, want := sink.TraceIDs(), []string{causeTrace, traceID}; !reflect.DeepEqual(got, want) {
				t.Errorf("TraceIDs() = %q, want %q", got, want)
			}
			spans := sink.Trace(traceID)
			if len(spans) != 2 {
				t.Fatalf("Trace(%q) = %d spans, want 2", traceID, len(spans))
			}
			p, c := spans[0], spans[1]

			checks := []struct {
				what      string
				got, want any
			}{
				{"parent.Name", p.Name, "reserve"},
				{"parent.SpanID", p.SpanID, parent.SpanContext().SpanID().String()},
				{"parent.ParentID", p.ParentID, ""},
				{"parent.Service", p.Service, "ledger"},
				{"parent.Kind", p.Kind, "server"},
				{"parent.StatusCode", p.StatusCode, "ok"},
				{"parent.Attrs", p.Attrs, map[string]string{"berth.function": "pg", "berth.port": "30001"}},
				{"child.Name", c.Name, "update configmap"},
				{"child.TraceID", c.TraceID, traceID},
				{"child.ParentID", c.ParentID, p.SpanID},
				{"child.Service", c.Service, "ledger"},
				{"child.Kind", c.Kind, "client"},
				{"child.StatusCode", c.StatusCode, "error"},
				{"child.StatusMessage", c.StatusMessage, "conflict"},
				{"child.Attrs", c.Attrs, map[string]string{"retry": "true", "ratio": "0.5", "ports": `["80","443"]`, "codes": "[1,2]"}},
				{"child.Links", c.Links, []otlpsink.Link{{TraceID: causeTrace, SpanID: cause.SpanContext().SpanID().String()}}},
			}
			for _, ck := range checks {
				if !reflect.DeepEqual(ck.got, ck.want) {
					t.Errorf("%s = %#v, want %#v", ck.what, ck.got, ck.want)
				}
			}
			if c.Duration() < time.Millisecond || p.Duration() < c.Duration() {
				t.Errorf("durations: parent %v, child %v; want child >= 1ms and parent >= child", p.Duration(), c.Duration())
			}
			if c.Start.Before(p.Start) {
				t.Errorf("Trace(%q) not sorted by start: %v then %v", traceID, p.Start, c.Start)
			}

			// Spans hands out copies.
			spans[0].Attrs["berth.function"] = "changed"
			if got := sink.Trace(traceID)[0].Attrs["berth.function"]; got != "pg" {
				t.Errorf("after editing a returned span, stored attr = %q, want %q", got, "pg")
			}
		})
	}
}

// meterProvider exports to sink as service, flushing only when asked.
func meterProvider(t *testing.T, sink *otlpsink.Sink, service string, vars ...string) *sdkmetric.MeterProvider {
	t.Helper()
	exp, err := telemetry.NewMetricExporter(env(append([]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", sink.URL() + "/v1/metrics"}, vars...)...))
	if err != nil {
		t.Fatalf("NewMetricExporter: %v", err)
	}
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))),
		sdkmetric.WithResource(serviceResource(service)),
	)
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return mp
}

func TestMetricsFromSDK(t *testing.T) {
	tests := []struct {
		name string
		vars []string
	}{
		{"cumulative", nil},
		{"gzip", []string{"OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"}},
		{"delta", []string{"OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			sink := startSink(t)
			ledger := meterProvider(t, sink, "ledger", tt.vars...)
			expose := meterProvider(t, sink, "expose", tt.vars...)
			flush := func() {
				t.Helper()
				for _, mp := range []*sdkmetric.MeterProvider{ledger, expose} {
					if err := mp.ForceFlush(ctx); err != nil {
						t.Fatalf("ForceFlush: %v", err)
					}
				}
			}

			m := ledger.Meter("otlpsink_test")
			reserved, _ := m.Int64Counter("berth.ports.reserved")
			free, _ := m.Float64Gauge("berth.ports.free")
			latency, _ := m.Float64Histogram("berth.reserve.duration", metric.WithUnit("s"))
			tcp := metric.WithAttributes(attribute.String("proto", "tcp"))
			udp := metric.WithAttributes(attribute.String("proto", "udp"))
			exposed, _ := expose.Meter("otlpsink_test").Int64Counter("berth.ports.reserved")

			reserved.Add(ctx, 1, tcp)
			latency.Record(ctx, 0.1)
			flush()
			reserved.Add(ctx, 2, tcp)
			reserved.Add(ctx, 5, udp)
			exposed.Add(ctx, 10, tcp)
			free.Record(ctx, 17.5)
			latency.Record(ctx, 0.3)
			flush()

			values := []struct {
				metric string
				attrs  map[string]string
				want   float64
			}{
				{"berth.ports.reserved", map[string]string{"proto": "tcp"}, 13}, // 3 from ledger, 10 from expose
				{"berth.ports.reserved", map[string]string{"proto": "udp"}, 5},
				{"berth.ports.reserved", nil, 18},
				{"berth.ports.free", nil, 17.5},
				{"berth.reserve.duration", nil, 2},
			}
			for _, v := range values {
				if got, ok := sink.Value(v.metric, v.attrs); !ok || got != v.want {
					t.Errorf("Value(%q, %v) = %v, %v; want %v, true", v.metric, v.attrs, got, ok, v.want)
				}
			}
			if got, ok := sink.Value("berth.ports.reserved", map[string]string{"proto": "sctp"}); ok {
				t.Errorf("Value(berth.ports.reserved, proto=sctp) = %v, true; want false", got)
			}
			if got, ok := sink.Value("no.such.metric", nil); ok {
				t.Errorf("Value(no.such.metric) = %v, true; want false", got)
			}

			wantNames := []string{"berth.ports.free", "berth.ports.reserved", "berth.reserve.duration"}
			if got := sink.MetricNames(); !reflect.DeepEqual(got, wantNames) {
				t.Errorf("MetricNames() = %q, want %q", got, wantNames)
			}

			type series struct {
				service, kind, proto string
				i                    int64
				f                    float64
			}
			var got []series
			for _, p := range sink.Points("berth.ports.reserved") {
				got = append(got, series{p.Service, p.Kind, p.Attrs["proto"], p.Int, p.Float})
				if p.Time.IsZero() {
					t.Errorf("point %+v has no time", p)
				}
			}
			want := []series{{"expose", "sum", "tcp", 10, 10}, {"ledger", "sum", "tcp", 3, 3}, {"ledger", "sum", "udp", 5, 5}}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Points(berth.ports.reserved) = %+v, want %+v", got, want)
			}

			hist := sink.Points("berth.reserve.duration")
			if len(hist) != 1 {
				t.Fatalf("Points(berth.reserve.duration) = %d points, want 1", len(hist))
			}
			if h := hist[0]; h.Kind != "histogram" || h.Count != 2 || h.Sum < 0.399 || h.Sum > 0.401 || h.Unit != "s" {
				t.Errorf("histogram point = %+v, want kind histogram, count 2, sum 0.4, unit s", h)
			}
			if g := sink.Points("berth.ports.free"); len(g) != 1 || g[0].Kind != "gauge" || g[0].Float != 17.5 {
				t.Errorf("Points(berth.ports.free) = %+v, want one gauge of 17.5", g)
			}
		})
	}
}

// A trace in OTLP/JSON: IDs are hex, 64-bit integers may be strings.
const jsonTrace = `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"gateway"}}]},
 "scopeSpans":[{"spans":[
  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"POST /reserve","kind":2,
   "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000012500000",
   "attributes":[{"key":"http.route","value":{"stringValue":"/reserve"}},{"key":"other","value":{"intValue":"7"}}]},
  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b173","parentSpanId":"eee19b7ec3c1b174","name":"reserve","kind":"SPAN_KIND_INTERNAL",
   "startTimeUnixNano":"1700000000001000000","endTimeUnixNano":"1700000000004000000",
   "attributes":[{"key":"berth.port","value":{"intValue":30001}},{"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"},{"boolValue":true}]}}}],
   "status":{"code":2,"message":"range full"}},
  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b172","parentSpanId":"eee19b7ec3c1b173","name":"get configmap","kind":3,
   "startTimeUnixNano":"1700000000002000000","endTimeUnixNano":"1700000000003000000"},
  {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b171","parentSpanId":"00000000000000aa","name":"late","kind":1,
   "startTimeUnixNano":"1700000000010000000","endTimeUnixNano":"1700000000011000000","unknownField":1}
 ]}]}]}`

const jsonTraceID = "5b8efff798038103d269b633813fc60c"

func post(t *testing.T, url, contentType, encoding string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func TestJSON(t *testing.T) {
	sink := startSink(t)
	resp := post(t, sink.URL()+"/v1/traces", "application/json; charset=utf-8", "", []byte(jsonTrace))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" || string(body) != "{}" {
		t.Fatalf("POST JSON = %d %q %q, want 200 application/json {}", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	spans := sink.Trace(jsonTraceID)
	if len(spans) != 4 {
		t.Fatalf("Trace(%q) = %d spans, want 4", jsonTraceID, len(spans))
	}
	s := spans[1]
	want := otlpsink.Span{
		TraceID: jsonTraceID, SpanID: "eee19b7ec3c1b173", ParentID: "eee19b7ec3c1b174",
		Name: "reserve", Service: "gateway", Kind: "internal",
		Start: time.Unix(0, 1700000000001000000).UTC(), End: time.Unix(0, 1700000000004000000).UTC(),
		Attrs:      map[string]string{"berth.port": "30001", "tags": `["a",true]`},
		StatusCode: "error", StatusMessage: "range full",
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("span = %+v\nwant %+v", s, want)
	}
	if got := spans[0].Attrs["other"]; got != "7" {
		t.Errorf("intValue given as a string = %q, want %q", got, "7")
	}
}

func TestWriteTree(t *testing.T) {
	sink := startSink(t)
	if resp := post(t, sink.URL()+"/v1/traces", "application/json", "", []byte(jsonTrace)); resp.StatusCode != http.StatusOK {
		t.Fatalf("POST JSON = %d, want 200", resp.StatusCode)
	}
	var b strings.Builder
	sink.WriteTree(&b, jsonTraceID)
	want := `     0.0ms +12.5ms    gateway: POST /reserve  [http.route=/reserve]
     1.0ms +3.0ms       gateway: reserve  [berth.port=30001]  ERROR: range full
     2.0ms +1.0ms         gateway: get configmap
    10.0ms +1.0ms     gateway: late
`
	if got := b.String(); got != want {
		t.Errorf("WriteTree =\n%s\nwant\n%s", got, want)
	}

	b.Reset()
	sink.WriteTree(&b, "0123")
	if b.Len() != 0 {
		t.Errorf("WriteTree(unknown trace) = %q, want nothing", b.String())
	}
}

func TestWaitFor(t *testing.T) {
	sink := startSink(t)
	go func() {
		time.Sleep(20 * time.Millisecond)
		req, _ := http.NewRequest(http.MethodPost, sink.URL()+"/v1/traces", strings.NewReader(jsonTrace))
		req.Header.Set("Content-Type", "application/json")
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	hasTrace := func(s *otlpsink.Sink) bool { return len(s.Trace(jsonTraceID)) == 4 }
	if err := sink.WaitFor(ctx, hasTrace); err != nil {
		t.Fatalf("WaitFor(trace arrives) = %v, want nil", err)
	}

	ctx, cancel = context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	var calls int
	never := func(*otlpsink.Sink) bool { calls++; return false }
	if err := sink.WaitFor(ctx, never); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor(never) = %v, want %v", err, context.DeadlineExceeded)
	}
	if calls < 2 {
		t.Errorf("WaitFor evaluated done %d times in 150ms, want it re-checked at least every 100ms", calls)
	}
}

func TestBadRequests(t *testing.T) {
	valid, err := proto.Marshal(&coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{{
			TraceId: bytes.Repeat([]byte{1}, 16), SpanId: bytes.Repeat([]byte{2}, 8), Name: "x",
		}}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	var bomb bytes.Buffer // 33 MiB of zeros, gzipped to a few kB
	zw := gzip.NewWriter(&bomb)
	_, _ = zw.Write(make([]byte, 33<<20))
	_ = zw.Close()

	const ctProto, ctJSON = "application/x-protobuf", "application/json"
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		encoding    string
		body        []byte
		want        int
	}{
		{"wrong path", http.MethodPost, "/v1/logs", ctProto, "", valid, http.StatusNotFound},
		{"root path", http.MethodPost, "/", ctProto, "", valid, http.StatusNotFound},
		{"trailing slash", http.MethodPost, "/v1/traces/", ctProto, "", valid, http.StatusNotFound},
		{"GET", http.MethodGet, "/v1/traces", ctProto, "", nil, http.StatusMethodNotAllowed},
		{"PUT", http.MethodPut, "/v1/metrics", ctProto, "", valid, http.StatusMethodNotAllowed},
		{"text/plain", http.MethodPost, "/v1/traces", "text/plain", "", valid, http.StatusUnsupportedMediaType},
		{"no content type", http.MethodPost, "/v1/traces", "", "", valid, http.StatusUnsupportedMediaType},
		{"unknown encoding", http.MethodPost, "/v1/traces", ctProto, "br", valid, http.StatusUnsupportedMediaType},
		{"garbage protobuf", http.MethodPost, "/v1/traces", ctProto, "", []byte("not a protobuf"), http.StatusBadRequest},
		{"garbage metrics", http.MethodPost, "/v1/metrics", ctProto, "", []byte("not a protobuf"), http.StatusBadRequest},
		{"garbage JSON", http.MethodPost, "/v1/traces", ctJSON, "", []byte(`{"resourceSpans":`), http.StatusBadRequest},
		{"JSON with trailing data", http.MethodPost, "/v1/traces", ctJSON, "", []byte(jsonTrace + "{}"), http.StatusBadRequest},
		{"protobuf sent as JSON", http.MethodPost, "/v1/traces", ctJSON, "", valid, http.StatusBadRequest},
		{"gzip header, plain body", http.MethodPost, "/v1/traces", ctProto, "gzip", valid, http.StatusBadRequest},
		{"gzip bomb", http.MethodPost, "/v1/traces", ctProto, "gzip", bomb.Bytes(), http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sink := startSink(t)
			req, err := http.NewRequestWithContext(t.Context(), tt.method, sink.URL()+tt.path, bytes.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			if tt.encoding != "" {
				req.Header.Set("Content-Encoding", tt.encoding)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", tt.method, tt.path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%s %s = %d, want %d", tt.method, tt.path, resp.StatusCode, tt.want)
			}
			if got := sink.Spans(); len(got) != 0 {
				t.Errorf("after a refused request Spans() = %+v, want none", got)
			}
			if got := sink.MetricNames(); len(got) != 0 {
				t.Errorf("after a refused request MetricNames() = %q, want none", got)
			}
		})
	}
}
