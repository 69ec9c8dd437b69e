package reservation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

var cp *controlplane.ControlPlane

// childEnv makes the test binary a reserving process (see TestMain), so that
// contention is tested between real processes, each with its own store.
const childEnv = "BERTH_RESERVATION_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(child())
	}
	os.Exit(controlplane.RunTests(m, &cp))
}

var wide = portalloc.Range{Min: 20000, Max: 30000}

// newService builds the service as getport does, on client.
func newService(core kubernetes.Interface, gw *gatewayapi.Client, ns string, r portalloc.Range) *Service {
	return &Service{
		EntryPoints: &entrypoint.Finder{Core: core, Gateway: gw, Namespace: ns, TCPServices: "tcp-services", UDPServices: "udp-services"},
		Ledgers:     ledger.NewBooks(core.CoreV1(), kube.ConflictBackoff),
		Namespace:   ns,
		Services:    KubeServices{Client: core},
		Range:       r,
		TTL:         10 * time.Minute,
	}
}

func testService(t *testing.T, r portalloc.Range) (*Service, string) {
	ns := cp.Namespace(t)
	gw, err := gatewayapi.New(cp.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	return newService(cp.Client, gw, ns, r), ns
}

// entriesOf reads every entry of the ledger of the LoadBalancer Service
// entry point ns/name.
func entriesOf(t *testing.T, ns, name string) map[portalloc.Key]portalloc.Entry {
	t.Helper()
	b := ledger.BookFor(ns, "service", name)
	l, err := ledger.NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff).Entries(context.Background(), b)
	if err != nil {
		t.Fatalf("read ledger %s: %v", b.Name, err)
	}
	return l.Entries
}

