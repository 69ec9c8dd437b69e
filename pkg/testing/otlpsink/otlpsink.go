// Package otlpsink is an OTLP/HTTP receiver on loopback for berth's tests,
// benchmarks and the local demo runner. berth's processes export traces and
// metrics over OTLP/HTTP (http/protobuf, pkg/telemetry's exporters); point their
// OTEL_EXPORTER_OTLP_ENDPOINT at [Sink.URL] and read back what arrived as plain
// Go values: spans grouped into traces, and the latest point of each metric
// series.
package otlpsink

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"mime"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	colmetricspb "go.opentelemetry.io/proto/slim/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/slim/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/slim/otlp/metrics/v1"
	tracepb "go.opentelemetry.io/proto/slim/otlp/trace/v1"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// MaxBodyBytes bounds a request body, both as sent and after gunzipping.
const MaxBodyBytes = 32 << 20

const (
	contentTypeProto = "application/x-protobuf"
	contentTypeJSON  = "application/json"

	// pollInterval is how often WaitFor re-evaluates its condition when
	// nothing arrives.
	pollInterval = 100 * time.Millisecond

	// serviceNameKey is the resource attribute naming the exporting process.
	serviceNameKey = "service.name"
)

// Metric point kinds, as in [Point.Kind].
const (
	KindGauge     = "gauge"
	KindSum       = "sum"
	KindHistogram = "histogram"
	KindSummary   = "summary"
)

// Span is one received span.
type Span struct {
	// TraceID, SpanID and ParentID are lowercase hex; ParentID is "" for a
	// root span.
	TraceID, SpanID, ParentID string
	Name                      string
	// Service is the resource attribute service.name of the exporter.
	Service string
	// Kind is "server", "client", "internal", "producer", "consumer", or
	// "unspecified" when the exporter left it unset.
	Kind       string
	Start, End time.Time
	// Attrs holds the span's attributes stringified: strings as they are,
	// numbers and booleans in strconv form, bytes in base64, arrays and
	// key-value lists as JSON.
	Attrs map[string]string
	Links []Link
	// StatusCode is "unset", "ok" or "error".
	StatusCode    string
	StatusMessage string
}

// Duration is End - Start, or 0 when either is missing.
func (s Span) Duration() time.Duration {
	if s.Start.IsZero() || s.End.IsZero() {
		return 0
	}
	return s.End.Sub(s.Start)
}

// Link is a span's link to another span, IDs in lowercase hex.
type Link struct {
	TraceID, SpanID string
}

// Point is the latest data point of one metric series: a service, a metric
// name and an attribute set.
type Point struct {
	Metric, Service, Unit string
	// Attrs holds the point's attributes stringified as in [Span.Attrs].
	Attrs map[string]string
	// Kind is KindGauge, KindSum, KindHistogram (exponential histograms
	// included) or KindSummary.
	Kind string
	// Int is the value of an integer gauge or sum. Float is the value of any
	// gauge or sum: for integer points it is float64(Int).
	Int   int64
	Float float64
	// Count and Sum are set for histograms and summaries.
	Count uint64
	Sum   float64
	Time  time.Time
}

// Sink is a running OTLP/HTTP receiver. Its methods are safe for concurrent
// use.
type Sink struct {
	srv *http.Server
	url string

	mu     sync.Mutex
	spans  []Span
	seen   map[Link]bool // (trace, span) IDs already in spans
	points map[seriesKey]Point
	// changed is closed and replaced whenever data arrives.
	changed chan struct{}
}

// seriesKey names a metric series.
type seriesKey struct {
	service, metric, attrs string
}

