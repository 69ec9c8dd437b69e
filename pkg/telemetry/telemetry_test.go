package telemetry

import (
	"net/http/httptest"
	"sync/atomic"

	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	coltracepb "go.opentelemetry.io/proto/slim/otlp/collector/trace/v1"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/trace"
)

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    Settings
		wantErr string
	}{
		{name: "nothing set: off", want: Settings{}},
		{name: "one endpoint: both", env: map[string]string{EnvEndpoint: "http://127.0.0.1:4318"}, want: Settings{Traces: true, Metrics: true}},
		{name: "traces endpoint only", env: map[string]string{EnvTracesEndpoint: "http://c/v1/traces"}, want: Settings{Traces: true}},
		{name: "metrics endpoint only", env: map[string]string{EnvMetricsEndpoint: "http://c/v1/metrics"}, want: Settings{Metrics: true}},
		{name: "traces exporter none", env: map[string]string{EnvEndpoint: "http://c", EnvTracesExporter: "none"}, want: Settings{Metrics: true}},
		{name: "SDK disabled", env: map[string]string{EnvEndpoint: "http://c", EnvSDKDisabled: "true"}, want: Settings{}},
		{name: "http/protobuf", env: map[string]string{EnvEndpoint: "http://c", EnvProtocol: "http/protobuf"}, want: Settings{Traces: true, Metrics: true}},
		{name: "grpc refused", env: map[string]string{EnvEndpoint: "http://c", EnvProtocol: "grpc"}, wantErr: EnvProtocol},
		{name: "grpc for traces refused", env: map[string]string{EnvEndpoint: "http://c", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, wantErr: "TRACES_PROTOCOL"},
		{name: "grpc with nothing on: off, no error", env: map[string]string{EnvProtocol: "grpc"}, want: Settings{}},
		{name: "zipkin exporter refused", env: map[string]string{EnvEndpoint: "http://c", EnvTracesExporter: "zipkin"}, wantErr: EnvTracesExporter},
		{name: "prometheus exporter refused", env: map[string]string{EnvEndpoint: "http://c", EnvMetricsExporter: "prometheus"}, wantErr: EnvMetricsExporter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := FromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("FromEnv(%v) = %+v, %v, want an error naming %s", tc.env, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("FromEnv(%v) = %+v, %v, want %+v", tc.env, got, err, tc.want)
			}
		})
	}
}

