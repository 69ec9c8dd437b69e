package expose

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
)

// GatewayBackend exposes a port as a listener in berth's ListenerSet of that
// port, attached to the entry point's Gateway (or, where the Gateway is
// annotated berth.dev/listeners: gateway, on the Gateway itself), and a
// TCPRoute or UDPRoute in the target's namespace bound to that listener by
// sectionName. The listener admits routes from the target's namespace only.
type GatewayBackend struct {
	Client  *gatewayapi.Client
	Backoff wait.Backoff

	// Writes to one Gateway or ListenerSet are group-committed.
	gateways groups[*gatewayv1.Gateway]
	sets     groups[*setState]
}

// parent is the object that carries an exposure's listener.
type parent struct {
	kind string // Gateway or ListenerSet
	name string
	// gen is the object's generation when berth wrote or found the
	// listener there: the data plane's answer about it counts from it.
	gen int64
}

func (g *GatewayBackend) listener(x Exposure) (gatewayv1.SectionName, gatewayv1.ProtocolType, *gatewayv1.AllowedRoutes) {
	proto, kind := gatewayv1.TCPProtocolType, gatewayv1.Kind("TCPRoute")
	if x.Key.Protocol == portalloc.UDP {
		proto, kind = gatewayv1.UDPProtocolType, "UDPRoute"
	}
	from := gatewayv1.NamespacesFromSelector
	return gatewayv1.SectionName(portName(x.Key)), proto, &gatewayv1.AllowedRoutes{
		Namespaces: &gatewayv1.RouteNamespaces{From: &from, Selector: &metav1.LabelSelector{
			MatchLabels: map[string]string{labelNamespaceName: x.Namespace},
		}},
		Kinds: []gatewayv1.RouteGroupKind{{Kind: kind}},
	}
}

// Expose adds the listener, then the route. It returns the generation of the
// Gateway or ListenerSet that has the listener, from which its status counts.
func (g *GatewayBackend) Expose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) (int64, error) {
	p, err := g.addListener(ctx, ep, x)
	if err != nil {
		return 0, fmt.Errorf("gateway listener %s on %s: %w", portName(x.Key), ep.ID(), err)
	}
	if err := g.applyRoute(ctx, ep, x, p); err != nil {
		return 0, fmt.Errorf("route for %s on %s: %w", portName(x.Key), ep.ID(), err)
	}
	return p.gen, nil
}

