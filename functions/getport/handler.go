package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/seed"
)

// errUnexpectedEvent is an event type getport does not consume.
var errUnexpectedEvent = problem.New(problem.ErrInvalid, "getport does not consume this event type")

// errNoNamespace is a request that names no namespace from a caller that has
// no namespace of its own.
var errNoNamespace = problem.New(problem.ErrInvalid, "name the namespace the port is for (owner <namespace>/<name>, or namespace)")

type handler struct {
	svc     *reservation.Service
	access  auth.Access
	allowed []string
}

func newHandler(cfg Config, core kubernetes.Interface, gw *gatewayapi.Client, ac auth.Access) *handler {
	return &handler{svc: cfg.Settings.New(core, gw), access: ac, allowed: cfg.AllowedNamespaces}
}

// reserveFor reserves a port for req.Owner, if the caller may create ports in the
// owner's namespace.
func (h *handler) reserveFor(ctx context.Context, req reservation.Request) (reservation.Reservation, error) {
	ns, err := portalloc.OwnerNamespace(req.Owner)
	if err != nil {
		return reservation.Reservation{}, err
	}
	if err := h.access.Check(ctx, auth.Attributes{Verb: "create", Resource: auth.Ports, Namespace: ns, Name: req.Owner}); err != nil {
		return reservation.Reservation{}, err
	}
	return h.svc.Reserve(ctx, req)
}

// ownerNamespaceOf is the namespace of a reservation's owner ("" for an owner
// without one).
func ownerNamespaceOf(r reservation.Reservation) string {
	ns, _ := portalloc.OwnerNamespace(r.Owner)
	return ns
}

// seedRoutes are getport's routes of the 2018 API.
var seedRoutes = []string{"/getport"}

// fn is getport's function, but for its Gate.
func (h *handler) fn() function.Function {
	return function.Function{Name: "getport", API: h.routes(), Events: h.event, Seed: seedRoutes}
}

func (h *handler) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /getport", h.getport)
	mux.HandleFunc("POST /ports", h.reserve)
	mux.HandleFunc("GET /ports", h.list)
	mux.HandleFunc("DELETE /ports/{entryPoint}/{protocol}/{port}", h.release)
	mux.HandleFunc("POST /sweep", h.sweep)
	mux.HandleFunc("/", function.NoRoute)
	return mux
}

// seedAnswer is the 2018 getport's answer, with berth's fields beside it.
type seedAnswer struct {
	PublicIP string `json:"public_ip"`
	Release  string `json:"release"`
	reservation.Reservation
}

// getportSchema reads a 2018 GET /getport: lbip from the query (as 2018
// documented it) or a JSON body (as its code read it).
var getportSchema = seed.Schema{
	{Name: "lbip"}, {Name: "protocol"}, {Name: "owner"}, {Name: "namespace"}, {Name: "entryPoint"},
}

type getportRequest struct {
	LBIP       string `json:"lbip"`
	Protocol   string `json:"protocol"`
	Owner      string `json:"owner"`
	Namespace  string `json:"namespace"`
	EntryPoint string `json:"entryPoint"`
}

// getport is the 2018 GET /getport?lbip=[&protocol=&owner=&namespace=&entryPoint=].
// Without an owner the caller gets a fresh reservation (AnonymousOwner) in
// namespace, by default where install puts releases that name none, which
// lapses unless it is bound; the next setrule in that namespace may name it.
func (h *handler) getport(w http.ResponseWriter, r *http.Request) {
	var q getportRequest
	if err := seed.Decode(r, getportSchema, &q); err != nil {
		seed.WriteError(w, err)
		return
	}
	owner := q.Owner
	if owner == "" {
		ns := q.Namespace
		if ns == "" {
			ns = auth.DefaultNamespace(r.Context(), h.allowed)
		}
		if ns == "" {
			seed.WriteError(w, errNoNamespace)
			return
		}
		owner = reservation.AnonymousOwner(ns)
	}
	res, err := h.reserveFor(r.Context(), reservation.Request{
		Owner: owner, Protocol: portalloc.Protocol(q.Protocol), LBIP: q.LBIP, EntryPoint: q.EntryPoint,
	})
	if err != nil {
		seed.WriteError(w, err)
		return
	}
	seed.Write(w, http.StatusOK, seedAnswer{PublicIP: res.IP, Release: res.EntryPoint, Reservation: res})
}

// reserveRequest is the body of POST /ports.
type reserveRequest struct {
	Owner      string `json:"owner"`
	Protocol   string `json:"protocol"`
	LBIP       string `json:"lbip"`
	EntryPoint string `json:"entryPoint"`
}

func (h *handler) reserve(w http.ResponseWriter, r *http.Request) {
	var req reserveRequest
	if err := function.DecodeJSON(r, &req); err != nil {
		problem.Write(w, err)
		return
	}
	res, err := h.reserveFor(r.Context(), reservation.Request{
		Owner: req.Owner, Protocol: portalloc.Protocol(req.Protocol), LBIP: req.LBIP, EntryPoint: req.EntryPoint,
	})
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, res)
}

// capacityAttributes are what reading every entry point's fill needs: a
// cluster-wide right (operators, not tenants).
var capacityAttributes = auth.Attributes{Verb: "list", Resource: auth.Ports}

