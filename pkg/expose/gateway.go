package expose

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// GatewayBackend exposes a port as a listener on a Gateway (or, once its 64
// listeners are used, on a ListenerSet attached to it) and a TCPRoute or
// UDPRoute in the target's namespace bound to that listener by sectionName.
// The listener admits routes from the target's namespace only.
type GatewayBackend struct {
	Client  gatewayclient.Interface
	Backoff wait.Backoff
}

// parent is the object that carries an exposure's listener.
type parent struct {
	kind string // Gateway or ListenerSet
	name string
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

// Expose adds the listener, then the route.
func (g *GatewayBackend) Expose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) error {
	p, err := g.addListener(ctx, ep, x)
	if err != nil {
		return fmt.Errorf("gateway listener %s on %s: %w", portName(x.Key), ep.ID(), err)
	}
	if err := g.applyRoute(ctx, ep, x, p); err != nil {
		return fmt.Errorf("route for %s on %s: %w", portName(x.Key), ep.ID(), err)
	}
	return nil
}

// addListener finds the exposure's listener on the Gateway or one of berth's
// ListenerSets, or adds it where there is room. It never adds one twice.
func (g *GatewayBackend) addListener(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) (parent, error) {
	name, proto, allowed := g.listener(x)
	port := gatewayv1.PortNumber(x.Key.Port)
	gws := g.Client.GatewayV1().Gateways(ep.Namespace)
	var found parent
	var full bool
	err := casUpdate(ctx, "gateway/"+ep.Namespace+"/"+ep.Name, g.Backoff,
		func(ctx context.Context) (*gatewayv1.Gateway, error) {
			return gws.Get(ctx, ep.Name, metav1.GetOptions{})
		},
		func(gw *gatewayv1.Gateway) (bool, error) {
			found, full = parent{}, false
			for _, l := range gw.Spec.Listeners {
				if l.Name == name {
					found = parent{"Gateway", gw.Name}
					return false, nil
				}
				if l.Port == port && sameProtocol(l.Protocol, proto) {
					return false, fmt.Errorf("%w: listener %s uses port %d", ErrTaken, l.Name, port)
				}
			}
			ls, err := g.berthSets(ctx, ep)
			if err != nil {
				return false, err
			}
			for _, s := range ls {
				if slices.ContainsFunc(s.Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return l.Name == name }) {
					found = parent{"ListenerSet", s.Name}
					return false, nil
				}
			}
			if len(gw.Spec.Listeners) < maxGatewayListeners {
				gw.Spec.Listeners = append(gw.Spec.Listeners, gatewayv1.Listener{Name: name, Port: port, Protocol: proto, AllowedRoutes: allowed})
				found = parent{"Gateway", gw.Name}
				return true, nil
			}
			full = true
			if gw.Spec.AllowedListeners == nil {
				// A Gateway takes no ListenerSets unless it says so.
				same := gatewayv1.NamespacesFromSame
				gw.Spec.AllowedListeners = &gatewayv1.AllowedListeners{Namespaces: &gatewayv1.ListenerNamespaces{From: &same}}
				return true, nil
			}
			return false, nil
		},
		func(ctx context.Context, gw *gatewayv1.Gateway) error {
			_, err := gws.Update(ctx, gw, metav1.UpdateOptions{})
			return err
		}, nil)
	if err != nil || !full || found.kind != "" {
		return found, err
	}
	// The Gateway is full: add the listener to a ListenerSet with room, or to a
	// new one. A lost race is a conflict, and the whole choice is made again.
	err = casUpdate(ctx, "listenersets/"+ep.Namespace+"/"+ep.Name, g.Backoff, g.readSets(ep),
		func(w *setWrite) (bool, error) {
			entry := gatewayv1.ListenerEntry{Name: name, Port: port, Protocol: proto, AllowedRoutes: allowed}
			for i := range w.sets {
				if slices.ContainsFunc(w.sets[i].Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return l.Name == name }) {
					found = parent{"ListenerSet", w.sets[i].Name}
					return false, nil
				}
			}
			for i := range w.sets {
				if len(w.sets[i].Spec.Listeners) < maxListenerSetListen {
					w.sets[i].Spec.Listeners = append(w.sets[i].Spec.Listeners, entry)
					w.op, w.set = setUpdate, &w.sets[i]
					found = parent{"ListenerSet", w.set.Name}
					return true, nil
				}
			}
			w.op, w.set = setCreate, &gatewayv1.ListenerSet{
				ObjectMeta: metav1.ObjectMeta{
					Name:   freeSetName(ep.Name, w.sets),
					Labels: map[string]string{kube.LabelManagedBy: kube.ManagedBy, LabelGateway: ep.Name},
				},
				Spec: gatewayv1.ListenerSetSpec{
					ParentRef: gatewayv1.ParentGatewayReference{Name: gatewayv1.ObjectName(ep.Name)},
					Listeners: []gatewayv1.ListenerEntry{entry},
				},
			}
			found = parent{"ListenerSet", w.set.Name}
			return true, nil
		},
		g.writeSet(ep), nil)
	return found, err
}