// addListener finds the exposure's listener, or adds it where the entry point
// says berth's listeners go: the ListenerSet of its port (the default), or the
// Gateway itself. Either write is group-committed with the other exposures'
// on the same object. It never adds one twice: an exposure has one place.
func (g *GatewayBackend) addListener(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) (parent, error) {
	name, proto, allowed := g.listener(x)
	port := gatewayv1.PortNumber(x.Key.Port)
	switch ep.Listeners {
	case entrypoint.ListenersOnGateway:
		// Placed in a ListenerSet before the Gateway was annotated: it stays
		// there, rather than a second listener on the port.
		if s, err := g.Client.ListenerSets(ep.Namespace).Get(ctx, setName(ep, x.Key), metav1.GetOptions{}); err == nil &&
			s.Labels[kube.LabelManagedBy] == kube.ManagedBy && slices.ContainsFunc(s.Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return l.Name == name }) {
			gen, err := g.sets.do(ctx, g.setObject(ep, s.Name), func(st *setState) (bool, error) {
				_, changed := claimEntry(st.set.Spec.Listeners, name, port, proto, allowed)
				return changed, nil
			})
			return parent{"ListenerSet", s.Name, gen}, err
		} else if err != nil && !apierrors.IsNotFound(err) {
			return parent{}, fmt.Errorf("read ListenerSet of %s: %w", ep.ID(), err)
		}
		gen, err := g.gateways.do(ctx, g.gatewayObject(ep), func(gw *gatewayv1.Gateway) (bool, error) {
			for i, l := range gw.Spec.Listeners {
				if l.Name == name {
					// A listener of this name is this exposure's: whatever
					// it admitted before (a former owner's namespace), it
					// admits this one's now.
					if l.Port != port || l.Protocol != proto || !sameAdmission(l.AllowedRoutes, allowed) {
						gw.Spec.Listeners[i] = gatewayv1.Listener{Name: name, Port: port, Protocol: proto, AllowedRoutes: allowed}
						return true, nil
					}
					return false, nil
				}
				if l.Port == port && sameProtocol(l.Protocol, proto) {
					return false, fmt.Errorf("%w: listener %s uses port %d", ErrTaken, l.Name, port)
				}
			}
			if len(gw.Spec.Listeners) >= maxGatewayListeners {
				return false, fmt.Errorf("%w: Gateway %s has %d listeners", ErrGatewayFull, ep.ID(), len(gw.Spec.Listeners))
			}
			gw.Spec.Listeners = append(gw.Spec.Listeners, gatewayv1.Listener{Name: name, Port: port, Protocol: proto, AllowedRoutes: allowed})
			return true, nil
		})
		return parent{"Gateway", ep.Name, gen}, err
	case entrypoint.ListenersOnSets:
	default:
		return parent{}, fmt.Errorf("%w: %s=%q on %s (want %s or %s)", ErrNoBackend, entrypoint.AnnotationListeners,
			problem.Clip(ep.Listeners), ep.ID(), entrypoint.ListenersOnSets, entrypoint.ListenersOnGateway)
	}
	if !ep.AdmitsListenerSets {
		return parent{}, fmt.Errorf("%w: Gateway %s: set spec.allowedListeners.namespaces.from to Same (ListenerSets of %s only), or annotate it %s: %s",
			ErrSetsNotAdmitted, ep.ID(), ep.Namespace, entrypoint.AnnotationListeners, entrypoint.ListenersOnGateway)
	}
	set := setName(ep, x.Key)
	// The Gateway is read with the set, once per group commit: a listener
	// of its own on the port (someone else's, or one an earlier berth put
	// there) is found however fresh the entry point's listing is.
	var onGateway int64
	gen, err := g.sets.do(ctx, g.setObject(ep, set), func(st *setState) (bool, error) {
		onGateway = 0
		for _, l := range st.gw.Spec.Listeners {
			if l.Name == name {
				// An earlier berth's, or the gateway mode's: it stays there.
				onGateway = st.gw.Generation
				return false, nil
			}
			if l.Port == port && sameProtocol(l.Protocol, proto) {
				return false, fmt.Errorf("%w: listener %s uses port %d", ErrTaken, l.Name, port)
			}
		}
		s := st.set
		if s.Labels[kube.LabelManagedBy] != kube.ManagedBy {
			return false, fmt.Errorf("%w: ListenerSet %s/%s is not berth's", ErrTaken, ep.Namespace, set)
		}
		for _, l := range s.Spec.Listeners {
			if l.Port == port && sameProtocol(l.Protocol, proto) && l.Name != name {
				return false, fmt.Errorf("%w: listener %s uses port %d", ErrTaken, l.Name, port)
			}
		}
		if found, changed := claimEntry(s.Spec.Listeners, name, port, proto, allowed); found {
			return changed, nil
		}
		s.Spec.Listeners = append(s.Spec.Listeners, gatewayv1.ListenerEntry{Name: name, Port: port, Protocol: proto, AllowedRoutes: allowed})
		return true, nil
	})
	if err == nil && onGateway != 0 {
		return parent{"Gateway", ep.Name, onGateway}, nil
	}
	return parent{"ListenerSet", set, gen}, err
}

