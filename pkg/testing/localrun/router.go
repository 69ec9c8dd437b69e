package localrun

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/function"
)

// Trigger routes events of a type (and, if set, an extension value) to a
// subscriber, as a Knative Trigger does.
type Trigger struct {
	Type       string
	Extension  string
	Value      string
	Subscriber string // function name
}

// Triggers is the same wiring config/ gives Knative Eventing.
var Triggers = []Trigger{
	{Type: events.InstallRequested, Subscriber: "install"},
	{Type: events.UninstallRequested, Subscriber: "install"},
	{Type: events.ReleaseInstalled, Extension: events.ExtensionExpose, Value: "true", Subscriber: "getport"},
	{Type: events.PortRequested, Subscriber: "getport"},
	{Type: events.PortReserved, Subscriber: "setingress"},
	{Type: events.ReleaseUninstalled, Subscriber: "setingress"},
	{Type: events.ReleaseUninstalled, Subscriber: "getport"},
	{Type: events.SweepRequested, Subscriber: "getport"},
}

// router stands where the Broker stands on a cluster: every function's K_SINK
// points at it, and it delivers each event to the subscribers whose Trigger
// matches, retrying what Knative retries. Replies come back through K_SINK.
type router struct {
	targets map[string]string // function name → URL
	token   string            // the delivery identity's bearer token
	client  *http.Client
	seen    chan event.Event

	mu  sync.Mutex
	log []Seen
}

// Seen is an event the broker received, and when.
type Seen struct {
	event.Event
	At time.Time
}

func newRouter(targets map[string]string, token string) *router {
	return &router{targets: targets, token: token, client: &http.Client{Timeout: 5 * time.Minute}, seen: make(chan event.Event, 256)}
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rt.mu.Lock()
	rt.log = append(rt.log, Seen{*e, time.Now()})
	rt.mu.Unlock()
	select {
	case rt.seen <- *e:
	default:
	}
	w.WriteHeader(http.StatusAccepted)
	go rt.deliver(*e)
}

func (rt *router) deliver(e event.Event) {
	for _, t := range Triggers {
		if t.Type != e.Type() {
			continue
		}
		if t.Extension != "" && fmt.Sprint(e.Extensions()[t.Extension]) != t.Value {
			continue
		}
		go rt.send(t.Subscriber, e)
	}
}

// send delivers e to a subscriber, retrying 5xx, 404, 408, 409 and 429 with
// backoff, as Knative's default delivery does.
func (rt *router) send(name string, e event.Event) {
	backoff := 200 * time.Millisecond
	for attempt := 0; attempt < 6; attempt++ {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, rt.targets[name], nil)
		if err != nil {
			return
		}
		if err := cehttp.WriteRequest(context.Background(), binding.ToMessage(&e), req); err != nil {
			return
		}
		// As Knative Eventing does with authentication-oidc on.
		req.Header.Set("Authorization", "Bearer "+rt.token)
		resp, err := rt.client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body) // the reply arrives through K_SINK
			resp.Body.Close()
			if s := resp.StatusCode; s < 300 || !function.Redeliverable(s) && s != http.StatusNotFound {
				return // delivered, or dead-lettered as Knative would
			}
		}
		time.Sleep(backoff)
		backoff *= 2
	}
}

// wait returns the first event that ok accepts, from now on.
func (rt *router) wait(ctx context.Context, ok func(event.Event) bool) (event.Event, error) {
	for {
		select {
		case e := <-rt.seen:
			if ok(e) {
				return e, nil
			}
		case <-ctx.Done():
			return event.Event{}, ctx.Err()
		}
	}
}

// since returns the events received from the i-th on.
func (rt *router) since(i int) []Seen {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return slices.Clone(rt.log[min(i, len(rt.log)):])
}

// post sends e into the router, as a caller posting to the Broker.
func post(ctx context.Context, url string, e event.Event) error {
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(url))
	if err != nil {
		return err
	}
	if res := c.Send(ctx, e); !cloudevents.IsACK(res) {
		return res
	}
	return nil
}
