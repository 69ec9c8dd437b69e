// Package entrypoint finds berth's shared-IP entry points: LoadBalancer Services
// (an ingress-nginx controller, or an address that LoadBalancer Services share)
// and Gateway API Gateways, with their public address and the ports they use.
package entrypoint

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
)

// Kind is what an entry point is.
type Kind string

// The kinds of entry point.
const (
	KindService Kind = "service"
	KindGateway Kind = "gateway"
)

// Labels and annotations read on entry points.
const (
	// LabelIngress selects entry points: appingress=<INGRESS_LABEL>, as in the seed.
	LabelIngress = "appingress"
	// AnnotationBackend names the routing backend: gateway-api, ingress-nginx or
	// shared-ip. Without it, a Gateway is gateway-api, a Service labelled
	// app.kubernetes.io/name=ingress-nginx is ingress-nginx, any other Service shared-ip.
	AnnotationBackend = "berth.dev/backend"
	// AnnotationTCPServices and AnnotationUDPServices name the ingress-nginx
	// ConfigMaps (name, or namespace/name) when they differ from the configured ones.
	AnnotationTCPServices = "berth.dev/tcp-services-configmap"
	AnnotationUDPServices = "berth.dev/udp-services-configmap"
	// AnnotationListeners says where a Gateway entry point's listeners go:
	// ListenersOnSets (the default) or ListenersOnGateway.
	AnnotationListeners = "berth.dev/listeners"
)

// Where berth puts a Gateway entry point's listeners.
const (
	// ListenersOnSets: in berth's own ListenerSets attached to the Gateway,
	// which must admit them (spec.allowedListeners); berth never writes the
	// Gateway.
	ListenersOnSets = "listenersets"
	// ListenersOnGateway: in the Gateway's own listeners, at most 64 in all, for
	// implementations without ListenerSets (Traefik v3.6).
	ListenersOnGateway = "gateway"
)

// The routing backends.
const (
	BackendGatewayAPI   = "gateway-api"
	BackendIngressNginx = "ingress-nginx"
	BackendSharedIP     = "shared-ip"
)

// EntryPoint is one shared-IP entry point.
type EntryPoint struct {
	Kind      Kind
	Namespace string
	Name      string
	// Address is the public IP or hostname from status; "" until one is assigned.
	Address string
	// Backend is how ports are routed through it.
	Backend string
	// Annotations are the object's annotations, for backend settings.
	Annotations map[string]string
	// Used are the ports the entry point itself already serves, and for
	// ingress-nginx the ports its tcp/udp-services ConfigMaps map.
	Used map[portalloc.Key]bool
	// StreamConfigMaps are, for ingress-nginx, the namespace/name of the
	// tcp-services and udp-services ConfigMaps the controller reads.
	StreamConfigMaps map[portalloc.Protocol]string
	// Listeners is, for a Gateway, where berth puts its listeners
	// (ListenersOnSets or ListenersOnGateway; another value as annotated).
	Listeners string
	// AdmitsListenerSets is, for a Gateway, whether its allowedListeners
	// admits ListenerSets from its own namespace only (From: Same).
	AdmitsListenerSets bool
}

// ID is the entry point's id in berth's API: "<kind>.<name>".
func (e EntryPoint) ID() string { return string(e.Kind) + "." + e.Name }

// InUse reports whether k is used by the entry point itself.
func (e EntryPoint) InUse(k portalloc.Key) bool { return e.Used[k] }

// ParseID splits an id into kind and name.
func ParseID(id string) (Kind, string, error) {
	kind, name, _ := strings.Cut(id, ".")
	if (Kind(kind) != KindService && Kind(kind) != KindGateway) || len(validation.IsDNS1123Label(name)) != 0 {
		return "", "", fmt.Errorf("%w: %q", ErrBadID, problem.Clip(id))
	}
	return Kind(kind), name, nil
}

// Finder lists entry points in one namespace.
type Finder struct {
	Core kubernetes.Interface
	// Gateway reads the Gateway API. Nil where it is not used.
	Gateway *gatewayapi.Client
	// Namespace holds the entry points (LOAD_BALANCER_NAMESPACE).
	Namespace string
	// Label, when set, keeps only entry points labelled appingress=<Label>.
	Label string
	// TCPServices and UDPServices name ingress-nginx's ConfigMaps (name in
	// Namespace, or namespace/name). Where empty, they are read from the
	// controller's --tcp-services-configmap / --udp-services-configmap arguments.
	TCPServices, UDPServices string
	// MaxAge, when set, lets a List that need not be consistent answer from
	// the last listing of at most that age, and lets concurrent Lists share
	// one listing: a thousand concurrent requests then read the entry points
	// a few times, not thousands. The answer is shared: callers must not
	// change it.
	MaxAge time.Duration

	mu       sync.Mutex
	cached   []EntryPoint
	cachedAt time.Time
	lists    singleflight.Group
}