// claimEntry makes the listener name in ls, if there, this exposure's: a
// listener of that name is the exposure's, and whatever it admitted before (a
// former owner's namespace), it admits this one's now.
func claimEntry(ls []gatewayv1.ListenerEntry, name gatewayv1.SectionName, port gatewayv1.PortNumber, proto gatewayv1.ProtocolType, allowed *gatewayv1.AllowedRoutes) (found, changed bool) {
	for i, l := range ls {
		if l.Name != name {
			continue
		}
		if l.Port != port || l.Protocol != proto || !sameAdmission(l.AllowedRoutes, allowed) {
			ls[i] = gatewayv1.ListenerEntry{Name: name, Port: port, Protocol: proto, AllowedRoutes: allowed}
			return true, true
		}
		return true, false
	}
	return false, false
}

// sameAdmission reports whether two listeners admit the same routes: the
// same kinds from the same namespaces (fields the API server defaults, such as
// a kind's group, aside).
func sameAdmission(a, b *gatewayv1.AllowedRoutes) bool {
	if a == nil || b == nil {
		return a == b
	}
	from := func(r *gatewayv1.AllowedRoutes) (gatewayv1.FromNamespaces, map[string]string, []gatewayv1.Kind) {
		f, labels := gatewayv1.NamespacesFromSame, map[string]string(nil)
		if n := r.Namespaces; n != nil {
			if n.From != nil {
				f = *n.From
			}
			if n.Selector != nil && (len(n.Selector.MatchExpressions) > 0 || n.Selector.MatchLabels == nil) {
				return f, nil, nil // not berth's form: never the same
			}
			if n.Selector != nil {
				labels = n.Selector.MatchLabels
			}
		}
		var kinds []gatewayv1.Kind
		for _, k := range r.Kinds {
			kinds = append(kinds, k.Kind)
		}
		return f, labels, kinds
	}
	fa, la, ka := from(a)
	fb, lb, kb := from(b)
	return fa == fb && maps.Equal(la, lb) && slices.Equal(ka, kb) && la != nil
}

// portsPerSet is how many ports one of berth's ListenerSets covers: with a
// TCP and a UDP listener each, 64 listeners, a ListenerSet's most.
const portsPerSet = maxListenerSetListen / 2

// setName is the ListenerSet that holds k's listener: one per portsPerSet
// ports, so that its place never depends on what else is there (no race
// between exposures choosing a set), and neighbouring ports, which
// reservations hand out together, share a write.
func setName(ep entrypoint.EntryPoint, k portalloc.Key) string {
	return fmt.Sprintf("berth-%s-p%d", ep.Name, k.Port/portsPerSet*portsPerSet)
}

// gatewayObject is ep's Gateway, for group commits.
func (g *GatewayBackend) gatewayObject(ep entrypoint.EntryPoint) object[*gatewayv1.Gateway] {
	gws := g.Client.Gateways(ep.Namespace)
	return object[*gatewayv1.Gateway]{
		key: ep.Namespace + "/" + ep.Name, backoff: g.Backoff,
		get: func(ctx context.Context) (*gatewayv1.Gateway, error) {
			return gws.Get(ctx, ep.Name, metav1.GetOptions{})
		},
		write: func(ctx context.Context, gw *gatewayv1.Gateway) (int64, error) {
			out, err := gws.Update(ctx, gw, metav1.UpdateOptions{})
			if err != nil {
				return 0, err
			}
			return out.Generation, nil
		},
	}
}

// setState is one of berth's ListenerSets as a group commit reads it, with
// its Gateway when the commit adds listeners.
type setState struct {
	set *gatewayv1.ListenerSet
	// created: the set did not exist and is created by the write.
	created bool
	gw      *gatewayv1.Gateway
}

func (s *setState) GetGeneration() int64 {
	if s.created {
		return 0
	}
	return s.set.Generation
}

