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
	"github.com/google/uuid"
	"k8s.io/client-go/kubernetes"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/reservation"
)

// errUnexpectedEvent is an event type getport does not consume.
var errUnexpectedEvent = problem.New(problem.ErrInvalid, "getport does not consume this event type")

type handler struct {
	svc *reservation.Service
}

func newHandler(cfg Config, core kubernetes.Interface, gw gatewayclient.Interface) *handler {
	return &handler{svc: cfg.Settings.New(core, gw)}
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

// getport is the seed-compatible GET /getport?lbip=&protocol=&owner=. Without an
// owner the caller gets a fresh reservation that lapses unless it is bound.
func (h *handler) getport(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	owner := q.Get("owner")
	if !q.Has("owner") {
		owner = "anonymous/" + uuid.NewString()
	}
	res, err := h.svc.Reserve(r.Context(), reservation.Request{
		Owner: owner, Protocol: portalloc.Protocol(q.Get("protocol")), LBIP: q.Get("lbip"), EntryPoint: q.Get("entryPoint"),
	})
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, seedAnswer{PublicIP: res.IP, Release: res.EntryPoint, Reservation: res})
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
	res, err := h.svc.Reserve(r.Context(), reservation.Request{
		Owner: req.Owner, Protocol: portalloc.Protocol(req.Protocol), LBIP: req.LBIP, EntryPoint: req.EntryPoint,
	})
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, res)
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	items, err := h.svc.List(r.Context(), reservation.Filter{EntryPoint: q.Get("entryPoint"), Owner: q.Get("owner")})
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}

// release is DELETE /ports/{entryPoint}/{protocol}/{port}[?owner=]: idempotent,
// 204 whether or not the port was held.
func (h *handler) release(w http.ResponseWriter, r *http.Request) {
	proto, err := portalloc.ParseProtocol(r.PathValue("protocol"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	port, err := strconv.Atoi(r.PathValue("port"))
	if err != nil {
		problem.Write(w, fmt.Errorf("%w: port %q", portalloc.ErrNotInRange, r.PathValue("port")))
		return
	}
	if _, err := h.svc.Release(r.Context(), r.PathValue("entryPoint"), portalloc.Key{Protocol: proto, Port: port}, r.URL.Query().Get("owner")); err != nil {
		problem.Write(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handler) sweep(w http.ResponseWriter, r *http.Request) {
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
			data.Owner = "event/" + digest(e.Source()+"\x00"+e.ID())
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
	res, err := h.svc.Reserve(ctx, reservation.Request{
		Owner: data.Owner, Protocol: portalloc.Protocol(data.Protocol), LBIP: data.LBIP, EntryPoint: data.EntryPoint,
	})
	if err != nil {
		return function.Reply(e, events.PortFailed, err)
	}
	out := event.New()
	out.SetType(events.PortReserved)
	out.SetSubject(res.Owner)
	out.SetExtension("berthcause", e.ID())
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
