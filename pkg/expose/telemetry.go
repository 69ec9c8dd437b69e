package expose

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// exposeDuration is berth.exposure.duration: how long Expose took, by backend
// and outcome. Its count is the exposures.
var exposeDuration = sync.OnceValue(func() metric.Float64Histogram {
	h, _ := telemetry.Meter().Float64Histogram("berth.exposure.duration", metric.WithUnit("s"),
		metric.WithDescription("Duration of exposures by backend and outcome."),
		metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets...))
	return h
})

func observeExpose(ctx context.Context, req Request) (context.Context, func(Endpoint, error)) {
	start := time.Now()
	ctx, span := telemetry.Tracer().Start(ctx, "expose", trace.WithAttributes(
		telemetry.AttrService.String(req.Target.Namespace+"/"+req.Target.Name), telemetry.Transport(req.Target.Protocol)))
	return ctx, func(end Endpoint, err error) {
		attrs := telemetry.Outcome(err)
		if end.Backend == "" {
			end.Backend = "none" // refused before an entry point was chosen, or failed after
		}
		if end.EntryPoint != "" {
			span.SetAttributes(telemetry.AttrEntryPoint.String(end.EntryPoint), telemetry.AttrPort.Int(end.Port))
		}
		attrs = append(attrs, telemetry.AttrBackend.String(end.Backend))
		if telemetry.Metering() {
			exposeDuration().Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(attrs...))
		}
		telemetry.End(span, err)
	}
}

// route writes x's routing objects through backend, in a span of its own:
// each write to the API server is a child span.
func route(ctx context.Context, backend Backend, ep entrypoint.EntryPoint, x Exposure) error {
	ctx, span := telemetry.Tracer().Start(ctx, "route "+ep.Backend, trace.WithAttributes(
		telemetry.AttrBackend.String(ep.Backend), telemetry.AttrEntryPoint.String(ep.ID()), telemetry.AttrPort.Int(x.Key.Port)))
	err := backend.Expose(ctx, ep, x)
	telemetry.End(span, err)
	return err
}