// setObject is berth's ListenerSet name of ep, for group commits, read with
// its Gateway: created when an edit adds to it while it is missing, deleted
// when its last listener goes. (Every commit to a set reads the same way,
// whichever edits it carries.)
func (g *GatewayBackend) setObject(ep entrypoint.EntryPoint, name string) object[*setState] {
	sets := g.Client.ListenerSets(ep.Namespace)
	return object[*setState]{
		key: ep.Namespace + "/" + name, backoff: g.Backoff,
		get: func(ctx context.Context) (*setState, error) {
			st := &setState{}
			var err error
			st.gw, err = g.Client.Gateways(ep.Namespace).Get(ctx, ep.Name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				// Gone: its listeners are none, and berth's sets can still be
				// emptied (an exposure added now reads failed: no Gateway).
				st.gw = &gatewayv1.Gateway{}
			case err != nil:
				return nil, fmt.Errorf("read Gateway %s: %w", ep.ID(), err)
			}
			st.set, err = sets.Get(ctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				st.created = true
				st.set = &gatewayv1.ListenerSet{
					ObjectMeta: metav1.ObjectMeta{
						Name: name, Namespace: ep.Namespace,
						Labels: map[string]string{kube.LabelManagedBy: kube.ManagedBy, LabelGateway: ep.Name},
					},
					Spec: gatewayv1.ListenerSetSpec{ParentRef: gatewayv1.ParentGatewayReference{Name: gatewayv1.ObjectName(ep.Name)}},
				}
				return st, nil
			}
			return st, err
		},
		write: func(ctx context.Context, st *setState) (int64, error) {
			var out *gatewayv1.ListenerSet
			var err error
			switch s := st.set; {
			case st.created:
				out, err = sets.Create(ctx, s, metav1.CreateOptions{})
			case len(s.Spec.Listeners) == 0:
				// A ListenerSet has at least one listener: the last one
				// removed, the set goes, if no one changed it since.
				err = sets.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &s.ResourceVersion}})
				if apierrors.IsNotFound(err) {
					err = nil
				}
				return 0, err
			default:
				out, err = sets.Update(ctx, s, metav1.UpdateOptions{})
				if apierrors.IsNotFound(err) {
					// Emptied and deleted since it was read (another
					// instance): read again, and create it.
					err = apierrors.NewConflict(gatewayv1.Resource("listenersets"), name, err)
				}
			}
			if err != nil {
				return 0, err
			}
			return out.Generation, nil
		},
	}
}

// berthSets are the ListenerSets berth made for the entry point, in name order.
func (g *GatewayBackend) berthSets(ctx context.Context, ep entrypoint.EntryPoint) ([]gatewayv1.ListenerSet, error) {
	l, err := g.Client.ListenerSets(ep.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelGateway + "=" + ep.Name})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(l.Items, func(a, b gatewayv1.ListenerSet) int {
		if d := len(a.Name) - len(b.Name); d != 0 {
			return d
		}
		return strings.Compare(a.Name, b.Name)
	})
	return l.Items, nil
}

func sameProtocol(a, b gatewayv1.ProtocolType) bool {
	udp := func(p gatewayv1.ProtocolType) bool { return p == gatewayv1.UDPProtocolType }
	return udp(a) == udp(b)
}

func (g *GatewayBackend) routeSpec(ep entrypoint.EntryPoint, x Exposure, p parent) (gatewayv1.CommonRouteSpec, []gatewayv1.BackendRef) {
	group := gatewayv1.Group(gatewayv1.GroupName)
	kind := gatewayv1.Kind(p.kind)
	ns := gatewayv1.Namespace(ep.Namespace)
	section := gatewayv1.SectionName(portName(x.Key))
	port := gatewayv1.PortNumber(x.Port)
	return gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{
			Group: &group, Kind: &kind, Namespace: &ns, Name: gatewayv1.ObjectName(p.name), SectionName: &section,
		}}}, []gatewayv1.BackendRef{{BackendObjectReference: gatewayv1.BackendObjectReference{
			Name: gatewayv1.ObjectName(x.Service), Port: &port,
		}}}
}

func routeMeta(ep entrypoint.EntryPoint, x Exposure) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: objectName(ep, x.Key), Namespace: x.Namespace,
		Labels:      map[string]string{kube.LabelManagedBy: kube.ManagedBy, LabelEntryPoint: ep.ID(), LabelPort: x.Key.String()},
		Annotations: map[string]string{AnnotationOwner: x.Owner},
	}
}

