package release

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/berth-dev/berth/pkg/telemetry"
)

// operationDuration is berth.release.operation.duration: how long each Helm
// operation took, by operation and outcome. Its count is the operations.
var operationDuration = sync.OnceValue(func() metric.Float64Histogram {
	h, _ := telemetry.Meter().Float64Histogram("berth.release.operation.duration",
		metric.WithUnit("s"), metric.WithDescription("Duration of Helm operations (install, upgrade, uninstall, rollback) by outcome."),
		metric.WithExplicitBucketBoundaries(telemetry.DurationBuckets...))
	return h
})

// observe starts op's span and returns what ends it and records its duration.
func observe(ctx context.Context, op, ns, name string) (context.Context, func(error)) {
	start := time.Now()
	ctx, span := telemetry.Tracer().Start(ctx, "helm "+op,
		trace.WithAttributes(telemetry.AttrOperation.String(op), telemetry.AttrRelease.String(ns+"/"+name)))
	return ctx, func(err error) {
		if telemetry.Metering() {
			attrs := append(telemetry.Outcome(err), telemetry.AttrOperation.String(op))
			operationDuration().Record(ctx, time.Since(start).Seconds(), metric.WithAttributes(attrs...))
		}
		telemetry.End(span, err)
	}
}
