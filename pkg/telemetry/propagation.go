package telemetry

import (
	"context"
	"net/http"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/extensions"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// EventContext returns ctx carrying the remote span the event names in its
// distributed-tracing extension (traceparent, tracestate), else the one the
// HTTP request's traceparent header names, and that header's span apart,
// when it differs, to link to. A Broker in between puts its own span in
// the header and leaves the extension as the sender wrote it: the extension
// is what joins berth's spans into one trace.
func EventContext(ctx context.Context, e event.Event, h http.Header) (context.Context, []trace.Link) {
	fromHeader := trace.SpanContextFromContext(Propagator.Extract(context.Background(), propagation.HeaderCarrier(h)))
	ext, ok := extensions.GetDistributedTracingExtension(e)
	if ok {
		carrier := propagation.MapCarrier{extensions.TraceParentExtension: ext.TraceParent}
		if ext.TraceState != "" {
			carrier[extensions.TraceStateExtension] = ext.TraceState
		}
		if sc := trace.SpanContextFromContext(Propagator.Extract(context.Background(), carrier)); sc.IsValid() {
			var links []trace.Link
			if fromHeader.IsValid() && !fromHeader.Equal(sc) {
				links = append(links, trace.Link{SpanContext: fromHeader})
			}
			return trace.ContextWithRemoteSpanContext(ctx, sc), links
		}
	}
	if fromHeader.IsValid() {
		return trace.ContextWithRemoteSpanContext(ctx, fromHeader), nil
	}
	return ctx, nil
}

// InjectEvent sets e's distributed-tracing extension to ctx's span, so that
// whoever handles e continues the trace. Without a span in ctx it leaves e
// as it is.
func InjectEvent(ctx context.Context, e *event.Event) {
	carrier := propagation.MapCarrier{}
	Propagator.Inject(ctx, carrier)
	tp := carrier[extensions.TraceParentExtension]
	if tp == "" {
		return
	}
	extensions.DistributedTracingExtension{TraceParent: tp, TraceState: carrier[extensions.TraceStateExtension]}.AddTracingAttributes(e)
}

// HTTPContext returns ctx carrying the remote span r's traceparent header names.
func HTTPContext(ctx context.Context, r *http.Request) context.Context {
	return Propagator.Extract(ctx, propagation.HeaderCarrier(r.Header))
}
