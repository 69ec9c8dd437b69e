package expose

import (
	"context"

	"go.opentelemetry.io/otel/trace"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// exposeDuration is berth.exposure.duration: how long Expose took, by backend
// and outcome.
var exposeDuration = telemetry.NewDuration("berth.exposure.duration", "Duration of exposures by backend and outcome.")

func observeExpose(ctx context.Context, req Request) (context.Context, func(Endpoint, error)) {
	ctx, o := exposeDuration.Start(ctx, "expose",
		telemetry.AttrService.String(req.Target.Namespace+"/"+req.Target.Name), telemetry.Transport(req.Target.Protocol))
	return ctx, func(end Endpoint, err error) {
		if end.Backend == "" {
			end.Backend = "none" // refused before an entry point was chosen, or failed after
		}
		if end.EntryPoint != "" {
			o.Span().SetAttributes(telemetry.AttrEntryPoint.String(end.EntryPoint), telemetry.AttrPort.Int(end.Port),
				telemetry.AttrExposureState.String(string(end.State)))
		}
		o.End(err, telemetry.AttrBackend.String(end.Backend))
	}
}

// route writes x's routing objects through backend, in a span of its own:
// each write to the API server is a child span.
func route(ctx context.Context, backend Backend, ep entrypoint.EntryPoint, x Exposure) (int64, error) {
	ctx, span := telemetry.Tracer().Start(ctx, "route "+ep.Backend, trace.WithAttributes(
		telemetry.AttrBackend.String(ep.Backend), telemetry.AttrEntryPoint.String(ep.ID()), telemetry.AttrPort.Int(x.Key.Port)))
	since, err := backend.Expose(ctx, ep, x)
	telemetry.End(span, err)
	return since, err
}
