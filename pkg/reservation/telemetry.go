package reservation

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/metric"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// reserveDuration is berth.reservation.duration: how long Reserve took, by
// outcome.
var reserveDuration = telemetry.NewDuration("berth.reservation.duration", "Duration of port reservations by outcome.")

func observeReserve(ctx context.Context, req Request) (context.Context, func(error)) {
	ctx, o := reserveDuration.Start(ctx, "reserve port", telemetry.AttrOwner.String(req.Owner), telemetry.Transport(req.Protocol))
	return ctx, func(err error) { o.End(err) }
}

// ObservePorts reports berth.port.usage, each entry point's ports by state
// (reserved, bound, in_use, free) and protocol: the capacity signal. It covers
// the entry points this service has written, and reads their ledgers when
// metrics are collected (one LIST of blocks each per export interval), so that every
// instance reports the same, current figures. It does nothing unless metrics
// are exported.
func (s *Service) ObservePorts() error {
	if !telemetry.Metering() {
		return nil
	}
	m := telemetry.Meter()
	g, err := m.Int64ObservableGauge("berth.port.usage", metric.WithUnit("{port}"),
		metric.WithDescription("Ports of an entry point's range by state and protocol."))
	if err != nil {
		return err
	}
	_, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		now := s.now()
		var errs []error
		s.seen.Range(func(_, v any) bool {
			ep := v.(entrypoint.EntryPoint)
			l, err := s.Ledgers.Entries(ctx, book(ep))
			if err != nil {
				errs = append(errs, err)
				return true
			}
			for _, proto := range []portalloc.Protocol{portalloc.TCP, portalloc.UDP} {
				u := l.Usage(proto, s.Range, ep.InUse, now)
				for state, n := range map[string]int{"reserved": u.Reserved, "bound": u.Bound, "in_use": u.InUse, "free": u.Free} {
					o.ObserveInt64(g, int64(n), metric.WithAttributes(telemetry.AttrEntryPoint.String(ep.ID()),
						telemetry.Transport(proto), telemetry.AttrPortState.String(state)))
				}
			}
			return true
		})
		return errors.Join(errs...)
	}, g)
	return err
}