// applyRoute creates the route, or updates it where it differs.
func (g *GatewayBackend) applyRoute(ctx context.Context, ep entrypoint.EntryPoint, x Exposure, p parent) error {
	common, refs := g.routeSpec(ep, x, p)
	meta := routeMeta(ep, x)
	if x.Key.Protocol == portalloc.UDP {
		c := g.Client.UDPRoutes(x.Namespace)
		want := gatewayv1.UDPRouteSpec{CommonRouteSpec: common, Rules: []gatewayv1.UDPRouteRule{{BackendRefs: refs}}}
		return casUpdate(ctx, "route/"+x.Namespace+"/"+meta.Name, g.Backoff,
			func(ctx context.Context) (*gatewayv1.UDPRoute, error) {
				return c.Get(ctx, meta.Name, metav1.GetOptions{})
			},
			func(r *gatewayv1.UDPRoute) (bool, error) {
				if equality.Semantic.DeepEqual(r.Spec, want) {
					return false, nil
				}
				r.Spec = want
				return true, nil
			},
			func(ctx context.Context, r *gatewayv1.UDPRoute) error {
				_, err := c.Update(ctx, r, metav1.UpdateOptions{})
				return err
			},
			func(ctx context.Context) error {
				_, err := c.Create(ctx, &gatewayv1.UDPRoute{ObjectMeta: meta, Spec: want}, metav1.CreateOptions{})
				return err
			})
	}
	c := g.Client.TCPRoutes(x.Namespace)
	want := gatewayv1.TCPRouteSpec{CommonRouteSpec: common, Rules: []gatewayv1.TCPRouteRule{{BackendRefs: refs}}}
	return casUpdate(ctx, "route/"+x.Namespace+"/"+meta.Name, g.Backoff,
		func(ctx context.Context) (*gatewayv1.TCPRoute, error) {
			return c.Get(ctx, meta.Name, metav1.GetOptions{})
		},
		func(r *gatewayv1.TCPRoute) (bool, error) {
			if equality.Semantic.DeepEqual(r.Spec, want) {
				return false, nil
			}
			r.Spec = want
			return true, nil
		},
		func(ctx context.Context, r *gatewayv1.TCPRoute) error {
			_, err := c.Update(ctx, r, metav1.UpdateOptions{})
			return err
		},
		func(ctx context.Context) error {
			_, err := c.Create(ctx, &gatewayv1.TCPRoute{ObjectMeta: meta, Spec: want}, metav1.CreateOptions{})
			return err
		})
}

