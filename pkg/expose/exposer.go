// Package expose makes a Service port reachable at a reserved port of a
// shared-IP entry point, through one of three backends: the Gateway API
// (listeners and TCPRoute/UDPRoute), ingress-nginx (tcp/udp-services ConfigMaps)
// or shared-IP LoadBalancer Services. It records the exposure in the port ledger
// (bound) and on the target Service (the berth.dev/endpoint annotation).
package expose

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// Ports reserves, binds and releases ports in the ledger.
type Ports interface {
	Choose(ctx context.Context, req reservation.Request) (entrypoint.EntryPoint, error)
	Reserve(ctx context.Context, req reservation.Request) (reservation.Reservation, error)
	EntryPoint(ctx context.Context, id string) (entrypoint.EntryPoint, error)
	ListEntryPoints(ctx context.Context) ([]entrypoint.EntryPoint, error)
	Bind(ctx context.Context, id string, k portalloc.Key, owner, service string) (reservation.Reservation, portalloc.Entry, error)
	Unbind(ctx context.Context, id string, k portalloc.Key, owner, service string, prev portalloc.Entry) error
	Release(ctx context.Context, id string, k portalloc.Key, owner string) (bool, error)
	List(ctx context.Context, f reservation.Filter) ([]reservation.Reservation, error)
}

// Exposer exposes and unexposes Service ports.
type Exposer struct {
	Core     kubernetes.Interface
	Ports    Ports
	Backends map[string]Backend
	Backoff  wait.Backoff
}

// Request asks for a Service port to be exposed.
type Request struct {
	Target Target
	// Owner holds the port; by default <namespace>/<service>:<port>, one owner per
	// Service port, so that each port of a Service gets its own public port.
	Owner string
	// EntryPoint and Port name a reservation already made (by getport); without
	// them a port is reserved here, on the entry point with address LBIP if set.
	// Port without EntryPoint or Owner names a reservation GET /getport made
	// up in the target's namespace (reservation.Anonymous), on any entry
	// point (at LBIP if set): the 2018 two-step flow.
	EntryPoint string
	Port       int
	LBIP       string
	// Proxy asks ingress-nginx for the PROXY protocol (TCP only).
	Proxy Proxy
	// Wait is how long to wait for the data plane to confirm or refuse the
	// exposure; 0 reads its status once.
	Wait time.Duration
	// Confirmed asks for a confirmed exposure: one still pending after Wait
	// is taken back, like a refused one, and answered ErrUnconfirmed.
	Confirmed bool
}

// Endpoint is an exposed port.
type Endpoint struct {
	IP         string             `json:"ip"`
	Port       int                `json:"port"`
	Protocol   portalloc.Protocol `json:"protocol"`
	EntryPoint string             `json:"entryPoint"`
	Backend    string             `json:"backend"`
	Owner      string             `json:"owner"`
	// Service is namespace/name of the target Service.
	Service string `json:"service"`
	// Status is what the data plane reports of it.
	Status
}

// String is the endpoint as the berth.dev/endpoint annotation writes it.
func (e Endpoint) String() string {
	return net.JoinHostPort(e.IP, strconv.Itoa(e.Port)) + "/" + string(e.Protocol)
}

func (r *Request) validate() error {
	proto, err := portalloc.ParseProtocol(string(r.Target.Protocol))
	if err != nil {
		return err
	}
	r.Target.Protocol = proto
	if err := r.Target.Validate(); err != nil {
		return err
	}
	if r.Owner != "" {
		if err := portalloc.ValidateOwner(r.Owner); err != nil {
			return err
		}
	}
	if r.Port != 0 && (r.Port < 1 || r.Port > 65535 || r.EntryPoint == "" && r.Owner != "") {
		return fmt.Errorf("%w: a reserved port needs its entryPoint and must be 1-65535", ErrBadRequest)
	}
	if r.EntryPoint != "" {
		if _, _, err := entrypoint.ParseID(r.EntryPoint); err != nil {
			return err
		}
	}
	if proto == portalloc.UDP && (r.Proxy.Decode || r.Proxy.Encode) {
		return fmt.Errorf("%w: the PROXY protocol applies to TCP only", ErrBadRequest)
	}
	return nil
}

