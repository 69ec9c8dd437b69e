package function

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/extensions"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// EventHandler handles one CloudEvent. It returns the event to reply with (nil for
// none), or an error, which is answered with its problem status. Knative retries
// 5xx, 404, 408, 409 and 429 and dead-letters other 4xx; a handler that wants its
// permanent failure to travel on as an event returns a reply, not an error.
type EventHandler func(ctx context.Context, e event.Event) (*event.Event, error)

// ErrBadEvent is a request that is not a valid CloudEvent.
var ErrBadEvent = problem.New(problem.ErrInvalid, "not a valid CloudEvent")

// ErrSink is a reply that K_SINK did not accept.
var ErrSink = problem.New(problem.ErrUnavailable, "the sink did not accept the reply")

// receiver serves CloudEvents in binary and structured content modes, through the
// SDK's HTTP binding, and answers with the reply in the mode the request used.
type receiver struct {
	cfg    Config
	name   string
	handle EventHandler
	gate   Gate
	sink   *Emitter
}

// Emitter sends events to K_SINK: replies, and events a function makes after
// an HTTP request. Without a sink it sends nothing.
type Emitter struct {
	cfg  Config
	name string

	once   sync.Once
	client cloudevents.Client
	err    error
}

// NewEmitter returns an emitter for cfg's K_SINK and K_CE_OVERRIDES. It makes
// no connection until the first event.
func NewEmitter(cfg Config, name string) *Emitter { return &Emitter{cfg: cfg, name: name} }

// Emit fills what e leaves out (id, source, time, overrides) and sends it to
// the sink, if there is one.
func (em *Emitter) Emit(ctx context.Context, e event.Event) error {
	if _, ok := e.Extensions()[extensions.TraceParentExtension]; !ok {
		telemetry.InjectEvent(ctx, &e)
	}
	complete(&e, em.name, em.cfg.CEOverrides)
	if !em.cfg.Sink.Set() {
		return nil
	}
	em.once.Do(func() {
		em.client, em.err = cloudevents.NewClientHTTP(cloudevents.WithTarget(em.cfg.Sink.String()))
	})
	if em.err != nil {
		return em.err
	}
	if res := em.client.Send(ctx, e); !cloudevents.IsACK(res) {
		return res
	}
	return nil
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err == nil {
		err = e.Validate()
	}
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			problem.Write(w, fmt.Errorf("%w: body over %d bytes", problem.ErrTooLarge, tooLarge.Limit))
			return
		}
		problem.Write(w, fmt.Errorf("%w: %v", ErrBadEvent, err))
		return
	}
	parent, links := telemetry.EventContext(ctx, *e, r.Header)
	// Named by its type once handled: a type the function refuses is a
	// caller's choice, and span names must be few.
	ctx, span := telemetry.Tracer().Start(parent, "process",
		trace.WithSpanKind(trace.SpanKindConsumer), trace.WithLinks(links...),
		trace.WithAttributes(semconv.CloudEventsEventID(e.ID()), semconv.CloudEventsEventType(e.Type()),
			semconv.CloudEventsEventSource(e.Source()), semconv.MessagingOperationTypeProcess))
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		span.SetAttributes(semconv.HTTPResponseStatusCode(sw.status))
		if sw.status < 400 {
			span.SetName("process " + e.Type())
		} else {
			span.SetStatus(codes.Error, http.StatusText(sw.status))
		}
		span.End()
	}()
	rc.deliver(ctx, sw, r, e)
}

