package telemetry

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Duration is an operation's duration histogram (unit s, DurationBuckets),
// made on its first use; its count is the operations.
type Duration struct {
	name, description string
	h                 func() metric.Float64Histogram
}

// NewDuration declares the histogram name. Nothing is made until an
// operation ends with metrics on.
func NewDuration(name, description string) *Duration {
	d := &Duration{name: name, description: description}
	d.h = sync.OnceValue(func() metric.Float64Histogram {
		h, _ := Meter().Float64Histogram(d.name, metric.WithUnit("s"), metric.WithDescription(d.description),
			metric.WithExplicitBucketBoundaries(DurationBuckets...))
		return h
	})
	return d
}

// Operation is one timed operation: its span, and its duration to record.
type Operation struct {
	ctx   context.Context
	span  trace.Span
	start time.Time
	d     *Duration
}

// Start starts an operation's span, named name with attrs, and its clock.
func (d *Duration) Start(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, *Operation) {
	ctx, span := Tracer().Start(ctx, name, trace.WithAttributes(attrs...))
	return ctx, &Operation{ctx: ctx, span: span, start: time.Now(), d: d}
}

// Span is the operation's span, for attributes learnt on the way.
func (o *Operation) Span() trace.Span { return o.span }

// End records the duration with err's outcome and attrs (when metrics are
// on) and ends the span (End).
func (o *Operation) End(err error, attrs ...attribute.KeyValue) {
	if Metering() {
		o.d.h().Record(o.ctx, time.Since(o.start).Seconds(), metric.WithAttributes(append(Outcome(err), attrs...)...))
	}
	End(o.span, err)
}
