package telemetry

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// WrapKube traces every Kubernetes API call made through rt: one client span
// per request, named by verb and resource ("PUT configmaps"). It is for
// rest.Config.Wrap; with tracing off it returns rt itself, so that telemetry
// that is off costs nothing per call.
func WrapKube(rt http.RoundTripper) http.RoundTripper {
	if !Tracing() {
		return rt
	}
	return otelhttp.NewTransport(rt,
		otelhttp.WithPropagators(propagation.TraceContext{}),
		// A call made outside any operation (an informer, a library's own
		// context.Background) would start a trace of its own: leave it out.
		otelhttp.WithFilter(func(r *http.Request) bool { return trace.SpanContextFromContext(r.Context()).IsValid() }),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return KubeSpanName(r.Method, r.URL.Path) }))
}

// KubeSpanName names an API call by its method and resource (with its
// subresource): "GET configmaps", "PATCH services/status". Namespaces and
// names stay out of span names, which must be few.
func KubeSpanName(method, path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	// /api/v1/... or /apis/group/version/...
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return method
	}
	if len(parts) >= 3 && parts[0] == "namespaces" {
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return method + " namespaces"
	case 1, 2:
		return method + " " + parts[0]
	default:
		return method + " " + parts[0] + "/" + parts[2]
	}
}