// Expose validates the request and the target, takes (or verifies) the port,
// binds it, writes the routing objects and annotates the target. Each step is
// idempotent, so a retry finishes what a failure left half done.
func (e *Exposer) Expose(ctx context.Context, req Request) (end Endpoint, err error) {
	ctx, done := observeExpose(ctx, req)
	defer func() { done(end, err) }()
	if err := req.validate(); err != nil {
		return Endpoint{}, err
	}
	t, err := resolve(ctx, e.Core, req.Target)
	if err != nil {
		return Endpoint{}, err
	}
	if req.Owner == "" && req.Port != 0 {
		if err := e.adopt(ctx, &req, t.Namespace); err != nil {
			return Endpoint{}, err
		}
	}
	if req.Owner == "" {
		req.Owner = DefaultOwner(t.Namespace, t.Name, t.ServicePort.Port)
	}
	id, key := req.EntryPoint, portalloc.Key{Protocol: req.Target.Protocol, Port: req.Port}
	// The entry point first, and what it needs of the target, so that a
	// request refused for it reserves nothing.
	var ep entrypoint.EntryPoint
	rreq := reservation.Request{Owner: req.Owner, Protocol: key.Protocol, LBIP: req.LBIP, EntryPoint: req.EntryPoint}
	if req.Port == 0 {
		ep, err = e.Ports.Choose(ctx, rreq)
	} else {
		ep, err = e.Ports.EntryPoint(ctx, id)
		if err == nil && req.LBIP != "" && ep.Address != req.LBIP {
			err = fmt.Errorf("%w: %s is not the address of entry point %s (%s)", ErrBadRequest, problem.Clip(req.LBIP), id, ep.Address)
		}
	}
	if err != nil {
		return Endpoint{}, err
	}
	backend, ok := e.Backends[ep.Backend]
	if !ok {
		return Endpoint{}, fmt.Errorf("%w: %q on %s", ErrNoBackend, ep.Backend, ep.ID())
	}
	if a, ok := backend.(Admitter); ok {
		if err := a.Admit(t.Service); err != nil {
			return Endpoint{}, err
		}
	}
	var created bool // the port was reserved by this call
	if req.Port == 0 {
		rreq.EntryPoint = ep.ID()
		res, err := e.Ports.Reserve(ctx, rreq)
		if err != nil {
			return Endpoint{}, err
		}
		id, key.Port, created = res.EntryPoint, res.Port, res.Created
	}
	_, prev, err := e.Ports.Bind(ctx, id, key, req.Owner, t.NamespacedName())
	if err != nil {
		return Endpoint{}, err
	}
	if created {
		prev = portalloc.Entry{} // putting the ledger back frees the port
	}
	x := Exposure{
		Key: key, Owner: req.Owner, IP: ep.Address, Namespace: t.Namespace, Service: t.Name,
		Port: t.ServicePort.Port, TargetPort: t.ServicePort.TargetPort, Selector: t.Service.Spec.Selector, Proxy: req.Proxy,
	}
	since, err := route(ctx, backend, ep, x)
	if err != nil {
		// Routed elsewhere by something not berth's, or no room for it. A
		// backend answers these having written nothing, so only the ledger is
		// put back: a port reserved by this call is free again, a port the
		// owner held before is its reservation again. (A port bound before
		// this call, a retry, is left as it was.)
		if wroteNothing(err) && prev.State != portalloc.Bound {
			if uerr := e.Ports.Unbind(ctx, id, key, req.Owner, t.NamespacedName(), prev); uerr != nil {
				return Endpoint{}, fmt.Errorf("%w (and putting the ledger back failed: %v)", err, uerr)
			}
		}
		return Endpoint{}, err
	}
	end = Endpoint{IP: ep.Address, Port: key.Port, Protocol: key.Protocol, EntryPoint: id, Backend: ep.Backend, Owner: req.Owner, Service: t.NamespacedName()}
	if err := e.annotate(ctx, t.Namespace, t.Name, end.String(), true); err != nil {
		return Endpoint{}, err
	}
	if end.Status, err = confirm(ctx, backend, ep, x, since, req.Wait); err != nil {
		return Endpoint{}, err
	}
	var class error
	switch {
	case end.State == StateFailed:
		class = ErrRefused
	case end.State == StatePending && req.Confirmed:
		class = ErrUnconfirmed
	default:
		return end, nil
	}
	if prev.State == portalloc.Bound {
		// Exposed before this call (a retry): not this call's to take back.
		return Endpoint{}, fmt.Errorf("%w: %s; it was exposed before this request and is left as it is", class, end.Status)
	}
	// Take back what this call wrote, so that no port is held by a dead
	// route. A refused port is held a while by nobody's reservation
	// (RefusedOwner), so that it is not handed straight to the next caller; a
	// port merely unconfirmed is the owner's reservation again, if it was.
	back := prev
	if end.State == StateFailed {
		now := time.Now()
		back = portalloc.Entry{Owner: RefusedOwner, State: portalloc.Reserved, Since: now.Unix(), Expires: now.Add(RefusedHold).Unix()}
	}
	if err := e.takeBack(ctx, backend, ep, x, t, back); err != nil {
		return Endpoint{}, fmt.Errorf("%w: %s (and taking the exposure back failed: %v)", class, end.Status, err)
	}
	return Endpoint{}, fmt.Errorf("%w: %s; berth removed what it wrote from %s port %d", class, end.Status, key.Protocol, key.Port)
}

