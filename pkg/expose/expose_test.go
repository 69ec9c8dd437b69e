package expose

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) { os.Exit(controlplane.RunTests(m, &cp)) }

// fixture is a namespace with one entry point of a backend, and an Exposer.
type fixture struct {
	ns  string
	gw  gatewayclient.Interface
	exp *Exposer
	ep  string
}

func newFixture(t testing.TB, backend string) *fixture {
	t.Helper()
	ctx := context.Background()
	ns := cp.Namespace(t)
	gw := gatewayclient.NewForConfigOrDie(cp.Config) // the test's own reads
	api, err := gatewayapi.New(cp.Config, nil)       // berth's
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{ns: ns, gw: gw}
	switch backend {
	case entrypoint.BackendGatewayAPI:
		if _, err := cp.CreateGateway(ctx, ns, "shared", "192.0.2.100", gatewayv1.Listener{Name: "http", Port: 80, Protocol: gatewayv1.HTTPProtocolType}); err != nil {
			t.Fatal(err)
		}
		f.ep = "gateway.shared"
	case entrypoint.BackendIngressNginx:
		cp.LoadBalancer(t, ns, "ingress-nginx-controller", "192.0.2.101", map[string]string{"app.kubernetes.io/name": "ingress-nginx"})
		f.ep = "service.ingress-nginx-controller"
	case entrypoint.BackendSharedIP:
		cp.LoadBalancer(t, ns, "shared", "192.0.2.102", nil)
		f.ep = "service.shared"
	}
	ports := &reservation.Service{
		EntryPoints: &entrypoint.Finder{Core: cp.Client, Gateway: api, Namespace: ns, TCPServices: "tcp-services", UDPServices: "udp-services",
			MaxAge: reservation.EntryPointsMaxAge},
		Ledgers:  ledger.NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff),
		Services: reservation.KubeServices{Client: cp.Client},
		Range:    portalloc.Range{Min: 20000, Max: 30000},
		TTL:      10 * time.Minute,
	}
	f.exp = &Exposer{Core: cp.Client, Ports: ports, Backoff: kube.ConflictBackoff, Backends: NewBackends(Deps{Core: cp.Client, Gateway: api, Backoff: kube.ConflictBackoff,
		SharedIPAnnotations: map[string]string{"metallb.io/allow-shared-ip": "berth", "metallb.io/loadBalancerIPs": "{ip}"}})}
	return f
}