// list is GET /ports[?entryPoint=&owner=] (the reservations the caller may
// see), or GET /ports?summary=true (each entry point's ports reserved,
// bound, in use and free per protocol, for a caller who may list ports in
// every namespace).
func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if summary, err := function.QueryBool(r, "summary"); err != nil {
		problem.Write(w, err)
		return
	} else if summary {
		if err := h.access.Check(r.Context(), capacityAttributes); err != nil {
			problem.Write(w, err)
			return
		}
		items, err := h.svc.Capacities(r.Context())
		if err != nil {
			problem.Write(w, err)
			return
		}
		function.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
		return
	}
	items, err := h.svc.List(r.Context(), reservation.Filter{EntryPoint: q.Get("entryPoint"), Owner: q.Get("owner")})
	if err == nil {
		items, err = auth.Visible(r.Context(), h.access, auth.Ports, items, ownerNamespaceOf)
	}
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}

// release is DELETE /ports/{entryPoint}/{protocol}/{port}[?owner=]: idempotent,
// 204 when the port is free. A held port is released only for a caller who may
// delete ports in its owner's namespace.
func (h *handler) release(w http.ResponseWriter, r *http.Request) {
	proto, err := portalloc.ParseProtocol(r.PathValue("protocol"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil || port < 1 || port > 65535 {
		problem.Write(w, fmt.Errorf("%w: port %q", portalloc.ErrNotInRange, problem.Clip(r.PathValue("port"))))
		return
	}
	k, id := portalloc.Key{Protocol: proto, Port: port}, r.PathValue("entryPoint")
	held, err := h.svc.Holder(r.Context(), id, k, r.URL.Query().Get("owner"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	if held != "" {
		ns, _ := portalloc.OwnerNamespace(held)
		if err := h.access.Check(r.Context(), auth.Attributes{Verb: "delete", Resource: auth.Ports, Namespace: ns}); err != nil {
			problem.Write(w, err)
			return
		}
		// Released only if the same owner still holds it.
		if _, err := h.svc.Release(r.Context(), id, k, held); err != nil {
			problem.Write(w, err)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// sweepAttributes are what running the repair sweep needs: a cluster-wide right.
var sweepAttributes = auth.Attributes{Verb: "create", Resource: auth.Ports, Subresource: "sweep"}

func (h *handler) sweep(w http.ResponseWriter, r *http.Request) {
	if err := h.access.Check(r.Context(), sweepAttributes); err != nil {
		problem.Write(w, err)
		return
	}
	res, err := h.svc.Sweep(r.Context())
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, res)
}

// event consumes port.requested and release.installed (with an expose intent),
// replying port.reserved or port.failed; release.uninstalled, freeing the
// release's unbound reservations (setingress unexposes bound ones); and
// sweep.requested or a PingSource's ping, running a sweep.
func (h *handler) event(ctx context.Context, e event.Event) (*event.Event, error) {
	var data events.PortRequestedData
	switch e.Type() {
	case events.SweepRequested, events.PingSourcePing:
		if err := h.access.Check(ctx, sweepAttributes); err != nil {
			return nil, err
		}
		res, err := h.svc.Sweep(ctx)
		if err == nil {
			function.Logger(ctx).Info("swept", "expired", res.Expired, "marked", res.Marked, "freed", res.Freed)
		}
		return nil, err
	case events.ReleaseUninstalled:
		var in events.ReleaseUninstalledData
		if err := function.DecodeData(e.Data(), &in); err != nil {
			return function.Reply(e, events.PortFailed, err)
		}
		if err := h.access.Check(ctx, auth.Attributes{Verb: "delete", Resource: auth.Ports, Namespace: in.Release.Namespace}); err != nil {
			return function.Reply(e, events.PortFailed, err)
		}
		n, err := h.svc.ReleaseUnbound(ctx, in.Release.Owner())
		if err != nil {
			return function.Reply(e, events.PortFailed, err)
		}
		function.Logger(ctx).Info("released unbound ports of an uninstalled release", "count", n)
		return nil, nil
	case events.PortRequested:
		if err := function.DecodeData(e.Data(), &data); err != nil {
			return function.Reply(e, events.PortFailed, err)
		}
		if data.Owner == "" {
			ns := auth.Tenant(e)
			if ns == "" {
				return function.Reply(e, events.PortFailed, errNoNamespace)
			}
			data.Owner = ns + "/event-" + digest(e.Source()+"\x00"+e.ID())
		}
	case events.ReleaseInstalled:
		var in events.ReleaseInstalledData
		if err := function.DecodeData(e.Data(), &in); err != nil {
			return function.Reply(e, events.PortFailed, err)
		}
		if in.Expose == nil {
			return nil, nil // nothing to expose
		}
		data = events.PortRequestedData{Owner: in.Release.Owner(), Protocol: in.Expose.Protocol, LBIP: in.Expose.LBIP,
			Expose: in.Expose, Release: &in.Release}
	default:
		return nil, fmt.Errorf("%w: %q", errUnexpectedEvent, e.Type())
	}
	res, err := h.reserveFor(ctx, reservation.Request{
		Owner: data.Owner, Protocol: portalloc.Protocol(data.Protocol), LBIP: data.LBIP, EntryPoint: data.EntryPoint,
	})
	if err != nil {
		return function.Reply(e, events.PortFailed, err)
	}
	out := event.New()
	out.SetType(events.PortReserved)
	out.SetSubject(res.Owner)
	out.SetExtension(events.ExtensionCause, e.ID())
	err = out.SetData(cloudevents.ApplicationJSON, events.PortReservedData{
		EntryPoint: res.EntryPoint, IP: res.IP, Port: res.Port, Protocol: string(res.Protocol), Owner: res.Owner,
		Expose: data.Expose, Release: data.Release,
	})
	return &out, err
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:12])
}
