// Package telemetry is berth's OpenTelemetry: traces and metrics exported by
// OTLP/HTTP, configured by the standard OTEL_* variables, and off when they
// name no endpoint. Off means the global no-op providers: no exporter, no
// goroutine, no span recorded. W3C trace context is propagated either way, so
// a function with telemetry off still carries its callers' traces on.
//
// Packages take their tracer from Tracer (the one Setup installed, else a
// no-op tracer) and their meter from Meter, the global provider, which
// OpenTelemetry binds late: instruments made before Setup report through the
// provider Setup installs.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/berth-dev/berth/pkg/problem"
)

// Scope is the instrumentation scope of every berth tracer and meter.
const Scope = "github.com/berth-dev/berth"

// The OTEL_* variables Setup reads itself; berth's exporters (otlp.go) read
// the other OTEL_EXPORTER_OTLP_* ones (headers, timeouts, compression,
// certificates, temporality) and the SDK the rest (sampler, batch and export
// intervals, resource attributes).
const (
	EnvEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	EnvTracesEndpoint  = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	EnvMetricsEndpoint = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	EnvProtocol        = "OTEL_EXPORTER_OTLP_PROTOCOL"
	EnvTracesExporter  = "OTEL_TRACES_EXPORTER"
	EnvMetricsExporter = "OTEL_METRICS_EXPORTER"
	EnvSDKDisabled     = "OTEL_SDK_DISABLED"
)

// ErrProtocol is an OTLP protocol berth does not export with.
var ErrProtocol = errors.New("berth exports OTLP over http/protobuf only")

var tracing, metering atomic.Bool

// Tracing reports whether spans are exported (Setup found a traces endpoint).
func Tracing() bool { return tracing.Load() }

// Metering reports whether metrics are exported.
func Metering() bool { return metering.Load() }

// DurationBuckets are the bucket bounds, in seconds, of berth's duration
// histograms: from a ledger write (milliseconds) to a Helm install that waits
// for readiness (minutes).
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// tracer is berth's tracer: no-op until Setup turns tracing on. It is held
// here rather than asked of the global provider per span, which locks.
var tracer atomic.Pointer[trace.Tracer]

// Tracer is berth's tracer: the one Setup installed, else a no-op tracer,
// which still carries a caller's span context on.
func Tracer() trace.Tracer {
	if t := tracer.Load(); t != nil {
		return *t
	}
	return noopTracer
}

var noopTracer trace.Tracer = tracenoop.Tracer{}

func setTracer(t trace.Tracer) { tracer.Store(&t) }

// Meter is berth's meter, from the global provider.
func Meter() metric.Meter { return otel.Meter(Scope) }

// Propagator is the W3C trace context propagator berth carries traces with,
// on HTTP headers and on CloudEvents. It is used whether or not telemetry is on.
var Propagator propagation.TextMapPropagator = propagation.TraceContext{}

// Settings say which signals the environment asks for.
type Settings struct {
	Traces, Metrics bool
}

// FromEnv reads which signals getenv turns on: a signal is on when an OTLP
// endpoint is set for it (or for all), its exporter variable is not "none",
// and the SDK is not disabled. A protocol other than http/protobuf is an error,
// not a silent fallback.
func FromEnv(getenv func(string) string) (Settings, error) {
	if strings.EqualFold(getenv(EnvSDKDisabled), "true") {
		return Settings{}, nil
	}
	var s Settings
	on := func(endpoint, exporter string) (bool, error) {
		if getenv(EnvEndpoint) == "" && getenv(endpoint) == "" {
			return false, nil
		}
		switch e := getenv(exporter); e {
		case "", "otlp":
		case "none":
			return false, nil
		default:
			return false, fmt.Errorf("%s=%q: berth exports by otlp or none", exporter, e)
		}
		return true, nil
	}
	var err error
	if s.Traces, err = on(EnvTracesEndpoint, EnvTracesExporter); err != nil {
		return Settings{}, err
	}
	if s.Metrics, err = on(EnvMetricsEndpoint, EnvMetricsExporter); err != nil {
		return Settings{}, err
	}
	if s.Traces || s.Metrics {
		for _, v := range []string{EnvProtocol, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"} {
			if p := getenv(v); p != "" && p != "http/protobuf" {
				return Settings{}, fmt.Errorf("%s=%q: %w", v, p, ErrProtocol)
			}
		}
	}
	return s, nil
}