// child reserves (and in mix mode releases) ports from its own process and prints
// the owners and ports it holds at the end as JSON.
func child() int {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	core := kubernetes.NewForConfigOrDie(cfg)
	svc := newService(core, nil, os.Getenv("BERTH_NS"), wide)
	n, _ := strconv.Atoi(os.Getenv("BERTH_N"))
	prefix, mix := os.Getenv(childEnv), os.Getenv("BERTH_MIX") == "1"
	ctx := context.Background()
	held := make(map[string]int, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for j := range n {
		wg.Go(func() {
			owner := fmt.Sprintf("%s-%d", prefix, j)
			r, err := svc.Reserve(ctx, Request{Owner: owner, Protocol: portalloc.TCP})
			if err == nil && mix && j%2 == 0 {
				if _, err = svc.Release(ctx, r.EntryPoint, portalloc.Key{Protocol: r.Protocol, Port: r.Port}, owner); err == nil {
					owner += "-again"
					r, err = svc.Reserve(ctx, Request{Owner: owner, Protocol: portalloc.TCP})
				}
			}
			if err != nil {
				errc <- fmt.Errorf("%s: %w", owner, err)
				return
			}
			mu.Lock()
			held[owner] = r.Port
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = json.NewEncoder(os.Stdout).Encode(held)
	return 0
}

func kubeconfigFile(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, cp.KubeConfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConcurrentProcesses: 8 processes × 50 concurrent reservations on one entry
// point get 400 distinct ports, and the ledger holds exactly 400 entries; the
// same with releases mixed in.
func TestConcurrentProcesses(t *testing.T) {
	cp.Require(t)
	const procs, each = 8, 50
	for _, mix := range []bool{false, true} {
		t.Run(fmt.Sprintf("mix=%v", mix), func(t *testing.T) {
			ns := cp.Namespace(t)
			cp.LoadBalancer(t, ns, "shared", "192.0.2.10", nil)
			kc := kubeconfigFile(t)
			outs := make([][]byte, procs)
			var wg sync.WaitGroup
			for i := range procs {
				wg.Go(func() {
					cmd := exec.Command(os.Args[0], "-test.run=^$")
					cmd.Env = append(os.Environ(), childEnv+"=p"+strconv.Itoa(i), "KUBECONFIG="+kc, "BERTH_NS="+ns,
						"BERTH_N="+strconv.Itoa(each), fmt.Sprintf("BERTH_MIX=%d", map[bool]int{false: 0, true: 1}[mix]))
					var stderr bufferWriter
					cmd.Stderr = &stderr
					out, err := cmd.Output()
					if err != nil {
						t.Errorf("process %d: %v: %s", i, err, stderr.String())
					}
					outs[i] = out
				})
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			owners := map[string]int{}
			ports := map[int]string{}
			for i, out := range outs {
				var held map[string]int
				if err := json.Unmarshal(out, &held); err != nil {
					t.Fatalf("process %d printed %q: %v", i, out, err)
				}
				for o, p := range held {
					if other, dup := ports[p]; dup {
						t.Errorf("port %d handed to both %s and %s", p, other, o)
					}
					ports[p], owners[o] = o, p
				}
			}
			if len(owners) != procs*each || len(ports) != procs*each {
				t.Errorf("%d owners hold %d distinct ports, want %d and %d", len(owners), len(ports), procs*each, procs*each)
			}
			entries := entriesOf(t, ns, "shared")
			if len(entries) != procs*each {
				t.Errorf("ledger holds %d entries, want %d", len(entries), procs*each)
			}
			for k, e := range entries {
				if owners[e.Owner] != k.Port {
					t.Errorf("ledger has %s for %s, but the owner was answered %d", k, e.Owner, owners[e.Owner])
				}
			}
		})
	}
}

type bufferWriter struct {
	mu sync.Mutex
	b  []byte
}

func (w *bufferWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b = append(w.b, p...)
	return len(p), nil
}

func (w *bufferWriter) String() string { w.mu.Lock(); defer w.mu.Unlock(); return string(w.b) }

func TestReplayedOwnerGetsItsPort(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, wide)
	cp.LoadBalancer(t, ns, "a", "192.0.2.1", nil)
	cp.LoadBalancer(t, ns, "b", "192.0.2.2", nil)
	ctx := context.Background()
	first, err := svc.Reserve(ctx, Request{Owner: "tenant/gw", Protocol: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	// Replays race each other and the original, with and without lbip.
	var wg sync.WaitGroup
	got := make([]Reservation, 10)
	for i := range got {
		wg.Go(func() {
			req := Request{Owner: "tenant/gw", Protocol: "UDP"}
			if i%2 == 0 {
				req.LBIP = first.IP
			}
			got[i], err = svc.Reserve(ctx, req)
		})
	}
	wg.Wait()
	for _, r := range got {
		if r.Port != first.Port || r.EntryPoint != first.EntryPoint {
			t.Errorf("replay = %s %d, want %s %d", r.EntryPoint, r.Port, first.EntryPoint, first.Port)
		}
	}
	all, _ := svc.List(ctx, Filter{})
	if len(all) != 1 {
		t.Errorf("after replays the ledgers hold %d entries, want 1: %+v", len(all), all)
	}
	// TCP is a separate space: the same owner gets a TCP port too.
	tcp, err := svc.Reserve(ctx, Request{Owner: "tenant/gw", Protocol: "TCP"})
	if err != nil || tcp.Protocol != portalloc.TCP {
		t.Errorf("TCP for the same owner = %+v, %v", tcp, err)
	}
}

func TestChoice(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, portalloc.Range{Min: 20000, Max: 20009})
	ctx := context.Background()
	if _, err := svc.Reserve(ctx, Request{Owner: "x"}); !errors.Is(err, ErrNoEntryPoint) || problem.Status(err) != 503 {
		t.Errorf("Reserve without entry points = %v, want ErrNoEntryPoint (503)", err)
	}
	cp.LoadBalancer(t, ns, "pending", "", nil) // no address yet: never chosen
	if _, err := svc.Reserve(ctx, Request{Owner: "x"}); !errors.Is(err, ErrNoEntryPoint) {
		t.Errorf("Reserve with only an unaddressed entry point = %v, want ErrNoEntryPoint", err)
	}
	// busy already serves 5 of the 10 ports; roomy serves none of them.
	var ports []corev1.ServicePort
	for p := int32(20000); p < 20005; p++ {
		ports = append(ports, corev1.ServicePort{Name: fmt.Sprintf("p%d", p), Port: p, Protocol: corev1.ProtocolTCP})
	}
	cp.LoadBalancer(t, ns, "busy", "192.0.2.20", nil, ports...)
	cp.LoadBalancer(t, ns, "roomy", "192.0.2.21", nil)
	waitCached(t, svc, func(eps []entrypoint.EntryPoint) bool {
		n := 0
		for _, ep := range eps {
			if ep.Address != "" {
				n++
			}
		}
		return n == 2
	})
	r, err := svc.Reserve(ctx, Request{Owner: "y"})
	if err != nil || r.EntryPoint != "service.roomy" {
		t.Errorf("Reserve = %+v, %v; want the entry point with the most free ports, service.roomy", r, err)
	}
	r, err = svc.Reserve(ctx, Request{Owner: "z", LBIP: "192.0.2.20"})
	if err != nil || r.EntryPoint != "service.busy" || r.Port != 20005 {
		t.Errorf("Reserve(lbip busy) = %+v, %v; want service.busy port 20005, past its own Service ports", r, err)
	}
	if _, err := svc.Reserve(ctx, Request{Owner: "w", LBIP: "198.51.100.1"}); !errors.Is(err, ErrUnknownAddress) || problem.Status(err) != 404 {
		t.Errorf("Reserve(unknown lbip) = %v, want ErrUnknownAddress (404)", err)
	}
}

func TestIngressNginxAndGatewayPortsInUse(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, portalloc.Range{Min: 20000, Max: 20003})
	ctx := context.Background()
	cp.LoadBalancer(t, ns, "ingress-nginx-controller", "192.0.2.30", map[string]string{"app.kubernetes.io/name": "ingress-nginx"})
	_, err := cp.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "tcp-services"},
		Data:       map[string]string{"20000": "other/app:1883", "20001": "other/app2:1883"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, err := svc.Reserve(ctx, Request{Owner: "a", LBIP: "192.0.2.30"})
	if err != nil || r.Port != 20002 {
		t.Errorf("Reserve on ingress-nginx = %+v, %v; want 20002, past its tcp-services keys", r, err)
	}

	gw := gatewayclient.NewForConfigOrDie(cp.Config)
	if _, err := cp.CreateGateway(ctx, ns, "shared", "192.0.2.31", gatewayv1.Listener{Name: "udp-20000", Port: 20000, Protocol: gatewayv1.UDPProtocolType}); err != nil {
		t.Fatal(err)
	}
	_, err = gw.GatewayV1().ListenerSets(ns).Create(ctx, &gatewayv1.ListenerSet{
		ObjectMeta: metav1.ObjectMeta{Name: "more"},
		Spec: gatewayv1.ListenerSetSpec{
			ParentRef: gatewayv1.ParentGatewayReference{Name: "shared"},
			Listeners: []gatewayv1.ListenerEntry{{Name: "udp-20001", Port: 20001, Protocol: gatewayv1.UDPProtocolType}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Entry points are read from the API server's cache: wait until it has the
	// Gateway's address and the ListenerSet's listener.
	waitCached(t, svc, func(eps []entrypoint.EntryPoint) bool {
		for _, ep := range eps {
			if ep.ID() == "gateway.shared" && ep.Address != "" && ep.Used[portalloc.Key{Protocol: portalloc.UDP, Port: 20001}] {
				return true
			}
		}
		return false
	})
	r, err = svc.Reserve(ctx, Request{Owner: "b", Protocol: "UDP", LBIP: "192.0.2.31"})
	if err != nil || r.Port != 20002 || r.EntryPoint != "gateway.shared" {
		t.Errorf("Reserve on the Gateway = %+v, %v; want gateway.shared 20002, past its listeners and ListenerSet", r, err)
	}

	// Identify, which listings use, reads neither the tcp-services ConfigMap
	// nor the ListenerSet: each entry point's Used is its own ports alone.
	eps, err := svc.EntryPoints.Identify(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]map[portalloc.Key]bool{}
	for _, ep := range eps {
		used[ep.ID()] = ep.Used
	}
	tcp, udp := portalloc.Key{Protocol: portalloc.TCP, Port: 20000}, portalloc.Key{Protocol: portalloc.UDP, Port: 20001}
	if u := used["service.ingress-nginx-controller"]; u == nil || u[tcp] {
		t.Errorf("Identify: ingress-nginx Used = %v, want its Service's ports alone (not tcp-services' 20000)", u)
	}
	if u := used["gateway.shared"]; !u[portalloc.Key{Protocol: portalloc.UDP, Port: 20000}] || u[udp] {
		t.Errorf("Identify: the Gateway's Used = %v, want its own listener's UDP 20000, not the ListenerSet's 20001", u)
	}
}

func TestFullRange(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, portalloc.Range{Min: 20000, Max: 20001})
	cp.LoadBalancer(t, ns, "lb", "192.0.2.40", nil)
	ctx := context.Background()
	for _, o := range []string{"a", "b"} {
		if _, err := svc.Reserve(ctx, Request{Owner: o}); err != nil {
			t.Fatal(err)
		}
	}
	before := entriesOf(t, ns, "lb")
	_, err := svc.Reserve(ctx, Request{Owner: "c"})
	if !errors.Is(err, portalloc.ErrFull) || problem.Status(err) != 422 {
		t.Fatalf("Reserve on a full range = %v, want ErrFull (422)", err)
	}
	if d := problem.For(err).Detail; !strings.Contains(d, "20000-20001") {
		t.Errorf("detail %q does not name the range", d)
	}
	if after := entriesOf(t, ns, "lb"); len(after) != len(before) {
		t.Errorf("a refused reservation changed the ledger: %v", after)
	}
}

func TestTTLAndSweep(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, portalloc.Range{Min: 20000, Max: 20003})
	cp.LoadBalancer(t, ns, "lb", "192.0.2.50", nil)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	svc.Now = func() time.Time { return now }

	lapse, _ := svc.Reserve(ctx, Request{Owner: "lapses"})
	kept, _ := svc.Reserve(ctx, Request{Owner: "kept"})
	live, _ := svc.Reserve(ctx, Request{Owner: "live"})
	gone, _ := svc.Reserve(ctx, Request{Owner: "gone"})
	cp.LoadBalancer(t, ns, "app", "", nil)
	key := func(r Reservation) portalloc.Key { return portalloc.Key{Protocol: r.Protocol, Port: r.Port} }
	if _, _, err := svc.Bind(ctx, kept.EntryPoint, key(kept), "kept", ns+"/app"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Bind(ctx, gone.EntryPoint, key(gone), "gone", ns+"/deleted-app"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Bind(ctx, gone.EntryPoint, key(gone), "kept", ns+"/app"); problem.Status(err) != 409 {
		t.Errorf("Bind of another owner's port = %v, want 409", err)
	}

	// "live" renews; "lapses" does not.
	now = now.Add(9 * time.Minute)
	if _, err := svc.Reserve(ctx, Request{Owner: "live"}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Minute)
	res, err := svc.Sweep(ctx)
	if err != nil || res != (SweepResult{Expired: 1, Marked: 1, Claims: 1}) {
		t.Fatalf("first sweep = %+v, %v; want 1 expired, 1 marked, and the expired one's claim dropped", res, err)
	}
	res, err = svc.Sweep(ctx)
	if err != nil || res != (SweepResult{Freed: 1, Claims: 1}) {
		t.Fatalf("second sweep = %+v, %v; want 1 freed, and its claim dropped", res, err)
	}
	all, _ := svc.List(ctx, Filter{})
	held := map[string]int{}
	for _, r := range all {
		held[r.Owner] = r.Port
	}
	want := map[string]int{"kept": kept.Port, "live": live.Port}
	if fmt.Sprint(held) != fmt.Sprint(want) {
		t.Errorf("after expiry and two sweeps: %v, want %v", held, want)
	}
	// The lapsed port is free again: a newcomer gets the lowest free port.
	r, _ := svc.Reserve(ctx, Request{Owner: "newcomer"})
	if r.Port != lapse.Port {
		t.Errorf("newcomer got %d, want the lapsed %d", r.Port, lapse.Port)
	}
}

func TestReleaseValidation(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, wide)
	cp.LoadBalancer(t, ns, "lb", "192.0.2.60", nil)
	ctx := context.Background()
	r, _ := svc.Reserve(ctx, Request{Owner: "a"})
	k := portalloc.Key{Protocol: r.Protocol, Port: r.Port}
	tests := []struct {
		name   string
		id     string
		key    portalloc.Key
		owner  string
		status int
	}{
		{"bad id", "lb", k, "", 400},
		{"unknown entry point", "service.nope", k, "", 404},
		{"port zero", "service.lb", portalloc.Key{Protocol: "TCP", Port: 0}, "", 400},
		{"another owner", "service.lb", k, "b", 409},
	}
	for _, tc := range tests {
		if _, err := svc.Release(ctx, tc.id, tc.key, tc.owner); problem.Status(err) != tc.status {
			t.Errorf("Release(%s) = %v, want %d", tc.name, err, tc.status)
		}
	}
	for i := range 2 {
		ok, err := svc.Release(ctx, "service.lb", k, "a")
		if err != nil || ok != (i == 0) {
			t.Errorf("Release #%d = %v, %v; want %v, nil", i+1, ok, err, i == 0)
		}
	}
}

// waitCached waits until the cached entry-point list satisfies ok.
func waitCached(t *testing.T, svc *Service, ok func([]entrypoint.EntryPoint) bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		eps, err := svc.EntryPoints.List(context.Background(), false)
		if err == nil && ok(eps) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the API server's cache never showed the entry points")
}

// instances are n reservation services on one namespace's entry points, each
// with its own connections and store, as n getport instances.
func instances(t *testing.T, n int, ns string, r portalloc.Range, quota int) []*Service {
	out := make([]*Service, n)
	for i := range out {
		cfg := rest.CopyConfig(cp.Config)
		cfg.Dial = (&net.Dialer{}).DialContext
		out[i] = newService(kubernetes.NewForConfigOrDie(cfg), nil, ns, r)
		out[i].MaxPerNamespace = quota
	}
	return out
}

// TestDuplicatesAcrossInstances: every owner's request delivered to four
// instances at once gets one port in every answer; the blocks hold one entry
// and the claims one claim per owner, none left behind by the losers.
func TestDuplicatesAcrossInstances(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	cp.LoadBalancer(t, ns, "lb", "192.0.2.60", nil)
	svcs := instances(t, 4, ns, wide, 0)
	const owners = 25
	got := make([][]int, owners)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for o := range owners {
		for _, svc := range svcs {
			wg.Go(func() {
				r, err := svc.Reserve(context.Background(), Request{Owner: fmt.Sprintf("team-a/gw-%d", o)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got[o] = append(got[o], r.Port)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	seen := map[int]int{}
	for o, ports := range got {
		if slices.Min(ports) != slices.Max(ports) {
			t.Errorf("owner %d was answered ports %v, want one", o, ports)
		}
		if other, dup := seen[ports[0]]; dup {
			t.Errorf("port %d answered to owners %d and %d", ports[0], other, o)
		}
		seen[ports[0]] = o
	}
	if entries := entriesOf(t, ns, "lb"); len(entries) != owners {
		t.Errorf("blocks hold %d entries, want %d: %v", len(entries), owners, entries)
	}
	shards, err := svcs[0].Ledgers.AllClaims(context.Background(), ledger.BookFor(ns, "service", "lb"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, sh := range shards {
		n += len(sh.Claims.ByKey)
	}
	if n != owners {
		t.Errorf("claims = %d, want %d", n, owners)
	}
}

// TestQuotaHoldsAcrossInstances: twenty owners of one namespace, reserving at
// once through four instances, against a quota of five: five get a port,
// fifteen 403, and no port is left taken by a refused one.
func TestQuotaHoldsAcrossInstances(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	cp.LoadBalancer(t, ns, "lb", "192.0.2.61", nil)
	svcs := instances(t, 4, ns, wide, 5)
	var granted, refused atomic.Int32
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			_, err := svcs[i%4].Reserve(context.Background(), Request{Owner: fmt.Sprintf("team-q/gw-%d", i)})
			switch {
			case err == nil:
				granted.Add(1)
			case errors.Is(err, portalloc.ErrQuota) && problem.Status(err) == 403:
				refused.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if granted.Load() != 5 || refused.Load() != 15 {
		t.Errorf("granted %d, refused %d; want 5 and 15", granted.Load(), refused.Load())
	}
	if entries := entriesOf(t, ns, "lb"); len(entries) != 5 {
		t.Errorf("blocks hold %d entries, want 5: %v", len(entries), entries)
	}
}

// TestClaimOfATakenPort: a claim that names a port someone else holds (left
// by a crash, or edited by hand) does not give the owner that port: it gets
// a free one, and its claim names it.
func TestClaimOfATakenPort(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, wide)
	cp.LoadBalancer(t, ns, "lb", "192.0.2.62", nil)
	ctx := context.Background()
	other, err := svc.Reserve(ctx, Request{Owner: "team-b/other"})
	if err != nil {
		t.Fatal(err)
	}
	b := ledger.BookFor(ns, "service", "lb")
	if err := svc.Ledgers.Claims.Update(ctx, b.Claims("team-a/gw"), func(c *portalloc.Claims) error {
		c.Put(portalloc.TCP, portalloc.Claim{Owner: "team-a/gw", Port: other.Port, Since: time.Now().Unix()})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r, err := svc.Reserve(ctx, Request{Owner: "team-a/gw"})
	if err != nil || r.Port == other.Port {
		t.Fatalf("Reserve with a claim on another's port = %+v, %v; want another port", r, err)
	}
	c, err := svc.Ledgers.Claims.Get(ctx, b.Claims("team-a/gw"))
	if cl, ok := c.Find("team-a/gw", portalloc.TCP); err != nil || !ok || cl.Port != r.Port {
		t.Errorf("claim = %+v, %v; want port %d", cl, err, r.Port)
	}
}

// TestSweepDropsUnclaimed: a reservation whose claim was never written (its
// process died between the two writes) is not counted in any quota: the sweep
// frees it once it is older than the grace, and leaves a younger one.
func TestSweepDropsUnclaimed(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, wide)
	cp.LoadBalancer(t, ns, "lb", "192.0.2.63", nil)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	svc.Now = func() time.Time { return now }
	if _, err := svc.Reserve(ctx, Request{Owner: "team-a/claimed"}); err != nil {
		t.Fatal(err)
	}
	b := ledger.BookFor(ns, "service", "lb")
	put := func(port int, since time.Time) {
		if err := svc.Ledgers.Blocks.Update(ctx, b.Block(ledger.BlockOf(port)), func(l *portalloc.Ledger) error {
			l.Entries[portalloc.Key{Protocol: portalloc.TCP, Port: port}] = portalloc.Entry{Owner: "team-a/crashed",
				State: portalloc.Reserved, Since: since.Unix(), Expires: now.Add(time.Hour).Unix()}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	put(20100, now.Add(-2*claimGrace))
	put(20101, now)
	res, err := svc.Sweep(ctx)
	if err != nil || res != (SweepResult{Unclaimed: 1}) {
		t.Errorf("sweep = %+v, %v; want the one old unclaimed reservation dropped", res, err)
	}
	entries := entriesOf(t, ns, "lb")
	if _, ok := entries[portalloc.Key{Protocol: portalloc.TCP, Port: 20100}]; ok || len(entries) != 2 {
		t.Errorf("entries after the sweep = %v, want the claimed one and the young one", entries)
	}
}

// staleCache hides an entry point from reads that are not consistent, as an
// API server's watch cache that has not caught up would, and counts the
// consistent reads.
type staleCache struct {
	EntryPoints
	hidden     string
	consistent int
}

func (c *staleCache) Identify(ctx context.Context, consistent bool) ([]entrypoint.EntryPoint, error) {
	all, err := c.EntryPoints.Identify(ctx, true)
	if consistent {
		c.consistent++
		return all, err
	}
	return slices.DeleteFunc(all, func(ep entrypoint.EntryPoint) bool { return ep.ID() == c.hidden }), err
}

// TestListingConfirmsAMiss: listings read the entry points from the watch
// cache; one the cache does not show but whose ledger holds a live entry is
// looked for again, consistently, before it is left out. One found gone is
// not looked for again for a while, unless its ledger is written (it was
// recreated, and reserved on), and one whose entries have all lapsed not at
// all.
func TestListingConfirmsAMiss(t *testing.T) {
	cp.Require(t)
	svc, ns := testService(t, portalloc.Range{Min: 20000, Max: 20003})
	ctx := context.Background()
	cp.LoadBalancer(t, ns, "fresh", "192.0.2.60", nil)
	cp.LoadBalancer(t, ns, "other", "192.0.2.61", nil)
	if _, err := svc.Reserve(ctx, Request{Owner: "a", EntryPoint: "service.fresh"}); err != nil {
		t.Fatal(err)
	}
	stale := &staleCache{EntryPoints: svc.EntryPoints}
	svc.EntryPoints = stale
	list := func(f Filter, wantReads int, want ...string) {
		t.Helper()
		got, err := svc.List(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		var owners []string
		for _, r := range got {
			owners = append(owners, r.EntryPoint+"/"+r.Owner)
		}
		slices.Sort(owners)
		if !slices.Equal(owners, want) || stale.consistent != wantReads {
			t.Errorf("List(%+v) = %v after %d consistent reads; want %v after %d", f, owners, stale.consistent, want, wantReads)
		}
	}
	list(Filter{}, 0, "service.fresh/a") // the cache is up to date: no consistent read
	stale.hidden = "service.fresh"
	list(Filter{}, 1, "service.fresh/a")
	list(Filter{EntryPoint: "service.fresh"}, 2, "service.fresh/a")
	list(Filter{EntryPoint: "service.other"}, 2) // named and shown: no second read

	// It goes, its port held: looked for once, then taken as gone.
	deleteService := func() {
		t.Helper()
		if err := cp.Client.CoreV1().Services(ns).Delete(ctx, "fresh", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deleteService()
	stale.hidden = ""
	list(Filter{}, 3)
	list(Filter{}, 3)

	// It is recreated and reserved on, while the cache has not caught up:
	// its ledger was written, so it is looked for again.
	cp.LoadBalancer(t, ns, "fresh", "192.0.2.60", nil)
	stale.hidden = "service.fresh"
	if _, err := svc.Reserve(ctx, Request{Owner: "b", EntryPoint: "service.fresh"}); err != nil {
		t.Fatal(err)
	}
	list(Filter{}, 4, "service.fresh/a", "service.fresh/b")
	stale.hidden = ""
	list(Filter{}, 4, "service.fresh/a", "service.fresh/b")

	// Gone again: looked for once a minute while its entries live, not once
	// they have all lapsed.
	deleteService()
	list(Filter{}, 5)
	list(Filter{}, 5)
	later := time.Now().Add(absentFor + time.Second)
	svc.Now = func() time.Time { return later }
	list(Filter{}, 6)
	lapsed := time.Now().Add(time.Hour)
	svc.Now = func() time.Time { return lapsed }
	list(Filter{}, 6)
}
