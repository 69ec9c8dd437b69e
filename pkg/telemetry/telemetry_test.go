package telemetry

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

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