// app creates a target Service with an mqtt TCP port and a coap UDP port.
func (f *fixture) app(t testing.TB, name string) {
	t.Helper()
	_, err := cp.Client.CoreV1().Services(f.ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{
			{Name: "mqtt", Port: 1883, TargetPort: intstr.FromInt(11883), Protocol: corev1.ProtocolTCP},
			{Name: "coap", Port: 5683, TargetPort: intstr.FromInt(5683), Protocol: corev1.ProtocolUDP},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// exposeAll exposes tenant-0 to tenant-<n-1>'s port 1883 all at once.
func (f *fixture) exposeAll(ctx context.Context, n int) ([]Endpoint, []error) {
	ends := make([]Endpoint, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			ends[i], errs[i] = f.exp.Expose(ctx, f.request(fmt.Sprintf("tenant-%d", i), intstr.FromInt(1883), portalloc.TCP))
		})
	}
	wg.Wait()
	return ends, errs
}

func (f *fixture) request(name string, port intstr.IntOrString, proto portalloc.Protocol) Request {
	return Request{Target: Target{Namespace: f.ns, Name: name, Port: port, Protocol: proto}, EntryPoint: f.ep}
}

func (f *fixture) endpointAnnotation(t *testing.T, name string) string {
	s, err := cp.Client.CoreV1().Services(f.ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s.Annotations[AnnotationEndpoint]
}

var backends = []string{entrypoint.BackendGatewayAPI, entrypoint.BackendIngressNginx, entrypoint.BackendSharedIP}

func TestExposeReapplyUnexpose(t *testing.T) {
	cp.Require(t)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, backend)
			f.app(t, "gw-1")
			for _, tc := range []struct {
				port  intstr.IntOrString
				proto portalloc.Protocol
			}{{intstr.FromString("mqtt"), portalloc.TCP}, {intstr.FromInt(5683), portalloc.UDP}} {
				req := f.request("gw-1", tc.port, tc.proto)
				end, err := f.exp.Expose(ctx, req)
				if err != nil {
					t.Fatalf("Expose %s: %v", tc.proto, err)
				}
				if end.Backend != backend || !strings.HasPrefix(end.Owner, f.ns+"/gw-1:") || end.Protocol != tc.proto {
					t.Errorf("Expose = %+v", end)
				}
				if !strings.Contains(f.endpointAnnotation(t, "gw-1"), end.String()) {
					t.Errorf("annotation %q lacks %s", f.endpointAnnotation(t, "gw-1"), end)
				}
				before := cp.Fingerprint(t, f.ns)
				again, err := f.exp.Expose(ctx, req)
				if err != nil || again != end {
					t.Errorf("re-Expose = %+v, %v; want %+v", again, err, end)
				}
				if after := cp.Fingerprint(t, f.ns); after != before {
					t.Errorf("re-Expose wrote again:\n%s\nwas\n%s", after, before)
				}
				checkRouted(t, f, backend, end, true)
			}
			eps, _ := f.exp.List(ctx, reservation.Filter{EntryPoint: f.ep})
			if len(eps) != 2 || eps[0].Backend != backend {
				t.Fatalf("List = %+v, want 2 bound endpoints through %s", eps, backend)
			}
			for _, end := range eps {
				k := portalloc.Key{Protocol: end.Protocol, Port: end.Port}
				if err := f.exp.Unexpose(ctx, f.ep, k, "someone-else"); problem.Status(err) != 409 {
					t.Errorf("Unexpose by another owner = %v, want 409", err)
				}
				for range 2 {
					if err := f.exp.Unexpose(ctx, f.ep, k, ""); err != nil {
						t.Fatalf("Unexpose %s: %v", k, err)
					}
				}
				checkRouted(t, f, backend, end, false)
			}
			if a := f.endpointAnnotation(t, "gw-1"); a != "" {
				t.Errorf("annotation after unexpose = %q, want none", a)
			}
			if eps, _ := f.exp.List(ctx, reservation.Filter{}); len(eps) != 0 {
				t.Errorf("ledger after unexpose = %+v, want empty", eps)
			}
		})
	}
}

