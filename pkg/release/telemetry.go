package release

import (
	"context"

	"github.com/berth-dev/berth/pkg/telemetry"
)

// operationDuration is berth.release.operation.duration: how long each Helm
// operation took, by operation and outcome.
var operationDuration = telemetry.NewDuration("berth.release.operation.duration",
	"Duration of Helm operations (install, upgrade, uninstall, rollback) by outcome.")

// observe starts op's span and returns what ends it and records its duration.
func observe(ctx context.Context, op, ns, name string) (context.Context, func(error)) {
	ctx, o := operationDuration.Start(ctx, "helm "+op, telemetry.AttrOperation.String(op), telemetry.AttrRelease.String(ns+"/"+name))
	return ctx, func(err error) { o.End(err, telemetry.AttrOperation.String(op)) }
}
