package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/expose"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/seed"
)

var (
	errUnexpectedEvent = problem.New(problem.ErrInvalid, "setingress does not consume this event type")
	errNoIntent        = problem.New(problem.ErrInvalid, "port.reserved carries no expose intent and release")
	errNamespace       = problem.New(problem.ErrForbidden, "the target Service's namespace is not in ALLOWED_NAMESPACES")
	errForeignOwner    = problem.New(problem.ErrForbidden, "an exposure's owner must be in its target Service's namespace")
)

type handler struct {
	exp     *expose.Exposer
	ports   *reservation.Service
	access  auth.Access
	allowed []string
	// confirm bounds the wait for the data plane (CONFIRM_TIMEOUT).
	confirm time.Duration
}

func newHandler(cfg Config, core kubernetes.Interface, gw *gatewayapi.Client, ac auth.Access) *handler {
	backends := expose.NewBackends(expose.Deps{Core: core, Gateway: gw, SharedIPAnnotations: cfg.SharedIPAnnotations, Backoff: kube.ConflictBackoff})
	ports := cfg.Settings.New(core, gw)
	return &handler{
		exp:   &expose.Exposer{Core: core, Ports: ports, Backends: backends, Backoff: kube.ConflictBackoff},
		ports: ports, access: ac, allowed: cfg.AllowedNamespaces, confirm: cfg.ConfirmTimeout,
	}
}

// authorize checks an exposure request before anything is read or written: the
// target's namespace is allowed, the caller may create exposures there, and
// the owner, if named, lives there.
func (h *handler) authorize(ctx context.Context, req expose.Request) error {
	ns := req.Target.Namespace
	if len(validation.IsDNS1123Label(ns)) > 0 {
		return fmt.Errorf("%w: serviceNamespace %q is not a namespace name", expose.ErrBadRequest, problem.Clip(ns))
	}
	if !slices.Contains(h.allowed, ns) {
		return fmt.Errorf("%w: %q", errNamespace, problem.Clip(ns))
	}
	if req.Owner != "" {
		ons, err := portalloc.OwnerNamespace(req.Owner)
		if err != nil {
			return err
		}
		if ons != ns {
			return fmt.Errorf("%w: owner in %s, Service in %s", errForeignOwner, ons, ns)
		}
	}
	return h.access.Check(ctx, auth.Attributes{Verb: "create", Resource: auth.Exposures, Namespace: ns, Name: req.Target.Name})
}

// expose authorizes and makes one exposure.
func (h *handler) expose(ctx context.Context, req expose.Request) (expose.Endpoint, error) {
	if err := h.authorize(ctx, req); err != nil {
		return expose.Endpoint{}, err
	}
	return h.exp.Expose(ctx, req)
}

// seedRoutes are setingress's routes of the 2018 API.
var seedRoutes = []string{"/setrule", "/setingress"}

// fn is setingress's function, but for its Gate.
func (h *handler) fn() function.Function {
	return function.Function{Name: "setingress", API: h.routes(), Events: h.event, Seed: seedRoutes}
}

func (h *handler) routes() http.Handler {
	mux := http.NewServeMux()
	for _, p := range seedRoutes {
		// GET with a query string (2018's first setrule), POST with a JSON
		// or form body.
		mux.HandleFunc("GET "+p, h.seed)
		mux.HandleFunc("POST "+p, h.seed)
	}
	mux.HandleFunc("POST /exposures", h.create)
	mux.HandleFunc("GET /exposures", h.list)
	mux.HandleFunc("DELETE /exposures/{entryPoint}/{protocol}/{port}", h.remove)
	mux.HandleFunc("/", function.NoRoute)
	return mux
}

// exposeRequest is the JSON body of POST /exposures, and what a 2018 setrule
// is read as (setruleSchema).
type exposeRequest struct {
	ServiceName      string             `json:"serviceName"`
	ServiceNamespace string             `json:"serviceNamespace"`
	ServicePort      intstr.IntOrString `json:"servicePort"`
	Protocol         string             `json:"protocol"`
	Owner            string             `json:"owner"`
	EntryPoint       string             `json:"entryPoint"`
	Port             int                `json:"port"`
	LBIP             string             `json:"lbip"`
	Proxy            expose.Proxy       `json:"proxy"`
}