// checkRouted asserts the backend's objects for end exist (or are gone).
func checkRouted(t *testing.T, f *fixture, backend string, end Endpoint, want bool) {
	t.Helper()
	ctx := context.Background()
	k := portalloc.Key{Protocol: end.Protocol, Port: end.Port}
	var have []string
	switch backend {
	case entrypoint.BackendGatewayAPI:
		// The listener is in berth's ListenerSet of its port, which the
		// route names as its parent; berth never writes the Gateway.
		set := fmt.Sprintf("berth-shared-p%d", k.Port/32*32)
		ls, err := f.gw.GatewayV1().ListenerSets(f.ns).Get(ctx, set, metav1.GetOptions{})
		if err == nil && string(ls.Spec.ParentRef.Name) == "shared" && slices.ContainsFunc(ls.Spec.Listeners, func(l gatewayv1.ListenerEntry) bool {
			return string(l.Name) == portName(k) && int(l.Port) == k.Port
		}) {
			have = append(have, "listener")
		}
		if g, _ := f.gw.GatewayV1().Gateways(f.ns).Get(ctx, "shared", metav1.GetOptions{}); len(g.Spec.Listeners) != 1 {
			t.Errorf("the Gateway has listeners %v, want its own only", g.Spec.Listeners)
		}
		name := "berth-shared-" + portName(k)
		parent := func(refs []gatewayv1.ParentReference) bool {
			return len(refs) == 1 && *refs[0].Kind == "ListenerSet" && string(refs[0].Name) == set && *refs[0].SectionName == gatewayv1.SectionName(portName(k))
		}
		if k.Protocol == portalloc.UDP {
			r, err := f.gw.GatewayV1().UDPRoutes(f.ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil && parent(r.Spec.ParentRefs) && r.Spec.Rules[0].BackendRefs[0].Name == "gw-1" {
				have = append(have, "route")
			}
		} else {
			r, err := f.gw.GatewayV1().TCPRoutes(f.ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil && parent(r.Spec.ParentRefs) && *r.Spec.Rules[0].BackendRefs[0].Port == 1883 {
				have = append(have, "route")
			}
		}
	case entrypoint.BackendIngressNginx:
		cmName := map[portalloc.Protocol]string{portalloc.TCP: "tcp-services", portalloc.UDP: "udp-services"}[k.Protocol]
		cm, err := cp.Client.CoreV1().ConfigMaps(f.ns).Get(ctx, cmName, metav1.GetOptions{})
		if err == nil && cm.Data[strconv.Itoa(k.Port)] != "" {
			have = append(have, "entry")
		}
		s, _ := cp.Client.CoreV1().Services(f.ns).Get(ctx, "ingress-nginx-controller", metav1.GetOptions{})
		if slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool {
			return int(p.Port) == k.Port && p.TargetPort.IntValue() == k.Port && string(p.Protocol) == string(k.Protocol)
		}) {
			have = append(have, "port")
		}
	case entrypoint.BackendSharedIP:
		s, err := cp.Client.CoreV1().Services(f.ns).Get(ctx, "berth-shared-"+portName(k), metav1.GetOptions{})
		if err == nil && s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.Selector["app"] == "gw-1" &&
			int(s.Spec.Ports[0].Port) == k.Port && s.Annotations["metallb.io/loadBalancerIPs"] == "192.0.2.102" {
			have = append(have, "service")
		}
	}
	wantN := map[string]int{entrypoint.BackendGatewayAPI: 2, entrypoint.BackendIngressNginx: 2, entrypoint.BackendSharedIP: 1}[backend]
	if want && len(have) != wantN || !want && len(have) != 0 {
		t.Errorf("%s %s: objects present %v, want all %v", backend, end, have, want)
	}
}

func TestHundredConcurrentExposures(t *testing.T) {
	cp.Require(t)
	const n = 100
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			f := newFixture(t, backend)
			for i := range n {
				f.app(t, fmt.Sprintf("tenant-%d", i))
			}
			ends, errs := f.exposeAll(ctx, n)
			if err := errors.Join(errs...); err != nil {
				t.Fatal(err)
			}
			ports := map[int]bool{}
			for _, e := range ends {
				ports[e.Port] = true
			}
			if len(ports) != n {
				t.Errorf("%d exposures got %d distinct ports", n, len(ports))
			}
			switch backend {
			case entrypoint.BackendGatewayAPI:
				checkListeners(t, f, n)
			case entrypoint.BackendIngressNginx:
				cm, _ := cp.Client.CoreV1().ConfigMaps(f.ns).Get(ctx, "tcp-services", metav1.GetOptions{})
				s, _ := cp.Client.CoreV1().Services(f.ns).Get(ctx, "ingress-nginx-controller", metav1.GetOptions{})
				if len(cm.Data) != n || len(s.Spec.Ports) != n+1 {
					t.Errorf("tcp-services has %d entries and the Service %d ports, want %d and %d", len(cm.Data), len(s.Spec.Ports), n, n+1)
				}
				services, _ := cp.Client.CoreV1().Services(f.ns).List(ctx, metav1.ListOptions{})
				for key, value := range cm.Data {
					if err := parseStreamEntry(key, value, corev1.ProtocolTCP, services.Items); err != nil {
						t.Errorf("ingress-nginx would skip %q: %q: %v", key, value, err)
					}
				}
			case entrypoint.BackendSharedIP:
				l, _ := cp.Client.CoreV1().Services(f.ns).List(ctx, metav1.ListOptions{LabelSelector: LabelEntryPoint + "=" + f.ep})
				if len(l.Items) != n {
					t.Errorf("%d shared-IP Services, want %d", len(l.Items), n)
				}
			}
			kind, name, _ := strings.Cut(f.ep, ".")
			l, err := ledger.NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff).Entries(ctx, ledger.BookFor(f.ns, kind, name))
			bound := 0
			for _, e := range l.Entries {
				if e.State == portalloc.Bound {
					bound++
				}
			}
			if err != nil || len(l.Entries) != n || bound != n {
				t.Errorf("ledger holds %d entries, %d bound (%v), want %d bound", len(l.Entries), bound, err, n)
			}
		})
	}
}