// Start listens on addr (for example "127.0.0.1:0") and serves POST
// /v1/traces and POST /v1/metrics in OTLP/HTTP, protobuf or JSON, optionally
// gzipped. Every other path is 404.
func Start(addr string) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("otlp sink listen on %s: %w", addr, err)
	}
	s := &Sink{
		url:     "http://" + dialAddr(ln.Addr()),
		seen:    map[Link]bool{},
		points:  map[seriesKey]Point{},
		changed: make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", s.serveTraces)
	mux.HandleFunc("POST /v1/metrics", s.serveMetrics)
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// dialAddr is the listener's address as a client on this host dials it.
func dialAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	ip := tcp.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
}

// URL is the sink's base URL, "http://127.0.0.1:PORT": the value for
// OTEL_EXPORTER_OTLP_ENDPOINT. Signal-specific endpoints append /v1/traces or
// /v1/metrics.
func (s *Sink) URL() string { return s.url }

// Close stops the server, letting requests in flight finish for up to two
// seconds. What was received stays readable.
func (s *Sink) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return errors.Join(err, s.srv.Close())
	}
	return nil
}

// Spans returns a copy of every span received, in arrival order. A span sent
// twice (an exporter's retry) is kept once.
func (s *Sink) Spans() []Span {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Span, len(s.spans))
	for i, sp := range s.spans {
		out[i] = sp.clone()
	}
	return out
}

// Trace returns the spans of one trace sorted by start time.
func (s *Sink) Trace(traceID string) []Span {
	traceID = strings.ToLower(traceID)
	s.mu.Lock()
	var out []Span
	for _, sp := range s.spans {
		if sp.TraceID == traceID {
			out = append(out, sp.clone())
		}
	}
	s.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Span) int { return a.Start.Compare(b.Start) })
	return out
}

// TraceIDs returns the distinct trace IDs received, in order of first arrival.
func (s *Sink) TraceIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	seen := map[string]bool{}
	for _, sp := range s.spans {
		if !seen[sp.TraceID] {
			seen[sp.TraceID] = true
			out = append(out, sp.TraceID)
		}
	}
	return out
}

// WaitFor returns nil once done reports true, or ctx's error. done is called
// without the sink's lock held, so it may call the sink's methods; it is
// re-evaluated whenever data arrives and at least every 100 ms.
func (s *Sink) WaitFor(ctx context.Context, done func(*Sink) bool) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		// Take the channel before evaluating done, so an arrival between the
		// two still wakes us.
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if done(s) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		case <-tick.C:
		}
	}
}

// Points returns the latest point of every series of metric, sorted by service
// and then attribute set.
func (s *Sink) Points(metric string) []Point {
	s.mu.Lock()
	var out []Point
	for k, p := range s.points {
		if k.metric == metric {
			p.Attrs = maps.Clone(p.Attrs)
			out = append(out, p)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Point) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(attrsKey(a.Attrs), attrsKey(b.Attrs)))
	})
	return out
}