// toRequest builds the exposure request. A request that names no namespace
// is for the namespace install puts a release that names none in: the
// caller's own if it is allowed, else the first of ALLOWED_NAMESPACES.
func (h *handler) toRequest(ctx context.Context, b exposeRequest) expose.Request {
	if b.ServiceNamespace == "" {
		b.ServiceNamespace = auth.DefaultNamespace(ctx, h.allowed)
	}
	return expose.Request{
		Target: expose.Target{Namespace: b.ServiceNamespace, Name: b.ServiceName, Port: b.ServicePort, Protocol: portalloc.Protocol(b.Protocol)},
		Owner:  b.Owner, EntryPoint: b.EntryPoint, Port: b.Port, LBIP: b.LBIP, Proxy: b.Proxy,
	}
}

// setruleSchema reads a 2018 setrule: its fields under the names of each
// 2018 version beside berth's. loadBalancerIp picks the entry point by
// address, loadBalancerPort names the port a getport reserved, and release
// the entry point (what getport answered as release).
var setruleSchema = seed.Schema{
	{Name: "serviceName", Aliases: []string{"servicename"}},
	{Name: "servicePort", Kind: seed.PortRef, Aliases: []string{"serviceport"}},
	{Name: "serviceNamespace"}, {Name: "protocol"}, {Name: "owner"},
	{Name: "entryPoint", Aliases: []string{"release", "specificrelease"}},
	{Name: "port", Kind: seed.Number, Aliases: []string{"loadBalancerPort", "specificport"}},
	{Name: "lbip", Aliases: []string{"loadBalancerIp", "specificlb"}},
	{Name: "proxy", Kind: seed.JSON},
}

// seedAnswer is the 2018 setrule's answer, with berth's fields beside it.
type seedAnswer struct {
	ReleaseName string `json:"releaseName"`
	expose.Endpoint
}

// seed is the 2018 setrule (and berth's older setingress): GET with a query
// string, or POST with a JSON or form body.
func (h *handler) seed(w http.ResponseWriter, r *http.Request) {
	var b exposeRequest
	if err := seed.Decode(r, setruleSchema, &b); err != nil {
		seed.WriteError(w, err)
		return
	}
	req := h.toRequest(r.Context(), b)
	req.Wait = h.confirm
	end, err := h.expose(r.Context(), req)
	if err != nil {
		seed.WriteError(w, err)
		return
	}
	seed.Write(w, stateStatus(end.State), seedAnswer{ReleaseName: end.EntryPoint, Endpoint: end})
}

// stateStatus is the HTTP status of an exposure made: 200 when the data
// plane confirmed it, 202 while it is pending.
func stateStatus(s expose.State) int {
	if s == expose.StateExposed {
		return http.StatusOK
	}
	return http.StatusAccepted
}

// create is POST /exposures[?wait=<duration>]: it answers 200 when the data
// plane confirmed the exposure within the wait (none by default, at most
// CONFIRM_TIMEOUT), 202 while it is pending, 422 when it refused it.
func (h *handler) create(w http.ResponseWriter, r *http.Request) {
	wait, err := h.waitParam(r)
	if err != nil {
		problem.Write(w, err)
		return
	}
	var b exposeRequest
	if err := function.DecodeJSON(r, &b); err != nil {
		problem.Write(w, err)
		return
	}
	req := h.toRequest(r.Context(), b)
	req.Wait = wait
	end, err := h.expose(r.Context(), req)
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, stateStatus(end.State), end)
}

// waitParam reads ?wait=, a Go duration from 0 to CONFIRM_TIMEOUT.
func (h *handler) waitParam(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > h.confirm {
		return 0, fmt.Errorf("%w: wait %q is not a duration from 0 to %s", expose.ErrBadRequest, problem.Clip(v), h.confirm)
	}
	return d, nil
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	items, err := h.exp.List(r.Context(), reservation.Filter{EntryPoint: q.Get("entryPoint"), Owner: q.Get("owner")})
	if err == nil {
		items, err = auth.Visible(r.Context(), h.access, auth.Exposures, items, serviceNamespace)
	}
	if err == nil {
		err = h.exp.Statuses(r.Context(), items)
	}
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}