// parseStreamEntry applies ingress-nginx's rules for a tcp/udp-services entry
// (its controller's getStreamServices): a numeric key that is not one of the
// controller's own ports; a value "<ns>/<name>:<port>[:PROXY[:PROXY]]" whose
// namespace/name is one Service and whose port, by number or name, is a port
// of that Service with the ConfigMap's protocol; PROXY fields only for TCP.
func parseStreamEntry(key, value string, proto corev1.Protocol, services []corev1.Service) error {
	port, err := strconv.Atoi(key)
	if err != nil {
		return fmt.Errorf("key is not a port number")
	}
	if slices.Contains([]int{80, 443, 442, 10254, 10245, 10246, 10247, 8181, 18080}, port) {
		return fmt.Errorf("port %d is reserved for the controller", port)
	}
	fields := strings.Split(value, ":")
	if len(fields) < 2 || len(fields) > 4 {
		return fmt.Errorf("want ns/name:port[:PROXY[:PROXY]]")
	}
	ns, name, ok := strings.Cut(fields[0], "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return fmt.Errorf("%q is not namespace/name", fields[0])
	}
	for _, f := range fields[2:] {
		if f != "" && strings.ToUpper(f) != "PROXY" {
			return fmt.Errorf("field %q is not PROXY", f)
		}
		if f != "" && proto != corev1.ProtocolTCP {
			return fmt.Errorf("PROXY on %s", proto)
		}
	}
	i := slices.IndexFunc(services, func(s corev1.Service) bool { return s.Namespace == ns && s.Name == name })
	if i < 0 {
		return fmt.Errorf("no Service %s/%s", ns, name)
	}
	n, numeric := strconv.Atoi(fields[1])
	if !slices.ContainsFunc(services[i].Spec.Ports, func(p corev1.ServicePort) bool {
		return p.Protocol == proto && (numeric == nil && int(p.Port) == n || numeric != nil && p.Name == fields[1])
	}) {
		return fmt.Errorf("Service %s/%s has no %s port %s", ns, name, proto, fields[1])
	}
	return nil
}

func TestStreamEntry(t *testing.T) {
	base := Exposure{Key: portalloc.Key{Protocol: portalloc.TCP, Port: 20000}, Namespace: "t", Service: "gw", Port: 1883}
	tests := []struct {
		proto portalloc.Protocol
		proxy Proxy
		want  string
	}{
		{portalloc.TCP, Proxy{}, "t/gw:1883"},
		{portalloc.TCP, Proxy{Decode: true}, "t/gw:1883:PROXY"},
		{portalloc.TCP, Proxy{Encode: true}, "t/gw:1883::PROXY"},
		{portalloc.TCP, Proxy{Decode: true, Encode: true}, "t/gw:1883:PROXY:PROXY"},
		{portalloc.UDP, Proxy{Decode: true, Encode: true}, "t/gw:1883"},
	}
	svc := []corev1.Service{{ObjectMeta: metav1.ObjectMeta{Namespace: "t", Name: "gw"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Port: 1883, Protocol: corev1.ProtocolTCP}, {Port: 1883, Protocol: corev1.ProtocolUDP},
	}}}}
	for _, tc := range tests {
		x := base
		x.Key.Protocol, x.Proxy = tc.proto, tc.proxy
		got := StreamEntry(x)
		if got != tc.want {
			t.Errorf("StreamEntry(%s %+v) = %q, want %q", tc.proto, tc.proxy, got, tc.want)
		}
		if err := parseStreamEntry("20000", got, corev1.Protocol(tc.proto), svc); err != nil {
			t.Errorf("ingress-nginx would skip %q: %v", got, err)
		}
	}
}