// MetricNames returns the names of the metrics received, sorted.
func (s *Sink) MetricNames() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k := range s.points {
		out = append(out, k.metric)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Value sums the latest values of metric's series whose attributes include
// every key=value of attrs (nil matches every series), over all services: the
// value of a gauge or sum, the count of a histogram or summary. It reports
// false when no series matches.
func (s *Sink) Value(metric string, attrs map[string]string) (float64, bool) {
	var total float64
	var found bool
	for _, p := range s.Points(metric) {
		if !hasAll(p.Attrs, attrs) {
			continue
		}
		found = true
		switch p.Kind {
		case KindHistogram, KindSummary:
			total += float64(p.Count)
		default:
			total += p.Float
		}
	}
	return total, found
}

func hasAll(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// WriteTree prints one trace as a tree, one line per span:
//
//	<ms from trace start>ms +<duration>ms  <indent><service>: <name>  [key attrs]
//
// Children are indented under their parent and sorted by start; a span whose
// parent is not in the trace is printed as a root. Key attributes are the
// berth.*, k8s.*, http.* and url.* ones, shortened. Nothing is printed for an
// unknown trace.
func (s *Sink) WriteTree(w io.Writer, traceID string) {
	spans := s.Trace(traceID)
	if len(spans) == 0 {
		return
	}
	start := spans[0].Start
	present := map[string]bool{}
	for _, sp := range spans {
		present[sp.SpanID] = true
	}
	children := map[string][]int{}
	var roots []int
	for i, sp := range spans {
		if sp.ParentID != "" && sp.ParentID != sp.SpanID && present[sp.ParentID] {
			children[sp.ParentID] = append(children[sp.ParentID], i)
		} else {
			roots = append(roots, i)
		}
	}
	printed := make([]bool, len(spans))
	var walk func(i, depth int)
	walk = func(i, depth int) {
		if printed[i] {
			return
		}
		printed[i] = true
		writeSpanLine(w, spans[i], start, depth)
		for _, c := range children[spans[i].SpanID] {
			walk(c, depth+1)
		}
	}
	for _, i := range roots {
		walk(i, 0)
	}
	// Only a parent cycle leaves spans unreached; show them rather than drop them.
	for i := range spans {
		walk(i, 0)
	}
}

const (
	treeMaxAttrs    = 4
	treeMaxValueLen = 40
)

var treeAttrPrefixes = []string{"berth.", "k8s.", "http.", "url."}

func writeSpanLine(w io.Writer, sp Span, traceStart time.Time, depth int) {
	offset := ms(sp.Start.Sub(traceStart))
	var b strings.Builder
	fmt.Fprintf(&b, "%8.1fms %-10s %s%s: %s", offset, fmt.Sprintf("+%.1fms", ms(sp.Duration())),
		strings.Repeat("  ", depth), cmp.Or(sp.Service, "?"), sp.Name)
	if attrs := keyAttrs(sp.Attrs); attrs != "" {
		fmt.Fprintf(&b, "  [%s]", attrs)
	}
	if sp.StatusCode == "error" {
		b.WriteString("  ERROR")
		if sp.StatusMessage != "" {
			b.WriteString(": " + shorten(sp.StatusMessage, 2*treeMaxValueLen))
		}
	}
	b.WriteByte('\n')
	_, _ = io.WriteString(w, b.String())
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// keyAttrs picks the attributes worth a glance: berth.* first, then the
// others, each group sorted by key.
func keyAttrs(attrs map[string]string) string {
	var keys []string
	for k := range attrs {
		for _, p := range treeAttrPrefixes {
			if strings.HasPrefix(k, p) {
				keys = append(keys, k)
				break
			}
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		return cmp.Or(-boolCompare(strings.HasPrefix(a, "berth."), strings.HasPrefix(b, "berth.")), cmp.Compare(a, b))
	})
	if len(keys) > treeMaxAttrs {
		keys = keys[:treeMaxAttrs]
	}
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + shorten(attrs[k], treeMaxValueLen)
	}
	return strings.Join(parts, " ")
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func (s Span) clone() Span {
	s.Attrs = maps.Clone(s.Attrs)
	s.Links = slices.Clone(s.Links)
	return s
}

// notifyLocked wakes WaitFor callers. s.mu must be held.
func (s *Sink) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Sink) addTraces(req *coltracepb.ExportTraceServiceRequest) {
	var spans []Span
	for _, rs := range req.GetResourceSpans() {
		service := attrMap(rs.GetResource().GetAttributes())[serviceNameKey]
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				spans = append(spans, convertSpan(sp, service))
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sp := range spans {
		id := Link{TraceID: sp.TraceID, SpanID: sp.SpanID}
		if s.seen[id] {
			continue
		}
		s.seen[id] = true
		s.spans = append(s.spans, sp)
	}
	s.notifyLocked()
}

func convertSpan(sp *tracepb.Span, service string) Span {
	out := Span{
		TraceID:       hex.EncodeToString(sp.GetTraceId()),
		SpanID:        hex.EncodeToString(sp.GetSpanId()),
		ParentID:      hex.EncodeToString(sp.GetParentSpanId()),
		Name:          sp.GetName(),
		Service:       service,
		Kind:          spanKind(sp.GetKind()),
		Start:         unixNano(sp.GetStartTimeUnixNano()),
		End:           unixNano(sp.GetEndTimeUnixNano()),
		Attrs:         attrMap(sp.GetAttributes()),
		StatusCode:    statusCode(sp.GetStatus().GetCode()),
		StatusMessage: sp.GetStatus().GetMessage(),
	}
	for _, l := range sp.GetLinks() {
		out.Links = append(out.Links, Link{
			TraceID: hex.EncodeToString(l.GetTraceId()),
			SpanID:  hex.EncodeToString(l.GetSpanId()),
		})
	}
	return out
}

func spanKind(k tracepb.Span_SpanKind) string {
	switch k {
	case tracepb.Span_SPAN_KIND_SERVER:
		return "server"
	case tracepb.Span_SPAN_KIND_CLIENT:
		return "client"
	case tracepb.Span_SPAN_KIND_INTERNAL:
		return "internal"
	case tracepb.Span_SPAN_KIND_PRODUCER:
		return "producer"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		return "consumer"
	default:
		return "unspecified"
	}
}

func statusCode(c tracepb.Status_StatusCode) string {
	switch c {
	case tracepb.Status_STATUS_CODE_OK:
		return "ok"
	case tracepb.Status_STATUS_CODE_ERROR:
		return "error"
	default:
		return "unset"
	}
}

func unixNano(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n)).UTC()
}

// incoming is a received point and how to merge it into its series.
type incoming struct {
	key   seriesKey
	point Point
	delta bool
}

func (s *Sink) addMetrics(req *colmetricspb.ExportMetricsServiceRequest) {
	var in []incoming
	for _, rm := range req.GetResourceMetrics() {
		service := attrMap(rm.GetResource().GetAttributes())[serviceNameKey]
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				in = appendPoints(in, service, m)
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range in {
		s.mergeLocked(p)
	}
	s.notifyLocked()
}

// mergeLocked keeps the latest point of a series. Cumulative points (the SDK's
// default) replace older ones; delta points are added up so that the stored
// point is still the running total. s.mu must be held.
func (s *Sink) mergeLocked(in incoming) {
	old, ok := s.points[in.key]
	switch {
	case !ok:
		s.points[in.key] = in.point
	case in.delta:
		p := in.point
		p.Int += old.Int
		p.Float += old.Float
		p.Count += old.Count
		p.Sum += old.Sum
		if p.Time.Before(old.Time) {
			p.Time = old.Time
		}
		s.points[in.key] = p
	case !in.point.Time.Before(old.Time):
		s.points[in.key] = in.point
	}
}

func appendPoints(in []incoming, service string, m *metricspb.Metric) []incoming {
	base := Point{Metric: m.GetName(), Service: service, Unit: m.GetUnit()}
	add := func(p Point, delta bool) {
		in = append(in, incoming{
			key:   seriesKey{service: service, metric: p.Metric, attrs: attrsKey(p.Attrs)},
			point: p,
			delta: delta,
		})
	}
	const deltaTemporality = metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA
	switch d := m.GetData().(type) {
	case *metricspb.Metric_Gauge:
		for _, dp := range d.Gauge.GetDataPoints() {
			add(numberPoint(base, KindGauge, dp), false)
		}
	case *metricspb.Metric_Sum:
		delta := d.Sum.GetAggregationTemporality() == deltaTemporality
		for _, dp := range d.Sum.GetDataPoints() {
			add(numberPoint(base, KindSum, dp), delta)
		}
	case *metricspb.Metric_Histogram:
		delta := d.Histogram.GetAggregationTemporality() == deltaTemporality
		for _, dp := range d.Histogram.GetDataPoints() {
			add(countPoint(base, KindHistogram, dp.GetAttributes(), dp.GetCount(), dp.GetSum(), dp.GetTimeUnixNano()), delta)
		}
	case *metricspb.Metric_ExponentialHistogram:
		delta := d.ExponentialHistogram.GetAggregationTemporality() == deltaTemporality
		for _, dp := range d.ExponentialHistogram.GetDataPoints() {
			add(countPoint(base, KindHistogram, dp.GetAttributes(), dp.GetCount(), dp.GetSum(), dp.GetTimeUnixNano()), delta)
		}
	case *metricspb.Metric_Summary:
		for _, dp := range d.Summary.GetDataPoints() {
			add(countPoint(base, KindSummary, dp.GetAttributes(), dp.GetCount(), dp.GetSum(), dp.GetTimeUnixNano()), false)
		}
	}
	return in
}

func numberPoint(p Point, kind string, dp *metricspb.NumberDataPoint) Point {
	p.Kind = kind
	p.Attrs = attrMap(dp.GetAttributes())
	p.Time = unixNano(dp.GetTimeUnixNano())
	switch v := dp.GetValue().(type) {
	case *metricspb.NumberDataPoint_AsInt:
		p.Int = v.AsInt
		p.Float = float64(v.AsInt)
	case *metricspb.NumberDataPoint_AsDouble:
		p.Float = v.AsDouble
	}
	return p
}

func countPoint(p Point, kind string, attrs []*commonpb.KeyValue, count uint64, sum float64, t uint64) Point {
	p.Kind = kind
	p.Attrs = attrMap(attrs)
	p.Count = count
	p.Sum = sum
	p.Time = unixNano(t)
	return p
}

// attrsKey is a canonical string for an attribute set.
func attrsKey(attrs map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(attrs)) {
		b.WriteString(strconv.Quote(k))
		b.WriteByte('=')
		b.WriteString(strconv.Quote(attrs[k]))
		b.WriteByte(',')
	}
	return b.String()
}

// attrMap stringifies attributes; it never returns nil.
func attrMap(kvs []*commonpb.KeyValue) map[string]string {
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		out[kv.GetKey()] = stringify(kv.GetValue())
	}
	return out
}

