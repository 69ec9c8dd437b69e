package ledger

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/berth-dev/berth/pkg/telemetry"
)

var (
	// conflicts is berth.ledger.conflicts: compare-and-swap writes that lost
	// a race (or found a cached copy stale) and were tried again.
	conflicts = sync.OnceValue(func() metric.Int64Counter {
		c, _ := telemetry.Meter().Int64Counter("berth.ledger.conflicts", metric.WithUnit("{conflict}"),
			metric.WithDescription("Ledger compare-and-swap writes retried after a conflict."))
		return c
	})
	// batchSize is berth.ledger.batch.size: updates committed by one write.
	batchSize = sync.OnceValue(func() metric.Int64Histogram {
		h, _ := telemetry.Meter().Int64Histogram("berth.ledger.batch.size", metric.WithUnit("{update}"),
			metric.WithDescription("Ledger updates group-committed by one write."),
			metric.WithExplicitBucketBoundaries(1, 2, 4, 8, 16, 32, 64, 128, 256))
		return h
	})
)

// startCommit starts the span of one group commit: a child of the first
// traced update's span in the batch, linked to the others' (which see the
// commit only through that link, in the first caller's trace).
func startCommit[T any](ctx context.Context, ref Ref, batch []*pending[T]) (context.Context, trace.Span) {
	var first trace.SpanContext
	var links []trace.Link
	for _, p := range batch {
		switch sc := trace.SpanContextFromContext(p.ctx); {
		case !sc.IsValid():
		case !first.IsValid():
			first = sc
		default:
			links = append(links, trace.Link{SpanContext: sc})
		}
	}
	if !first.IsValid() {
		// Nobody traces this commit: it must not start a trace of its own.
		return ctx, trace.SpanFromContext(ctx)
	}
	return telemetry.Tracer().Start(trace.ContextWithSpanContext(ctx, first), "ledger commit",
		trace.WithLinks(links...),
		trace.WithAttributes(telemetry.AttrLedger.String(ref.String()), telemetry.AttrEntryPoint.String(ref.EntryPoint),
			telemetry.AttrBatchSize.Int(len(batch))))
}

// endCommit ends the commit's span and records its batch size.
func endCommit(ctx context.Context, span trace.Span, ref Ref, n, attempts int, err error) {
	if telemetry.Metering() {
		batchSize().Record(ctx, int64(n), metric.WithAttributes(telemetry.AttrEntryPoint.String(ref.EntryPoint)))
	}
	span.SetAttributes(telemetry.AttrAttempts.Int(attempts))
	telemetry.End(span, err)
}