func TestInvalidExposuresWriteNothing(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	f := newFixture(t, entrypoint.BackendIngressNginx)
	f.app(t, "gw-1")
	_, err := cp.Client.CoreV1().Services(f.ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "headless"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1883}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Someone else holds a port already.
	held, err := f.exp.Expose(ctx, Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(1883)}, Owner: "other/owner"})
	if err != nil {
		t.Fatal(err)
	}
	tcp := portalloc.TCP
	tests := []struct {
		name   string
		req    Request
		status int
	}{
		{"no such Service", f.request("nope", intstr.FromInt(1883), tcp), 404},
		{"no such port", f.request("gw-1", intstr.FromInt(9999), tcp), 422},
		{"no such port name", f.request("gw-1", intstr.FromString("amqp"), tcp), 422},
		{"protocol mismatch", f.request("gw-1", intstr.FromString("mqtt"), portalloc.UDP), 422},
		{"bad protocol", f.request("gw-1", intstr.FromInt(1883), "SCTP"), 400},
		{"bad service name", f.request("Gw_1", intstr.FromInt(1883), tcp), 400},
		{"bad namespace", Request{Target: Target{Namespace: "a/b", Name: "gw-1", Port: intstr.FromInt(1883)}}, 400},
		{"port zero", f.request("gw-1", intstr.FromInt(0), tcp), 400},
		{"bad port name", f.request("gw-1", intstr.FromString("-x-"), tcp), 400},
		{"PROXY on UDP", Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(5683), Protocol: portalloc.UDP}, Proxy: Proxy{Decode: true}}, 400},
		{"owner's reserved port without entry point", Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(1883)}, Owner: f.ns + "/x", Port: 20005}, 400},
		{"no getport reservation of the port", Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(1883)}, Port: 20005}, 404},
		{"another owner's port, no entry point", Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(1883)}, Port: held.Port}, 404},
		{"unknown entry point", Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(1883)}, EntryPoint: "gateway.none"}, 404},
		{"unknown lbip", Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(1883)}, LBIP: "203.0.113.1"}, 404},
		{"port held by another owner", Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(1883)}, EntryPoint: f.ep, Port: held.Port}, 409},
		{"port never reserved", Request{Target: Target{Namespace: f.ns, Name: "gw-1", Port: intstr.FromInt(1883)}, EntryPoint: f.ep, Port: 29999}, 404},
	}
	before := cp.Fingerprint(t, f.ns)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.exp.Expose(ctx, tc.req)
			if problem.Status(err) != tc.status {
				t.Errorf("Expose(%s) = %v (%d), want %d", tc.name, err, problem.Status(err), tc.status)
			}
		})
	}
	if after := cp.Fingerprint(t, f.ns); after != before {
		t.Errorf("refused exposures wrote:\n%s\nwas\n%s", after, before)
	}
}

func TestSharedIPNeedsSelector(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	f := newFixture(t, entrypoint.BackendSharedIP)
	_, err := cp.Client.CoreV1().Services(f.ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "headless"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1883}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := cp.Fingerprint(t, f.ns)
	for _, req := range []Request{
		f.request("headless", intstr.FromInt(1883), portalloc.TCP),
		{Target: Target{Namespace: f.ns, Name: "headless", Port: intstr.FromInt(1883)}}, // no entry point named: berth chooses
	} {
		if _, err := f.exp.Expose(ctx, req); problem.Status(err) != 422 {
			t.Errorf("shared-IP exposure of a Service without selector = %v, want 422", err)
		}
	}
	if after := cp.Fingerprint(t, f.ns); after != before {
		t.Errorf("a refused exposure wrote:\n%s\nwas\n%s", after, before)
	}
}