func stringify(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *commonpb.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *commonpb.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	case *commonpb.AnyValue_BytesValue:
		return base64.StdEncoding.EncodeToString(x.BytesValue)
	case *commonpb.AnyValue_ArrayValue, *commonpb.AnyValue_KvlistValue:
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(jsonValue(v)); err != nil {
			return fmt.Sprint(jsonValue(v))
		}
		return strings.TrimSuffix(b.String(), "\n")
	default:
		return ""
	}
}

// jsonValue maps an attribute value onto what encoding/json writes.
func jsonValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		if math.IsNaN(x.DoubleValue) || math.IsInf(x.DoubleValue, 0) {
			return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
		}
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue // base64, as encoding/json writes []byte
	case *commonpb.AnyValue_ArrayValue:
		out := make([]any, 0, len(x.ArrayValue.GetValues()))
		for _, e := range x.ArrayValue.GetValues() {
			out = append(out, jsonValue(e))
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		out := make(map[string]any, len(x.KvlistValue.GetValues()))
		for _, kv := range x.KvlistValue.GetValues() {
			out[kv.GetKey()] = jsonValue(kv.GetValue())
		}
		return out
	default:
		return nil
	}
}

// requestError is a request the sink refuses, with the status to answer.
type requestError struct {
	status int
	msg    string
}