// Setup installs the global tracer and meter providers the environment asks
// for, as service name (OTEL_SERVICE_NAME overrides it). It connects to
// nothing: exporters dial on their first export. The returned shutdown flushes
// what is buffered and must be called before the process exits; with
// telemetry off it does nothing.
func Setup(ctx context.Context, name string) (shutdown func(context.Context) error, err error) {
	s, err := FromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	if !s.Traces && !s.Metrics {
		return func(context.Context) error { return nil }, nil
	}
	res, err := resource.Merge(resource.Default(),
		resource.NewSchemaless(semconv.ServiceName(name), semconv.ServiceNamespace("berth")))
	if err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	env, err := resource.New(ctx, resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME: %w", err)
	}
	if res, err = resource.Merge(res, env); err != nil {
		return nil, fmt.Errorf("telemetry resource: %w", err)
	}
	var downs []func(context.Context) error
	if s.Traces {
		exp, err := NewSpanExporter(os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res),
			sdktrace.WithSampler(sampler(os.Getenv)))
		otel.SetTracerProvider(tp)
		setTracer(tp.Tracer(Scope))
		tracing.Store(true)
		downs = append(downs, tp.Shutdown)
	}
	if s.Metrics {
		exp, err := NewMetricExporter(os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("OTLP metric exporter: %w", err)
		}
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)), sdkmetric.WithResource(res))
		otel.SetMeterProvider(mp)
		metering.Store(true)
		downs = append(downs, mp.Shutdown)
	}
	return func(ctx context.Context) error {
		var errs []error
		for _, down := range downs {
			errs = append(errs, down(ctx))
		}
		// Off again, as before Setup.
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		setTracer(noopTracer)
		otel.SetMeterProvider(metricnoop.NewMeterProvider())
		tracing.Store(false)
		metering.Store(false)
		return errors.Join(errs...)
	}, nil
}

// sampler decides which traces are recorded. A caller's traceparent names
// its trace, but its sampled flag is a tenant's say and is not obeyed: a
// trace that enters berth from outside (a remote parent) is sampled by its
// trace id at the ratio OTEL_TRACES_SAMPLER_ARG gives with
// OTEL_TRACES_SAMPLER=traceidratio or parentbased_traceidratio (else all),
// the same decision at every hop; spans within one process follow their
// parent.
func sampler(getenv func(string) string) sdktrace.Sampler {
	ratio := 1.0
	switch getenv("OTEL_TRACES_SAMPLER") {
	case "traceidratio", "parentbased_traceidratio":
		if r, err := strconv.ParseFloat(getenv("OTEL_TRACES_SAMPLER_ARG"), 64); err == nil && r >= 0 && r <= 1 {
			ratio = r
		}
	case "always_off", "parentbased_always_off":
		ratio = 0
	}
	byID := sdktrace.TraceIDRatioBased(ratio)
	return sdktrace.ParentBased(byID, sdktrace.WithRemoteParentSampled(byID), sdktrace.WithRemoteParentNotSampled(byID))
}

// Outcome is the attributes of an operation's outcome on its metrics and
// span: berth.outcome success or failure, and on failure error.type, the
// class of problem berth answers it with (invalid-request, conflict, ...).
func Outcome(err error) []attribute.KeyValue {
	if err == nil {
		return []attribute.KeyValue{AttrOutcome.String("success")}
	}
	slug := strings.TrimPrefix(problem.For(err).Type, problem.TypePrefix)
	return []attribute.KeyValue{AttrOutcome.String("failure"), semconv.ErrorTypeKey.String(slug)}
}

// End ends span with err's outcome: its attributes, and on failure an error
// status with err's message.
func End(span trace.Span, err error) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(Outcome(err)...)
	if err != nil {
		// The problem's detail: bounded, and for an unclassified error
		// not its text, as callers are answered.
		span.SetStatus(codes.Error, problem.For(err).Detail)
	}
	span.End()
}