// TestRoutedElsewhereWritesNothing: a port that something not berth's routes
// (a Gateway listener, a port on the ingress-nginx controller's Service, a
// Service with berth's name) is 409, and the refused exposure leaves the cluster
// as it was: no routing object, and the ledger as before, whether the port was
// reserved by this call or by the caller with getport.
func TestRoutedElsewhereWritesNothing(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			f := newFixture(t, backend)
			f.app(t, "gw-1")
			ports := f.exp.Ports.(*reservation.Service)
			// A getport reservation for the exposure to name, made before the
			// foreign object appears (as when it appears in between).
			owner := f.ns + "/gw-1:1883"
			res, err := ports.Reserve(ctx, reservation.Request{Owner: owner, Protocol: portalloc.TCP, EntryPoint: f.ep})
			if err != nil {
				t.Fatal(err)
			}
			k := portalloc.Key{Protocol: portalloc.TCP, Port: res.Port}
			f.foreign(t, backend, k)
			before := f.state(t)
			req := f.request("gw-1", intstr.FromInt(1883), portalloc.TCP)
			req.Port = res.Port
			if _, err := f.exp.Expose(ctx, req); problem.Status(err) != 409 || !errors.Is(err, ErrTaken) {
				t.Fatalf("Expose of a port routed elsewhere = %v, want 409 ErrTaken", err)
			}
			if after := f.state(t); after != before {
				t.Errorf("a refused exposure wrote:\n%s\nwas\n%s", after, before)
			}
		})
	}
	// Without a named port, the port berth reserves itself is freed again.
	t.Run("reserved by the call", func(t *testing.T) {
		f := newFixture(t, entrypoint.BackendSharedIP)
		f.app(t, "gw-1")
		f.app(t, "gw-2")
		first, err := f.exp.Expose(ctx, f.request("gw-1", intstr.FromInt(1883), portalloc.TCP))
		if err != nil {
			t.Fatal(err)
		}
		// The next free port is named by a Service that is not berth's.
		f.foreign(t, entrypoint.BackendSharedIP, portalloc.Key{Protocol: portalloc.TCP, Port: first.Port + 1})
		before := f.state(t)
		if _, err := f.exp.Expose(ctx, f.request("gw-2", intstr.FromInt(1883), portalloc.TCP)); problem.Status(err) != 409 {
			t.Fatalf("Expose onto a port routed elsewhere = %v, want 409", err)
		}
		if after := f.state(t); after != before {
			t.Errorf("a refused exposure wrote:\n%s\nwas\n%s", after, before)
		}
	})
}

// TestRoutedElsewhereKeepsTheOwnersReservation: an exposure that names no port
// but an owner already holding one is given that port back; refused, the
// owner's reservation stays as it was (not freed).
func TestRoutedElsewhereKeepsTheOwnersReservation(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	f := newFixture(t, entrypoint.BackendSharedIP)
	f.app(t, "gw-1")
	owner := f.ns + "/gw-1"
	res, err := f.exp.Ports.Reserve(ctx, reservation.Request{Owner: owner, Protocol: portalloc.TCP, EntryPoint: f.ep})
	if err != nil {
		t.Fatal(err)
	}
	f.foreign(t, entrypoint.BackendSharedIP, portalloc.Key{Protocol: portalloc.TCP, Port: res.Port})
	// Reserve renews the reservation's expiry, so the ledger is compared by
	// who holds what, and the rest by resourceVersion.
	before, heldBefore := f.objects(t), f.holders(t, false)
	req := f.request("gw-1", intstr.FromInt(1883), portalloc.TCP)
	req.Owner = owner
	if _, err := f.exp.Expose(ctx, req); problem.Status(err) != 409 {
		t.Fatalf("Expose onto the owner's port routed elsewhere = %v, want 409", err)
	}
	if after := f.objects(t); after != before {
		t.Errorf("a refused exposure wrote:\n%s\nwas\n%s", after, before)
	}
	if got := f.holders(t, false); got != heldBefore {
		t.Errorf("the ledger holds %q after the refused exposure, want the owner's reservation as before: %q", got, heldBefore)
	}
}