// wroteNothing reports whether a backend's error says it wrote nothing.
func wroteNothing(err error) bool {
	for _, e := range []error{ErrTaken, ErrGatewayFull, ErrSetsNotAdmitted, ErrNoBackend} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// RefusedOwner holds, for RefusedHold, a port the data plane refused, so
// that the next reservation does not get it at once. It is no namespace's
// owner, so it counts against no tenant's quota; the port is free again when
// the reservation lapses.
const (
	RefusedOwner = "berth.dev/refused"
	RefusedHold  = 15 * time.Minute
)

// takeBack removes x's routing objects and the target's endpoint, and puts
// its ledger entry back to back, even if ctx ends meanwhile.
func (e *Exposer) takeBack(ctx context.Context, b Backend, ep entrypoint.EntryPoint, x Exposure, t resolved, back portalloc.Entry) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := b.Unexpose(ctx, ep, x); err != nil {
		return err
	}
	end := Endpoint{IP: ep.Address, Port: x.Key.Port, Protocol: x.Key.Protocol}
	if err := e.annotate(ctx, t.Namespace, t.Name, end.String(), false); err != nil {
		return err
	}
	return e.Ports.Unbind(ctx, ep.ID(), x.Key, x.Owner, t.NamespacedName(), back)
}

// confirm reads what the data plane reports of x until it is no longer
// pending or wait has passed: at 50 ms, then twice as long each time, up to a
// second between reads. A read that fails is tried again until then.
func confirm(ctx context.Context, b Backend, ep entrypoint.EntryPoint, x Exposure, since int64, wait time.Duration) (Status, error) {
	ctx, span := telemetry.Tracer().Start(ctx, "confirm "+ep.Backend)
	deadline := time.Now().Add(wait)
	for delay := 50 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		st, err := b.Status(ctx, ep, x, since)
		if err == nil && st.State != StatePending || time.Until(deadline) <= 0 {
			span.SetAttributes(telemetry.AttrExposureState.String(string(st.State)))
			telemetry.End(span, err)
			return st, err
		}
		t := time.NewTimer(min(delay, time.Until(deadline)))
		select {
		case <-ctx.Done():
			t.Stop()
			telemetry.End(span, ctx.Err())
			return st, ctx.Err()
		case <-t.C:
		}
	}
}

