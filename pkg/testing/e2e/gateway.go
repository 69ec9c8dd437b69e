//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/expose"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// The Gateway entry point's declared ports: Traefik opens only the ports it
// was started with (traefik.yaml's gw-20000 to gw-20004).
const (
	traefikGateway   = "traefik"
	traefikPortFirst = 20000
	traefikPorts     = 5
)

// gatewayThroughTraefik adds a Gateway entry point that Traefik implements,
// drives traefikPorts gateways through the event chain onto it (each names
// the Gateway's address as its lbip) and reaches each over TCP through
// Traefik. One more gateway gets the next port, which Traefik was not
// started with: berth must answer endpoint.failed with Traefik's reason, and
// hold nothing for it afterwards.
func gatewayThroughTraefik(t *testing.T, ctx context.Context, hc *http.Client, outcomes *outcomeSink, broker, token, repoURL string) {
	gc, err := gatewayclient.NewForConfig(env.cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	// A Gateway needs one listener: an HTTP one on Traefik's web entry point,
	// outside berth's port range. Traefik has no ListenerSets: berth puts its
	// listeners on the Gateway.
	gw := &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: traefikGateway, Namespace: ingressNS,
			Annotations: map[string]string{entrypoint.AnnotationListeners: entrypoint.ListenersOnGateway}},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "traefik", Listeners: []gatewayv1.Listener{
			{Name: "web", Port: 8000, Protocol: gatewayv1.HTTPProtocolType},
		}},
	}
	if _, err := gc.GatewayV1().Gateways(ingressNS).Create(ctx, gw, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var addr string
	if err := eventually(ctx, 3*time.Minute, func() error {
		g, err := gc.GatewayV1().Gateways(ingressNS).Get(ctx, traefikGateway, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(g.Status.Addresses) == 0 || !gatewayAccepted(g) {
			return fmt.Errorf("gateway %s: addresses %v, conditions %v", traefikGateway, g.Status.Addresses, g.Status.Conditions)
		}
		addr = g.Status.Addresses[0].Value
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reportf("gateway: Traefik accepted Gateway %s/%s and gave it %s (its LoadBalancer Service's, from MetalLB) in %s",
		ingressNS, traefikGateway, addr, time.Since(t0).Round(time.Millisecond))

	post := func(e event.Event) { postAs(t, hc, broker, token, e) }
	t1 := time.Now()
	var wg sync.WaitGroup
	for i := 1; i <= traefikPorts; i++ {
		wg.Go(func() { post(gatewayInstall(fmt.Sprintf("gt-%02d", i), repoURL, addr)) })
	}
	wg.Wait()
	got := map[string]events.EndpointExposedData{}
	for len(got) < traefikPorts {
		d := outcomes.next(t, events.EndpointExposed, 5*time.Minute)
		if strings.HasPrefix(d.Owner, appsNS+"/gt-") {
			got[d.Owner] = d
		}
	}
	exposedIn := time.Since(t1)
	var ports []int
	for owner, d := range got {
		if d.IP != addr || d.Backend != "gateway-api" || d.EntryPoint != "gateway."+traefikGateway {
			t.Errorf("%s exposed on %s (%s, %s), want %s through gateway.%s", owner, d.IP, d.Backend, d.EntryPoint, addr, traefikGateway)
		}
		ports = append(ports, d.Port)
		want := "hello from " + owner[strings.Index(owner, "/")+1:]
		a := net.JoinHostPort(d.IP, strconv.Itoa(d.Port))
		var greeting string
		if err := eventually(ctx, time.Minute, func() (err error) { greeting, err = tcpGreeting(a); return err }); err != nil || greeting != want {
			t.Errorf("%s: TCP %s through Traefik: greeting %q, %v", owner, a, greeting, err)
		}
	}
	slices.Sort(ports)
	if want := []int{20000, 20001, 20002, 20003, 20004}; !slices.Equal(ports, want) {
		t.Errorf("ports %v, want Traefik's declared %v", ports, want)
	}
	if t.Failed() {
		t.FailNow()
	}
	reportf("gateway: %d gateways by install.requested (lbip %s) -> endpoint.exposed, confirmed by Traefik's listener and TCPRoute status, in %s; each answered TCP through Traefik on %s:%v",
		traefikPorts, addr, exposedIn.Round(time.Millisecond), addr, ports)

	// The next port is one Traefik was not started with.
	owner := appsNS + "/gt-06"
	t2 := time.Now()
	post(gatewayInstall("gt-06", repoURL, addr))
	e := outcomes.nextEvent(t, 5*time.Minute, events.EndpointFailed)
	var f function.Failure
	if err := e.DataAs(&f); err != nil {
		t.Fatal(err)
	}
	if f.Problem.Status != http.StatusUnprocessableEntity || !strings.Contains(f.Problem.Detail, "PortUnavailable") {
		t.Errorf("endpoint.failed %+v, want 422 naming Traefik's PortUnavailable", f.Problem)
	}
	refusedIn := time.Since(t2)
	refused := traefikPortFirst + traefikPorts
	if held := ledgerEntries(t, ctx, owner); len(held) > 0 {
		t.Errorf("%s still holds %v after its refusal", owner, held)
	}
	if held := ledgerEntries(t, ctx, expose.RefusedOwner); !slices.Contains(held, portalloc.Key{Protocol: portalloc.TCP, Port: refused}.String()) {
		t.Errorf("the refused port %d is not held by %s: %v", refused, expose.RefusedOwner, held)
	}
	g, err := gc.GatewayV1().Gateways(ingressNS).Get(ctx, traefikGateway, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(g.Spec.Listeners, func(l gatewayv1.Listener) bool { return int(l.Port) == refused }) {
		t.Errorf("the Gateway still has a listener on the refused port %d", refused)
	}
	if routes, err := gc.GatewayV1().TCPRoutes(appsNS).List(ctx, metav1.ListOptions{}); err != nil || len(routes.Items) != traefikPorts {
		t.Errorf("TCPRoutes in %s: %d, %v; want the %d exposed only", appsNS, len(routes.Items), err, traefikPorts)
	}
	// The exposed ones still answer once Traefik has taken the Gateway back.
	for owner, d := range got {
		a := net.JoinHostPort(d.IP, strconv.Itoa(d.Port))
		if err := eventually(ctx, time.Minute, func() error { _, err := tcpGreeting(a); return err }); err != nil {
			t.Errorf("%s: TCP %s after the refusal: %v", owner, a, err)
		}
	}
	reportf("gateway: %s on port %d, which Traefik was not started with -> endpoint.failed 422 in %s: %q; taken back (no listener, no route, no port held by the release; the port held by %s a while)",
		owner, refused, refusedIn.Round(time.Millisecond), f.Problem.Detail, expose.RefusedOwner)
}

func gatewayAccepted(g *gatewayv1.Gateway) bool {
	for _, c := range g.Status.Conditions {
		if c.Type == "Accepted" {
			return c.Status == metav1.ConditionTrue && c.ObservedGeneration == g.Generation
		}
	}
	return false
}

// gatewayInstall is an install.requested for gateway name, exposed on the
// entry point at lbip.
func gatewayInstall(name, repoURL, lbip string) event.Event {
	return tenantEvent("install-"+name, events.InstallRequested, appsNS+"/"+name, map[string]any{
		"privateChartsRepo": repoURL, "chartName": "echo-gateway", "releaseName": name, "namespace": appsNS,
		"values": map[string]any{"image": env.echo, "settings.greeting": "hello from " + name},
		"expose": events.Expose{ServicePort: intstr.FromString("tcp"), Protocol: "TCP", LBIP: lbip},
	})
}