// foreign routes port k of the fixture's entry point by something not berth's.
func (f *fixture) foreign(t *testing.T, backend string, k portalloc.Key) {
	t.Helper()
	ctx := context.Background()
	var err error
	switch backend {
	case entrypoint.BackendGatewayAPI:
		var gw *gatewayv1.Gateway
		if gw, err = f.gw.GatewayV1().Gateways(f.ns).Get(ctx, "shared", metav1.GetOptions{}); err == nil {
			gw.Spec.Listeners = append(gw.Spec.Listeners, gatewayv1.Listener{Name: "theirs", Port: gatewayv1.PortNumber(k.Port), Protocol: gatewayv1.TCPProtocolType})
			_, err = f.gw.GatewayV1().Gateways(f.ns).Update(ctx, gw, metav1.UpdateOptions{})
		}
	case entrypoint.BackendIngressNginx:
		var s *corev1.Service
		if s, err = cp.Client.CoreV1().Services(f.ns).Get(ctx, "ingress-nginx-controller", metav1.GetOptions{}); err == nil {
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "theirs", Port: int32(k.Port), Protocol: corev1.ProtocolTCP})
			_, err = cp.Client.CoreV1().Services(f.ns).Update(ctx, s, metav1.UpdateOptions{})
		}
	case entrypoint.BackendSharedIP:
		_, err = cp.Client.CoreV1().Services(f.ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "berth-shared-" + portName(k)},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
}

// state is every object in the fixture's namespace with its resourceVersion,
// but the ledger by its entries: putting the ledger back rewrites it.
func (f *fixture) state(t *testing.T) string {
	t.Helper()
	return f.objects(t) + "\nledger: " + f.holders(t, true)
}

// objects is every object in the fixture's namespace but the ledger, with its
// resourceVersion.
func (f *fixture) objects(t *testing.T) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(cp.Fingerprint(t, f.ns), "\n") {
		if !strings.Contains(l, "/berth-ports-") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// holders is the ledger's entries: who holds which port, in which state, for
// which Service, and with expiries when withExpiry.
func (f *fixture) holders(t *testing.T, withExpiry bool) string {
	t.Helper()
	held, err := f.exp.Ports.List(context.Background(), reservation.Filter{EntryPoint: f.ep})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range held {
		line := fmt.Sprintf("%s %s/%d %s %s", r.Owner, r.Protocol, r.Port, r.State, r.Service)
		if withExpiry && r.ExpiresAt != nil {
			line += " until " + r.ExpiresAt.String()
		}
		out = append(out, line)
	}
	return strings.Join(out, "; ")
}

// TestRetryRepairs: what a crash (or a person) left half done is finished by
// the next Expose of the same request.
func TestRetryRepairs(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			f := newFixture(t, backend)
			f.app(t, "gw-1")
			req := f.request("gw-1", intstr.FromInt(1883), portalloc.TCP)
			end, err := f.exp.Expose(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			k := portalloc.Key{Protocol: portalloc.TCP, Port: end.Port}
			switch backend {
			case entrypoint.BackendGatewayAPI:
				err = f.gw.GatewayV1().TCPRoutes(f.ns).Delete(ctx, "berth-shared-"+portName(k), metav1.DeleteOptions{})
			case entrypoint.BackendIngressNginx:
				var s *corev1.Service
				if s, err = cp.Client.CoreV1().Services(f.ns).Get(ctx, "ingress-nginx-controller", metav1.GetOptions{}); err == nil {
					s.Spec.Ports = s.Spec.Ports[:1]
					_, err = cp.Client.CoreV1().Services(f.ns).Update(ctx, s, metav1.UpdateOptions{})
				}
			case entrypoint.BackendSharedIP:
				err = cp.Client.CoreV1().Services(f.ns).Delete(ctx, "berth-shared-"+portName(k), metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Fatal(err)
			}
			again, err := f.exp.Expose(ctx, req)
			if err != nil || again.Port != end.Port {
				t.Fatalf("retry = %+v, %v; want port %d", again, err, end.Port)
			}
			checkRouted(t, f, backend, end, true)
		})
	}
}