// Unexpose deletes the route and removes the listener wherever it is.
func (g *GatewayBackend) Unexpose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) error {
	name := objectName(ep, x.Key)
	var err error
	if x.Namespace != "" {
		if x.Key.Protocol == portalloc.UDP {
			err = g.Client.UDPRoutes(x.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
		} else {
			err = g.Client.TCPRoutes(x.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete route %s/%s: %w", x.Namespace, name, err)
		}
	}
	section := gatewayv1.SectionName(portName(x.Key))
	// Its ListenerSet, then the Gateway (where gateway mode, or an earlier
	// berth, put it), then any other berth ListenerSet (an earlier berth's).
	// Every place, not the first found: a listener left behind would still
	// admit this owner's namespace on a port the ledger gives someone else.
	var removed, onGateway bool
	dropFromSet := func(st *setState) (bool, error) {
		onGateway = slices.ContainsFunc(st.gw.Spec.Listeners, func(l gatewayv1.Listener) bool { return l.Name == section })
		if st.set.Labels[kube.LabelManagedBy] != kube.ManagedBy {
			return false, nil
		}
		n := len(st.set.Spec.Listeners)
		st.set.Spec.Listeners = slices.DeleteFunc(st.set.Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return l.Name == section })
		changed := len(st.set.Spec.Listeners) != n
		removed = removed || changed
		return changed, nil
	}
	// The set's commit reads the Gateway too: the Gateway is written only
	// when it has the listener.
	onGateway = true // unless the set's commit read the Gateway
	_, err = g.sets.do(ctx, g.setObject(ep, setName(ep, x.Key)), dropFromSet)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove listener %s from %s: %w", section, ep.ID(), err)
	}
	if onGateway {
		_, err = g.gateways.do(ctx, g.gatewayObject(ep), func(gw *gatewayv1.Gateway) (bool, error) {
			n := len(gw.Spec.Listeners)
			gw.Spec.Listeners = slices.DeleteFunc(gw.Spec.Listeners, func(l gatewayv1.Listener) bool { return l.Name == section })
			changed := len(gw.Spec.Listeners) != n
			removed = removed || changed
			return changed, nil
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove listener %s from %s: %w", section, ep.ID(), err)
		}
	}
	if removed {
		return nil
	}
	sets, err := g.berthSets(ctx, ep)
	if err != nil {
		return fmt.Errorf("read ListenerSets of %s: %w", ep.ID(), err)
	}
	for _, s := range sets {
		if !slices.ContainsFunc(s.Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return l.Name == section }) {
			continue
		}
		if _, err = g.sets.do(ctx, g.setObject(ep, s.Name), dropFromSet); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("remove listener %s from %s: %w", section, ep.ID(), err)
		}
	}
	return nil
}

// Status reads what the Gateway implementation reports of x: the Gateway's
// (or ListenerSet's) acceptance, the listener's Accepted, Programmed,
// ResolvedRefs and Conflicted conditions (observed at generation since or
// later; any, if since is 0) and its attached routes, and the route's
// Accepted and ResolvedRefs for that listener at the route's generation. A
// Gateway or ListenerSet not accepted holds every tenant's listeners, so it
// leaves the exposure pending, not failed.
func (g *GatewayBackend) Status(ctx context.Context, ep entrypoint.EntryPoint, x Exposure, since int64) (Status, error) {
	section := gatewayv1.SectionName(portName(x.Key))
	gw, err := g.Client.Gateways(ep.Namespace).Get(ctx, ep.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return failed("Gateway", "NotFound", "the entry point's Gateway is gone"), nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("read Gateway %s: %w", ep.ID(), err)
	}
	// The listener's own refusal comes first: some implementations (Traefik)
	// also mark the whole Gateway not Accepted for one refused listener, and
	// that alone is only pending, as it concerns every listener on it.
	p, listener, err := g.listenerStatus(ctx, ep, gw, x.Key, since)
	if err != nil || listener.State == StateFailed {
		return listener, err
	}
	if st := judgeShared("Gateway", gw.Status.Conditions); st.State != StateExposed {
		return st, nil
	}
	if listener.State != StateExposed {
		return listener, nil
	}
	route, err := g.routeStatus(ctx, ep, x, p, section)
	if err != nil || route.State != StateExposed {
		return route, err
	}
	if p.attached == 0 {
		return pending("listener "+string(section)+" attachedRoutes", "NoAttachedRoutes", "the route is accepted but the listener counts no attached route yet"), nil
	}
	return exposed, nil
}

// listenerParent is where a listener was found, with its attached routes.
type listenerParent struct {
	parent
	attached int32
}