func (e *requestError) Error() string { return e.msg }

func refuse(status int, format string, args ...any) error {
	return &requestError{status: status, msg: fmt.Sprintf(format, args...)}
}

// codec is an OTLP/HTTP body encoding.
type codec string

const (
	codecProto codec = contentTypeProto
	codecJSON  codec = contentTypeJSON
)

func (s *Sink) serveTraces(w http.ResponseWriter, r *http.Request) {
	var req coltracepb.ExportTraceServiceRequest
	c, err := decode(w, r, &req)
	if err != nil {
		writeError(w, c, err)
		return
	}
	s.addTraces(&req)
	write(w, c, http.StatusOK, &coltracepb.ExportTraceServiceResponse{})
}

func (s *Sink) serveMetrics(w http.ResponseWriter, r *http.Request) {
	var req colmetricspb.ExportMetricsServiceRequest
	c, err := decode(w, r, &req)
	if err != nil {
		writeError(w, c, err)
		return
	}
	s.addMetrics(&req)
	write(w, c, http.StatusOK, &colmetricspb.ExportMetricsServiceResponse{})
}

// decode reads an export request into m. It returns the request's codec
// (empty when the content type is not one of OTLP's) and a *requestError.
func decode(w http.ResponseWriter, r *http.Request, m proto.Message) (codec, error) {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil {
		return "", refuse(http.StatusUnsupportedMediaType, "content type %q: want %s or %s", r.Header.Get("Content-Type"), contentTypeProto, contentTypeJSON)
	}
	var c codec
	switch mediaType {
	case contentTypeProto:
		c = codecProto
	case contentTypeJSON:
		c = codecJSON
	default:
		return "", refuse(http.StatusUnsupportedMediaType, "content type %q: want %s or %s", mediaType, contentTypeProto, contentTypeJSON)
	}

	var body io.Reader = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return c, readError(err)
		}
		defer zr.Close()
		body = zr
	default:
		return c, refuse(http.StatusUnsupportedMediaType, "content encoding %q: want gzip or none", enc)
	}
	data, err := io.ReadAll(io.LimitReader(body, MaxBodyBytes+1))
	if err != nil {
		return c, readError(err)
	}
	if len(data) > MaxBodyBytes {
		return c, refuse(http.StatusRequestEntityTooLarge, "body exceeds %d bytes uncompressed", MaxBodyBytes)
	}

	switch c {
	case codecJSON:
		data, err = hexIDsToBase64(data)
		if err == nil {
			err = protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(data, m)
		}
	default:
		err = proto.Unmarshal(data, m)
	}
	if err != nil {
		return c, refuse(http.StatusBadRequest, "decode %s body: %v", c, err)
	}
	return c, nil
}