func TestKubeSpanName(t *testing.T) {
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/api/v1/namespaces/berth-ingress/configmaps/ledger-x", "GET configmaps"},
		{"PUT", "/api/v1/namespaces/berth-ingress/configmaps/ledger-x", "PUT configmaps"},
		{"GET", "/api/v1/namespaces/a/services", "GET services"},
		{"PATCH", "/api/v1/namespaces/a/services/s/status", "PATCH services/status"},
		{"GET", "/apis/gateway.networking.k8s.io/v1/namespaces/a/gateways/g", "GET gateways"},
		{"POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "POST subjectaccessreviews"},
		{"GET", "/api/v1/namespaces/a", "GET namespaces"},
		{"GET", "/api/v1/namespaces", "GET namespaces"},
		{"GET", "/version", "GET"},
		{"GET", "/apis", "GET"},
	} {
		if got := KubeSpanName(tc.method, tc.path); got != tc.want {
			t.Errorf("KubeSpanName(%q, %q) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestOutcome(t *testing.T) {
	if got := Outcome(nil); len(got) != 1 || got[0].Value.AsString() != "success" {
		t.Errorf("Outcome(nil) = %v, want success", got)
	}
	got := Outcome(errors.New("boom"))
	if len(got) != 2 || got[0].Value.AsString() != "failure" || got[1].Value.AsString() != "internal" {
		t.Errorf("Outcome(boom) = %v, want failure, error.type internal", got)
	}
}

func TestEventContext(t *testing.T) {
	const (
		extTP    = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		headerTP = "00-11111111111111111111111111111111-2222222222222222-01"
	)
	withExt := event.New()
	withExt.SetExtension("traceparent", extTP)
	bad := event.New()
	bad.SetExtension("traceparent", "not a traceparent")
	header := http.Header{"Traceparent": []string{headerTP}}
	for _, tc := range []struct {
		name      string
		e         event.Event
		h         http.Header
		wantTrace string
		wantLinks int
	}{
		{"the extension wins, the header is linked", withExt, header, "0af7651916cd43dd8448eb211c80319c", 1},
		{"the extension alone", withExt, http.Header{}, "0af7651916cd43dd8448eb211c80319c", 0},
		{"the header alone", event.New(), header, "11111111111111111111111111111111", 0},
		{"a malformed extension falls back to the header", bad, header, "11111111111111111111111111111111", 0},
		{"neither", event.New(), http.Header{}, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, links := EventContext(context.Background(), tc.e, tc.h)
			sc := trace.SpanContextFromContext(ctx)
			got := ""
			if sc.IsValid() {
				got = sc.TraceID().String()
			}
			if got != tc.wantTrace || len(links) != tc.wantLinks {
				t.Errorf("EventContext = trace %q, %d links, want %q, %d", got, len(links), tc.wantTrace, tc.wantLinks)
			}
			// What is extracted is injected again, unchanged in trace.
			out := event.New()
			InjectEvent(ctx, &out)
			tp, _ := out.Extensions()["traceparent"].(string)
			if (tc.wantTrace == "") != (tp == "") || tc.wantTrace != "" && !strings.Contains(tp, tc.wantTrace) {
				t.Errorf("InjectEvent set traceparent %q, want trace %q", tp, tc.wantTrace)
			}
		})
	}
}

func TestOTLPClientRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct {
		name, key, value string
	}{
		{"endpoint not a URL", EnvEndpoint, "collector:4318"},
		{"endpoint of another scheme", EnvEndpoint, "grpc://collector:4317"},
		{"header without a value", "OTEL_EXPORTER_OTLP_HEADERS", "api-key"},
		{"header value with a line break", "OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%0D%0AHost:%20evil"},
		{"header value badly encoded", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=%zz"},
		{"timeout zero", "OTEL_EXPORTER_OTLP_TIMEOUT", "0"},
		{"timeout not a number", "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s"},
		{"compression unknown", "OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"},
		{"CA file missing", "OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"},
		{"client key without certificate", "OTEL_EXPORTER_OTLP_CLIENT_KEY", "/nonexistent/key.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{EnvEndpoint: "http://127.0.0.1:4318", tc.key: tc.value}
			if _, err := newOTLPClient(signalTraces, func(k string) string { return env[k] }); err == nil {
				t.Errorf("%s=%q accepted", tc.key, tc.value)
			} else if strings.Contains(err.Error(), "evil") {
				t.Errorf("the error shows the header's value: %v", err)
			}
		})
	}
	c, err := newOTLPClient(signalMetrics, func(k string) string {
		return map[string]string{EnvEndpoint: "https://u:secret@c.example/base/", "OTEL_EXPORTER_OTLP_HEADERS": "a=1, b=x%20y,"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.url != "https://u:secret@c.example/base/v1/metrics" || strings.Contains(c.shown, "secret") {
		t.Errorf("url = %q, shown as %q; want the signal's path added, the password not shown", c.url, c.shown)
	}
	if c.headers.Get("a") != "1" || c.headers.Get("b") != "x y" {
		t.Errorf("headers = %v", c.headers)
	}
}

// TestOTLPExportRetries: a collector that answers 503 is asked again; a
// redirect is not followed (it would carry the headers elsewhere); a 4xx
// is not retried.
func TestOTLPExportRetries(t *testing.T) {
	var calls atomic.Int32
	answers := []int{http.StatusServiceUnavailable, http.StatusOK}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(calls.Add(1)) - 1
		switch {
		case r.URL.Path == "/redirect/v1/traces":
			http.Redirect(w, r, "http://elsewhere.example/", http.StatusTemporaryRedirect)
		case r.URL.Path == "/bad/v1/traces":
			w.WriteHeader(http.StatusBadRequest)
		case n < len(answers):
			w.WriteHeader(answers[n])
		}
	}))
	defer srv.Close()
	export := func(base string) error {
		c, err := newOTLPClient(signalTraces, func(k string) string { return map[string]string{EnvEndpoint: srv.URL + base}[k] })
		if err != nil {
			t.Fatal(err)
		}
		return c.export(t.Context(), &coltracepb.ExportTraceServiceRequest{}, &coltracepb.ExportTraceServiceResponse{})
	}
	if err := export(""); err != nil || calls.Load() != 2 {
		t.Errorf("export after a 503 = %v in %d requests, want success in 2", err, calls.Load())
	}
	calls.Store(10)
	if err := export("/redirect"); err == nil || calls.Load() != 11 {
		t.Errorf("export answered by a redirect = %v in %d requests, want an error in 1", err, calls.Load()-10)
	}
	calls.Store(10)
	if err := export("/bad"); err == nil || calls.Load() != 11 {
		t.Errorf("export answered 400 = %v in %d requests, want an error in 1", err, calls.Load()-10)
	}
}

// TestOTLPExportGivesUpOnAnUntrustedCertificate: a collector whose
// certificate is not trusted is asked once, not until the timeout.
func TestOTLPExportGivesUpOnAnUntrustedCertificate(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { calls.Add(1) }))
	defer srv.Close()
	c, err := newOTLPClient(signalTraces, func(k string) string {
		return map[string]string{EnvEndpoint: srv.URL, "OTEL_EXPORTER_OTLP_TIMEOUT": "5000"}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	err = c.export(t.Context(), &coltracepb.ExportTraceServiceRequest{}, &coltracepb.ExportTraceServiceResponse{})
	if err == nil || errors.Is(err, errRetryable) || calls.Load() != 0 {
		t.Errorf("export to an untrusted collector = %v (%d requests reached it), want a final error", err, calls.Load())
	}
}