// adopt makes a reservation GET /getport made up (reservation.Anonymous) in
// the target's namespace the request's, when the request names its port and
// no owner: so a 2018 client's getport, then setrule naming that port, works
// for anyone who may expose in that namespace, until the reservation lapses.
// Without an entry point, the port is looked for on every entry point (at
// LBIP if set) and must be found on exactly one. Bind then checks, at the
// ledger's resourceVersion, that it is still reserved or bound to this
// Service.
func (e *Exposer) adopt(ctx context.Context, req *Request, ns string) error {
	held, err := e.Ports.List(ctx, reservation.Filter{EntryPoint: req.EntryPoint})
	if err != nil {
		return err
	}
	var mine []reservation.Reservation
	for _, r := range held {
		if r.Port != req.Port || r.Protocol != req.Target.Protocol || req.LBIP != "" && r.IP != req.LBIP {
			continue
		}
		if ons, _ := portalloc.OwnerNamespace(r.Owner); ons == ns && reservation.Anonymous(r.Owner) {
			mine = append(mine, r)
		}
	}
	switch {
	case len(mine) == 1:
		req.Owner, req.EntryPoint = mine[0].Owner, mine[0].EntryPoint
	case len(mine) > 1:
		return fmt.Errorf("%w: port %d is reserved on %d entry points; name the entry point (release) or its address (loadBalancerIp)", ErrBadRequest, req.Port, len(mine))
	case req.EntryPoint != "":
		// Bind decides, for the default owner.
	default:
		// Also when another namespace holds the port: that is not told.
		return fmt.Errorf("%w: %s port %d in %s (reserved with getport, and not lapsed)", portalloc.ErrNotReserved, req.Target.Protocol, req.Port, ns)
	}
	return nil
}

// DefaultOwner is the owner of an exposure that names none: one per Service port.
func DefaultOwner(namespace, service string, port int32) string {
	return namespace + "/" + service + ":" + strconv.Itoa(int(port))
}

// annotate adds or removes one endpoint in the target's berth.dev/endpoint
// annotation (a comma-separated set).
func (e *Exposer) annotate(ctx context.Context, ns, name, endpoint string, add bool) error {
	svcs := e.Core.CoreV1().Services(ns)
	err := casUpdate(ctx, "service/"+ns+"/"+name, e.Backoff,
		func(ctx context.Context) (*corev1.Service, error) { return svcs.Get(ctx, name, metav1.GetOptions{}) },
		func(s *corev1.Service) (bool, error) {
			var set []string
			if v := s.Annotations[AnnotationEndpoint]; v != "" {
				set = strings.Split(v, ",")
			}
			has := slices.Contains(set, endpoint)
			switch {
			case add && !has:
				set = append(set, endpoint)
				slices.Sort(set)
			case !add && has:
				set = slices.DeleteFunc(set, func(v string) bool { return v == endpoint })
			default:
				return false, nil
			}
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			if len(set) == 0 {
				delete(s.Annotations, AnnotationEndpoint)
			} else {
				s.Annotations[AnnotationEndpoint] = strings.Join(set, ",")
			}
			return true, nil
		},
		func(ctx context.Context, s *corev1.Service) error {
			_, err := svcs.Update(ctx, s, metav1.UpdateOptions{})
			return err
		},
		nil)
	if err != nil && !(!add && isNotFound(err)) {
		return fmt.Errorf("annotate Service %s/%s: %w", ns, name, err)
	}
	return nil
}