// setWrite is one write to berth's ListenerSets of an entry point: the sets as
// read, and what a casUpdate change decided to do to one of them.
type setWrite struct {
	sets []gatewayv1.ListenerSet
	op   setOp
	set  *gatewayv1.ListenerSet
}

type setOp int

const (
	setNone setOp = iota
	setCreate
	setUpdate
	setDelete
)

// readSets reads berth's ListenerSets of ep, for casUpdate.
func (g *GatewayBackend) readSets(ep entrypoint.EntryPoint) func(context.Context) (*setWrite, error) {
	return func(ctx context.Context) (*setWrite, error) {
		ls, err := g.berthSets(ctx, ep)
		return &setWrite{sets: ls}, err
	}
}

// writeSet makes the write a change decided, at the resourceVersion the set
// was read at: a lost race is a conflict, and casUpdate reads again.
func (g *GatewayBackend) writeSet(ep entrypoint.EntryPoint) func(context.Context, *setWrite) error {
	sets := g.Client.GatewayV1().ListenerSets(ep.Namespace)
	return func(ctx context.Context, w *setWrite) error {
		var err error
		switch w.op {
		case setCreate:
			_, err = sets.Create(ctx, w.set, metav1.CreateOptions{})
		case setUpdate:
			_, err = sets.Update(ctx, w.set, metav1.UpdateOptions{})
		case setDelete:
			err = sets.Delete(ctx, w.set.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &w.set.ResourceVersion}})
			if apierrors.IsNotFound(err) {
				err = nil
			}
		}
		return err
	}
}

// freeSetName is the first berth-<gateway>-<n> not taken.
func freeSetName(gateway string, ls []gatewayv1.ListenerSet) string {
	for n := 0; ; n++ {
		name := fmt.Sprintf("berth-%s-%d", gateway, n)
		if !slices.ContainsFunc(ls, func(s gatewayv1.ListenerSet) bool { return s.Name == name }) {
			return name
		}
	}
}

// berthSets are the ListenerSets berth made for the entry point, in name order.
func (g *GatewayBackend) berthSets(ctx context.Context, ep entrypoint.EntryPoint) ([]gatewayv1.ListenerSet, error) {
	l, err := g.Client.GatewayV1().ListenerSets(ep.Namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelGateway + "=" + ep.Name})
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
		c := g.Client.GatewayV1().UDPRoutes(x.Namespace)
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
	c := g.Client.GatewayV1().TCPRoutes(x.Namespace)
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
			err = g.Client.GatewayV1().UDPRoutes(x.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
		} else {
			err = g.Client.GatewayV1().TCPRoutes(x.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete route %s/%s: %w", x.Namespace, name, err)
		}
	}
	section := gatewayv1.SectionName(portName(x.Key))
	gws := g.Client.GatewayV1().Gateways(ep.Namespace)
	err = casUpdate(ctx, "gateway/"+ep.Namespace+"/"+ep.Name, g.Backoff,
		func(ctx context.Context) (*gatewayv1.Gateway, error) {
			return gws.Get(ctx, ep.Name, metav1.GetOptions{})
		},
		func(gw *gatewayv1.Gateway) (bool, error) {
			n := len(gw.Spec.Listeners)
			gw.Spec.Listeners = slices.DeleteFunc(gw.Spec.Listeners, func(l gatewayv1.Listener) bool { return l.Name == section })
			return len(gw.Spec.Listeners) != n, nil
		},
		func(ctx context.Context, gw *gatewayv1.Gateway) error {
			_, err := gws.Update(ctx, gw, metav1.UpdateOptions{})
			return err
		},
		nil)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove listener %s from %s: %w", section, ep.ID(), err)
	}
	return casUpdate(ctx, "listenersets/"+ep.Namespace+"/"+ep.Name, g.Backoff, g.readSets(ep),
		func(w *setWrite) (bool, error) {
			for i := range w.sets {
				n := len(w.sets[i].Spec.Listeners)
				w.sets[i].Spec.Listeners = slices.DeleteFunc(w.sets[i].Spec.Listeners, func(l gatewayv1.ListenerEntry) bool { return l.Name == section })
				switch {
				case len(w.sets[i].Spec.Listeners) == n:
					continue
				case len(w.sets[i].Spec.Listeners) == 0:
					w.op = setDelete
				default:
					w.op = setUpdate
				}
				w.set = &w.sets[i]
				return true, nil
			}
			return false, nil
		},
		g.writeSet(ep), nil)
}