// listenerStatus finds the listener on the Gateway or one of berth's
// ListenerSets and judges its conditions.
func (g *GatewayBackend) listenerStatus(ctx context.Context, ep entrypoint.EntryPoint, gw *gatewayv1.Gateway, k portalloc.Key, since int64) (listenerParent, Status, error) {
	section := gatewayv1.SectionName(portName(k))
	what := "listener " + string(section)
	if slices.ContainsFunc(gw.Spec.Listeners, func(l gatewayv1.Listener) bool { return l.Name == section }) {
		p := listenerParent{parent: parent{kind: "Gateway", name: gw.Name}}
		i := slices.IndexFunc(gw.Status.Listeners, func(l gatewayv1.ListenerStatus) bool { return l.Name == section })
		if i < 0 {
			return p, pending(what, "NotObserved", "the Gateway's status has no such listener yet"), nil
		}
		p.attached = gw.Status.Listeners[i].AttachedRoutes
		return p, judge(what, gw.Status.Listeners[i].Conditions, since, listenerChecks), nil
	}
	// Its ListenerSet, or one an earlier berth placed it in.
	var sets []gatewayv1.ListenerSet
	s, err := g.Client.ListenerSets(ep.Namespace).Get(ctx, setName(ep, k), metav1.GetOptions{})
	switch {
	case err == nil && s.Labels[kube.LabelManagedBy] == kube.ManagedBy &&
		slices.ContainsFunc(s.Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return l.Name == section }):
		sets = []gatewayv1.ListenerSet{*s}
	case err != nil && !apierrors.IsNotFound(err):
		return listenerParent{}, Status{}, fmt.Errorf("read ListenerSet of %s: %w", ep.ID(), err)
	default:
		if sets, err = g.berthSets(ctx, ep); err != nil {
			return listenerParent{}, Status{}, fmt.Errorf("read ListenerSets of %s: %w", ep.ID(), err)
		}
	}
	for _, s := range sets {
		if !slices.ContainsFunc(s.Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return l.Name == section }) {
			continue
		}
		p := listenerParent{parent: parent{kind: "ListenerSet", name: s.Name}}
		if st := judgeShared("ListenerSet "+s.Name, s.Status.Conditions); st.State != StateExposed {
			return p, st, nil
		}
		i := slices.IndexFunc(s.Status.Listeners, func(l gatewayv1.ListenerEntryStatus) bool { return l.Name == section })
		if i < 0 {
			return p, pending(what, "NotObserved", "the ListenerSet's status has no such listener yet"), nil
		}
		p.attached = s.Status.Listeners[i].AttachedRoutes
		return p, judge(what, s.Status.Listeners[i].Conditions, since, listenerChecks), nil
	}
	return listenerParent{}, failed(what, "NotFound", "the listener is on neither the Gateway nor berth's ListenerSets"), nil
}

// routeStatus judges the route's status for the listener's parent.
func (g *GatewayBackend) routeStatus(ctx context.Context, ep entrypoint.EntryPoint, x Exposure, p listenerParent, section gatewayv1.SectionName) (Status, error) {
	name := objectName(ep, x.Key)
	var (
		rs  gatewayv1.RouteStatus
		gen int64
		err error
	)
	kind := "TCPRoute"
	if x.Key.Protocol == portalloc.UDP {
		kind = "UDPRoute"
		var r *gatewayv1.UDPRoute
		if r, err = g.Client.UDPRoutes(x.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			rs, gen = r.Status.RouteStatus, r.Generation
		}
	} else {
		var r *gatewayv1.TCPRoute
		if r, err = g.Client.TCPRoutes(x.Namespace).Get(ctx, name, metav1.GetOptions{}); err == nil {
			rs, gen = r.Status.RouteStatus, r.Generation
		}
	}
	what := kind + " " + x.Namespace + "/" + name
	if apierrors.IsNotFound(err) {
		return failed(what, "NotFound", "the route is gone"), nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("read %s: %w", what, err)
	}
	i := slices.IndexFunc(rs.Parents, func(ps gatewayv1.RouteParentStatus) bool {
		r := ps.ParentRef
		kind := "Gateway" // the field's default
		if r.Kind != nil {
			kind = string(*r.Kind)
		}
		return string(r.Name) == p.name && kind == p.kind &&
			r.SectionName != nil && *r.SectionName == section &&
			(r.Namespace == nil || string(*r.Namespace) == ep.Namespace)
	})
	if i < 0 {
		return pending(what, "NotObserved", "the route's status names no such parent yet"), nil
	}
	return judge(what, rs.Parents[i].Conditions, gen, routeChecks), nil
}