// Unexpose removes the routing objects of port k on entry point id, the
// target's annotation, and the ledger entry. Unexposing a free port succeeds.
// With owner set, a port held by someone else is refused.
func (e *Exposer) Unexpose(ctx context.Context, id string, k portalloc.Key, owner string) error {
	ep, err := e.Ports.EntryPoint(ctx, id)
	if err != nil {
		return err
	}
	held, err := e.Ports.List(ctx, reservation.Filter{EntryPoint: id})
	if err != nil {
		return err
	}
	i := slices.IndexFunc(held, func(r reservation.Reservation) bool { return r.Port == k.Port && r.Protocol == k.Protocol })
	if i < 0 {
		return nil
	}
	r := held[i]
	if owner != "" && r.Owner != owner {
		return fmt.Errorf("%w: %s on %s", portalloc.ErrHeld, k, id)
	}
	if r.State == portalloc.Bound {
		ns, name, _ := strings.Cut(r.Service, "/")
		if backend, ok := e.Backends[ep.Backend]; ok {
			if err := backend.Unexpose(ctx, ep, Exposure{Key: k, Owner: r.Owner, IP: ep.Address, Namespace: ns, Service: name}); err != nil {
				return err
			}
		}
		end := Endpoint{IP: ep.Address, Port: k.Port, Protocol: k.Protocol}
		if err := e.annotate(ctx, ns, name, end.String(), false); err != nil {
			return err
		}
	}
	_, err = e.Ports.Release(ctx, id, k, r.Owner)
	return err
}

// UnexposeOwner unexposes every port owner holds, on every entry point.
func (e *Exposer) UnexposeOwner(ctx context.Context, owner string) (int, error) {
	held, err := e.Ports.List(ctx, reservation.Filter{Owner: owner})
	if err != nil {
		return 0, err
	}
	for _, r := range held {
		if err := e.Unexpose(ctx, r.EntryPoint, portalloc.Key{Protocol: r.Protocol, Port: r.Port}, owner); err != nil {
			return 0, err
		}
	}
	return len(held), nil
}

// Statuses reads what the data plane reports of each endpoint, at most 8 at
// a time, counting answers observed at any generation: a listener's status
// outlives other tenants' changes to the same Gateway.
func (e *Exposer) Statuses(ctx context.Context, ends []Endpoint) error {
	if len(ends) == 0 {
		return nil
	}
	// The entry points listed once; one the list missed (made since the
	// cache was filled) is read on its own.
	all, err := e.Ports.ListEntryPoints(ctx)
	if err != nil {
		return err
	}
	eps := map[string]entrypoint.EntryPoint{}
	for _, ep := range all {
		eps[ep.ID()] = ep
	}
	for _, end := range ends {
		if _, ok := eps[end.EntryPoint]; ok {
			continue
		}
		ep, err := e.Ports.EntryPoint(ctx, end.EntryPoint)
		if err != nil {
			return err
		}
		eps[end.EntryPoint] = ep
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range ends {
		end := &ends[i]
		ep := eps[end.EntryPoint]
		backend, ok := e.Backends[ep.Backend]
		if !ok {
			end.Status = failed("entry point "+ep.ID(), "NoBackend", "berth has no backend "+ep.Backend)
			continue
		}
		ns, name, _ := strings.Cut(end.Service, "/")
		x := Exposure{Key: portalloc.Key{Protocol: end.Protocol, Port: end.Port}, Owner: end.Owner, IP: ep.Address, Namespace: ns, Service: name}
		g.Go(func() error {
			st, err := backend.Status(ctx, ep, x, 0)
			if err != nil {
				// One unreadable status is that item's, not the list's.
				st = pending("status", "StatusUnreadable", fmt.Sprintf("berth could not read the data plane's status (HTTP %d)", problem.Status(err)))
			}
			end.Status = st
			return nil
		})
	}
	return g.Wait()
}

// List returns the bound ports, as endpoints, without their status.
func (e *Exposer) List(ctx context.Context, f reservation.Filter) ([]Endpoint, error) {
	held, err := e.Ports.List(ctx, f)
	if err != nil {
		return nil, err
	}
	out := []Endpoint{}
	for _, r := range held {
		if r.State != portalloc.Bound {
			continue
		}
		out = append(out, Endpoint{IP: r.IP, Port: r.Port, Protocol: r.Protocol, EntryPoint: r.EntryPoint,
			Backend: r.Backend, Owner: r.Owner, Service: r.Service})
	}
	return out, nil
}