// deliver authorizes and handles e, and answers with its reply.
func (rc *receiver) deliver(ctx context.Context, w http.ResponseWriter, r *http.Request, e *event.Event) {
	var err error
	log := withSpan(Logger(ctx), trace.SpanFromContext(ctx)).With("ce.id", e.ID(), "ce.type", e.Type(), "ce.source", e.Source())
	ctx = WithLogger(ctx, log)
	if rc.gate != nil {
		if ctx, err = rc.gate.AuthorizeDelivery(ctx, *e); err != nil {
			status := problem.Write(w, err)
			log.Warn("event delivery refused", "status", status, "error", err.Error())
			return
		}
	}

	reply, err := rc.handle(ctx, *e)
	if err != nil {
		status := problem.Write(w, err)
		log.Warn("event not handled", "status", status, "error", err.Error())
		return
	}
	if reply == nil {
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if t, ok := e.Extensions()[events.ExtensionTenant]; ok {
		if _, set := reply.Extensions()[events.ExtensionTenant]; !set {
			// A reply acts in its cause's tenant, so the chain stays in it.
			reply.SetExtension(events.ExtensionTenant, t)
		}
	}
	// The next function's span is a child of this one.
	telemetry.InjectEvent(ctx, reply)
	complete(reply, rc.name, rc.cfg.CEOverrides)
	if err := reply.Validate(); err != nil {
		log.Error("handler built an invalid reply", "error", err.Error())
		problem.Write(w, fmt.Errorf("invalid reply: %w", err))
		return
	}
	if rc.cfg.Sink.Set() {
		if err := rc.sink.Emit(ctx, *reply); err != nil {
			// The handler's work is idempotent: a redelivery will send the reply again.
			log.Warn("reply not delivered to sink", "error", err.Error())
			problem.Write(w, fmt.Errorf("%w: %v", ErrSink, err))
			return
		}
	}
	log.Info("replied", "reply.type", reply.Type(), "reply.id", reply.ID())
	if structured(r) {
		ctx = binding.WithForceStructured(ctx)
	}
	if err := cehttp.WriteResponseWriter(ctx, binding.ToMessage(reply), http.StatusOK, w); err != nil {
		log.Warn("writing reply", "error", err.Error())
	}
}

// complete fills what a function may leave out of an event it sends, and
// applies the configured extension overrides.
func complete(e *event.Event, name string, overrides Overrides) {
	if e.SpecVersion() == "" {
		e.SetSpecVersion(event.CloudEventsVersionV1)
	}
	if e.ID() == "" {
		e.SetID(uuid.NewString())
	}
	if e.Source() == "" {
		e.SetSource("/berth/" + name)
	}
	if e.Time().IsZero() {
		e.SetTime(time.Now())
	}
	for k, v := range overrides {
		e.SetExtension(k, v)
	}
}

func structured(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == cloudevents.ApplicationCloudEventsJSON
}

// Reply answers a handler's error the way the eventing chain needs: a failure
// that a redelivery may cure (5xx, 408, 409, 429) stays an error, so Knative
// retries it; any other becomes a reply of failedType carrying the problem and
// naming the input (and carrying its subject), so the chain learns of it
// instead of a dead letter. The input's data is not copied: it may carry values
// that are secrets.
func Reply(in event.Event, failedType string, err error) (*event.Event, error) {
	d := problem.For(err)
	if Redeliverable(d.Status) {
		return nil, err
	}
	out := event.New()
	out.SetType(failedType)
	if s := in.Subject(); s != "" && ownSubject(in, s) {
		// The chain's subject (namespace/release), so a caller matches the
		// failure to what it asked for as it matches a success.
		out.SetSubject(s)
	}
	out.SetExtension(events.ExtensionCause, in.ID())
	if s, ok := in.Extensions()[events.ExtensionCorrelation]; ok {
		out.SetExtension(events.ExtensionCorrelation, s)
	}
	_ = out.SetData(cloudevents.ApplicationJSON, Failure{Problem: d, CauseType: in.Type(), CauseID: in.ID()})
	return &out, nil
}

// ownSubject reports whether subject may be echoed on a reply to in: an
// event acting for a tenant names only that tenant's namespace, so that a
// tenant cannot have berth's reply speak of another namespace's release.
func ownSubject(in event.Event, subject string) bool {
	t, ok := in.Extensions()[events.ExtensionTenant]
	if !ok {
		return true
	}
	tenant, _ := t.(string)
	return tenant != "" && strings.HasPrefix(subject, tenant+"/")
}

// Redeliverable reports whether a delivery answered status may succeed when
// delivered again (5xx, 408, 409, 429): the statuses Knative's delivery retries,
// but 404, which berth answers only for what is not there.
func Redeliverable(status int) bool {
	switch status {
	case http.StatusRequestTimeout, http.StatusConflict, http.StatusTooManyRequests:
		return true
	}
	return status >= 500
}

// Failure is the data of a dev.berth.*.failed event.
type Failure struct {
	// Problem is the problem the input met.
	Problem problem.Details `json:"problem"`
	// CauseType and CauseID name the input event.
	CauseType string `json:"causeType"`
	CauseID   string `json:"causeId"`
}