func readError(err error) error {
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return refuse(http.StatusRequestEntityTooLarge, "body exceeds %d bytes", MaxBodyBytes)
	}
	return refuse(http.StatusBadRequest, "read body: %v", err)
}

// idFields are the OTLP/JSON fields that carry IDs in hex, where protojson
// expects base64.
var idFields = map[string]bool{
	"traceId": true, "spanId": true, "parentSpanId": true,
	"trace_id": true, "span_id": true, "parent_span_id": true,
}

// hexIDsToBase64 rewrites OTLP/JSON's hex trace and span IDs as the base64 that
// protojson reads into bytes fields.
func hexIDsToBase64(data []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep 64-bit integers exact
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	rewriteIDs(v)
	return json.Marshal(v)
}

func rewriteIDs(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok && idFields[k] {
				if b, err := hex.DecodeString(s); err == nil {
					v[k] = base64.StdEncoding.EncodeToString(b)
				}
				continue
			}
			rewriteIDs(e)
		}
	case []any:
		for _, e := range v {
			rewriteIDs(e)
		}
	}
}

// writeError answers a refused request: a google.rpc.Status in the request's
// encoding as OTLP/HTTP asks, or plain text when that encoding is unknown.
func writeError(w http.ResponseWriter, c codec, err error) {
	status := http.StatusBadRequest
	if re, ok := errors.AsType[*requestError](err); ok {
		status = re.status
	}
	if c == "" {
		http.Error(w, err.Error(), status)
		return
	}
	write(w, c, status, &spb.Status{Message: err.Error()})
}

func write(w http.ResponseWriter, c codec, status int, m proto.Message) {
	var body []byte
	var err error
	if c == codecJSON {
		body, err = protojson.Marshal(m)
	} else {
		body, err = proto.Marshal(m)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", string(c))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