// List returns every entry point, addressed or not.
//
// Unless consistent is set, it reads from the API server's watch cache
// (resourceVersion 0), as informers do: a consistent list of a resource nobody
// writes waits for the cache to catch up, tens of milliseconds a call. Entry
// points change seldom, and the ledger, read and written by compare-and-swap, is
// what decides which port is free. Callers confirm a miss with a consistent list.
func (f *Finder) List(ctx context.Context, consistent bool) ([]EntryPoint, error) {
	if consistent || f.MaxAge <= 0 {
		return f.list(ctx, consistent, true)
	}
	f.mu.Lock()
	if f.cached != nil && time.Since(f.cachedAt) < f.MaxAge {
		eps := f.cached
		f.mu.Unlock()
		return eps, nil
	}
	f.mu.Unlock()
	ch := f.lists.DoChan("", func() (any, error) {
		// The listing is shared: it does not end with one caller's context.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		at := time.Now()
		eps, err := f.list(ctx, false, true)
		if err == nil {
			f.mu.Lock()
			f.cached, f.cachedAt = eps, at
			f.mu.Unlock()
		}
		return eps, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.([]EntryPoint), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Identify lists every entry point, as List does, less what only choosing a
// free port needs: an ingress-nginx entry point's Used holds its Service's
// ports alone, and its StreamConfigMaps are not looked up (the lookup may
// read its controller's pods); a Gateway's Used holds its own listeners'
// ports alone, as other parties' ListenerSets are not read. It reads one
// round trip's worth: Services and Gateways. Unless consistent is set, it
// reads them from the API server's watch cache, as List does, and is never
// cached here.
func (f *Finder) Identify(ctx context.Context, consistent bool) ([]EntryPoint, error) {
	return f.list(ctx, consistent, false)
}

// list reads the entry points; with used, also every port they use that is
// not their own: those an ingress-nginx controller's tcp and udp ConfigMaps
// map, and other parties' ListenerSets on a Gateway.
func (f *Finder) list(ctx context.Context, consistent, used bool) ([]EntryPoint, error) {
	rv := "0"
	if consistent {
		rv = ""
	}
	opts := metav1.ListOptions{ResourceVersion: rv}
	if f.Label != "" {
		opts.LabelSelector = LabelIngress + "=" + f.Label
	}
	// Services, Gateways and ListenerSets are read at once: a caller's
	// request waits on every round trip made one after another.
	var (
		svcs *corev1.ServiceList
		gws  []gateway
		ls   []gatewayv1.ListenerSet
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		if svcs, err = f.Core.CoreV1().Services(f.Namespace).List(gctx, opts); err != nil {
			return fmt.Errorf("list entry-point Services: %w", err)
		}
		return nil
	})
	if f.Gateway != nil {
		g.Go(func() (err error) {
			gws, err = f.listGateways(gctx, opts)
			if apierrors.IsNotFound(err) {
				return nil // the Gateway API is not installed
			}
			if err != nil {
				return fmt.Errorf("list entry-point Gateways: %w", err)
			}
			return nil
		})
	}
	if f.Gateway != nil && used {
		g.Go(func() (err error) {
			// Others' ListenerSets only: the ports of berth's own are in the
			// ledger, and at a thousand exposures their listeners would make
			// every request read a megabyte.
			var l *gatewayv1.ListenerSetList
			l, err = f.Gateway.ListenerSets(f.Namespace).List(gctx, metav1.ListOptions{ResourceVersion: rv,
				LabelSelector: kube.LabelManagedBy + "!=" + kube.ManagedBy})
			if l != nil {
				ls = l.Items
			}
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("list ListenerSets: %w", err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var lbs []*corev1.Service
	for i := range svcs.Items {
		if svcs.Items[i].Spec.Type == corev1.ServiceTypeLoadBalancer {
			lbs = append(lbs, &svcs.Items[i])
		}
	}
	eps := make([]EntryPoint, len(lbs))
	g, gctx = errgroup.WithContext(ctx)
	for i, s := range lbs {
		g.Go(func() (err error) {
			eps[i], err = f.fromService(gctx, s, used)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for i := range gws {
		eps = append(eps, fromGateway(&gws[i], ls))
	}
	return eps, nil
}

func (f *Finder) fromService(ctx context.Context, s *corev1.Service, streams bool) (EntryPoint, error) {
	ep := EntryPoint{
		Kind: KindService, Namespace: s.Namespace, Name: s.Name, Annotations: s.Annotations,
		Backend: s.Annotations[AnnotationBackend], Used: map[portalloc.Key]bool{},
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if ep.Address = in.IP; ep.Address == "" {
			ep.Address = in.Hostname
		}
		if ep.Address != "" {
			break
		}
	}
	for _, p := range s.Spec.Ports {
		proto := portalloc.Protocol(p.Protocol)
		if proto == "" {
			proto = portalloc.TCP
		}
		ep.Used[portalloc.Key{Protocol: proto, Port: int(p.Port)}] = true
	}
	if ep.Backend == "" {
		ep.Backend = BackendSharedIP
		if s.Labels["app.kubernetes.io/name"] == "ingress-nginx" {
			ep.Backend = BackendIngressNginx
		}
	}
	if ep.Backend != BackendIngressNginx || !streams {
		return ep, nil
	}
	refs, err := f.streamConfigMaps(ctx, s)
	if err != nil {
		return ep, err
	}
	ep.StreamConfigMaps = refs
	// The tcp and udp ConfigMaps are read at once, as the stages before.
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	for proto, ref := range refs {
		g.Go(func() error {
			ns, name := splitRef(ref, s.Namespace)
			cm, err := f.Core.CoreV1().ConfigMaps(ns).Get(gctx, name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read ingress-nginx ConfigMap %s: %w", ref, err)
			}
			mu.Lock()
			defer mu.Unlock()
			for key := range cm.Data {
				if n, err := strconv.Atoi(key); err == nil {
					ep.Used[portalloc.Key{Protocol: proto, Port: n}] = true
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return ep, err
	}
	return ep, nil
}

// streamConfigMaps finds the ConfigMaps an ingress-nginx controller reads, as
// namespace/name: the entry point's annotation, else the Finder's setting, else
// the arguments of the controller pods the Service selects.
func (f *Finder) streamConfigMaps(ctx context.Context, s *corev1.Service) (map[portalloc.Protocol]string, error) {
	refs := map[portalloc.Protocol]string{}
	want := map[portalloc.Protocol][2]string{
		portalloc.TCP: {AnnotationTCPServices, f.TCPServices},
		portalloc.UDP: {AnnotationUDPServices, f.UDPServices},
	}
	var args map[portalloc.Protocol]string
	for proto, w := range want {
		ref := s.Annotations[w[0]]
		if ref == "" {
			ref = w[1]
		}
		if ref == "" {
			if args == nil {
				var err error
				if args, err = f.controllerArgs(ctx, s); err != nil {
					return nil, err
				}
			}
			ref = args[proto]
		}
		if ref != "" {
			ns, name := splitRef(ref, s.Namespace)
			refs[proto] = ns + "/" + name
		}
	}
	return refs, nil
}

// controllerArgs reads --tcp-services-configmap and --udp-services-configmap
// from a controller pod the Service selects.
func (f *Finder) controllerArgs(ctx context.Context, s *corev1.Service) (map[portalloc.Protocol]string, error) {
	out := map[portalloc.Protocol]string{}
	if len(s.Spec.Selector) == 0 {
		return out, nil
	}
	pods, err := f.Core.CoreV1().Pods(s.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: labels.SelectorFromSet(s.Spec.Selector).String(), Limit: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("read ingress-nginx controller arguments: %w", err)
	}
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			for _, a := range append(slices.Clone(c.Command), c.Args...) {
				for proto, flag := range map[portalloc.Protocol]string{portalloc.TCP: "--tcp-services-configmap=", portalloc.UDP: "--udp-services-configmap="} {
					if v, ok := strings.CutPrefix(a, flag); ok {
						out[proto] = strings.ReplaceAll(v, "$(POD_NAMESPACE)", p.Namespace)
					}
				}
			}
		}
	}
	return out, nil
}

func splitRef(ref, defNamespace string) (string, string) {
	if ns, name, ok := strings.Cut(ref, "/"); ok {
		return ns, name
	}
	return defNamespace, ref
}

func fromGateway(g *gateway, sets []gatewayv1.ListenerSet) EntryPoint {
	m := g.Metadata
	ep := EntryPoint{
		Kind: KindGateway, Namespace: m.Namespace, Name: m.Name, Annotations: m.Annotations,
		Backend: BackendGatewayAPI, Used: map[portalloc.Key]bool{},
	}
	if len(g.Status.Addresses) > 0 {
		ep.Address = g.Status.Addresses[0].Value
	}
	if ep.Listeners = m.Annotations[AnnotationListeners]; ep.Listeners == "" {
		ep.Listeners = ListenersOnSets
	}
	if a := g.Spec.AllowedListeners; a != nil && a.Namespaces != nil && a.Namespaces.From != nil {
		// From its own namespace only: ListenerSets of other namespaces
		// (All, a Selector) would be tenants' listeners on the ports berth
		// hands out, which berth does not read.
		ep.AdmitsListenerSets = *a.Namespaces.From == gatewayv1.NamespacesFromSame
	}
	use := func(port gatewayv1.PortNumber, proto gatewayv1.ProtocolType) {
		p := portalloc.TCP
		if proto == gatewayv1.UDPProtocolType {
			p = portalloc.UDP
		}
		ep.Used[portalloc.Key{Protocol: p, Port: int(port)}] = true
	}
	for _, l := range g.Spec.Listeners {
		use(l.Port, l.Protocol)
	}
	for _, s := range sets {
		ref := s.Spec.ParentRef
		if string(ref.Name) != m.Name || (ref.Kind != nil && *ref.Kind != "Gateway") {
			continue
		}
		for _, l := range s.Spec.Listeners {
			use(l.Port, l.Protocol)
		}
	}
	return ep
}