// serviceNamespace is the namespace an exposure routes to.
func serviceNamespace(e expose.Endpoint) string {
	ns, _, _ := strings.Cut(e.Service, "/")
	return ns
}

// remove is DELETE /exposures/{entryPoint}/{protocol}/{port}[?owner=]: it
// unexposes and releases the port; 204 also when nothing was exposed there. A
// held port is removed only for a caller who may delete exposures in its
// owner's namespace.
func (h *handler) remove(w http.ResponseWriter, r *http.Request) {
	proto, err := portalloc.ParseProtocol(r.PathValue("protocol"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		problem.Write(w, fmt.Errorf("%w: port %q", portalloc.ErrNotInRange, r.PathValue("port")))
		return
	}
	owner := r.URL.Query().Get("owner")
	if owner != "" {
		if err := portalloc.ValidateOwner(owner); err != nil {
			problem.Write(w, err)
			return
		}
	}
	id, k := r.PathValue("entryPoint"), portalloc.Key{Protocol: proto, Port: port}
	held, err := h.ports.Holder(r.Context(), id, k, owner)
	if err != nil {
		problem.Write(w, err)
		return
	}
	if held == "" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	ns, _ := portalloc.OwnerNamespace(held)
	if err := h.access.Check(r.Context(), auth.Attributes{Verb: "delete", Resource: auth.Exposures, Namespace: ns}); err != nil {
		problem.Write(w, err)
		return
	}
	// Unexposed only if the same owner still holds it.
	if err := h.exp.Unexpose(r.Context(), id, k, held); err != nil {
		problem.Write(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// event exposes on port.reserved, replying endpoint.exposed or endpoint.failed,
// and unexposes every port of a release on release.uninstalled.
func (h *handler) event(ctx context.Context, e event.Event) (*event.Event, error) {
	switch e.Type() {
	case events.ReleaseUninstalled:
		var in events.ReleaseUninstalledData
		if err := function.DecodeData(e.Data(), &in); err != nil {
			return function.Reply(e, events.EndpointFailed, err)
		}
		if err := h.access.Check(ctx, auth.Attributes{Verb: "delete", Resource: auth.Exposures, Namespace: in.Release.Namespace}); err != nil {
			return function.Reply(e, events.EndpointFailed, err)
		}
		n, err := h.exp.UnexposeOwner(ctx, in.Release.Owner())
		if err != nil {
			return function.Reply(e, events.EndpointFailed, err)
		}
		function.Logger(ctx).Info("unexposed an uninstalled release", "ports", n)
		return nil, nil
	case events.PortReserved:
	default:
		return nil, fmt.Errorf("%w: %q", errUnexpectedEvent, e.Type())
	}
	var in events.PortReservedData
	if err := function.DecodeData(e.Data(), &in); err != nil {
		return function.Reply(e, events.EndpointFailed, err)
	}
	if in.Expose == nil || in.Release == nil {
		return function.Reply(e, events.EndpointFailed, errNoIntent)
	}
	t, err := expose.TargetFor(*in.Release, *in.Expose)
	if err != nil {
		return function.Reply(e, events.EndpointFailed, err)
	}
	// Confirmed: an exposure not confirmed within CONFIRM_TIMEOUT is taken
	// back, so that endpoint.failed means nothing is routed.
	end, err := h.expose(ctx, expose.Request{Target: t, Owner: in.Owner, EntryPoint: in.EntryPoint, Port: in.Port, Wait: h.confirm, Confirmed: true})
	if err != nil {
		return function.Reply(e, events.EndpointFailed, err)
	}
	out := event.New()
	out.SetType(events.EndpointExposed)
	out.SetSubject(end.Owner)
	out.SetExtension(events.ExtensionCause, e.ID())
	err = out.SetData(cloudevents.ApplicationJSON, events.EndpointExposedData{
		IP: end.IP, Port: end.Port, Protocol: string(end.Protocol), EntryPoint: end.EntryPoint,
		Backend: end.Backend, Owner: end.Owner, Service: end.Service, Release: in.Release,
	})
	return &out, err
}
