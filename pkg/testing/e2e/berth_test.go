//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/cluster"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
	"github.com/berth-dev/berth/pkg/testing/localrun"
	"github.com/berth-dev/berth/pkg/testing/otlpsink"
)

const (
	berthNS   = "berth"
	appsNS    = "berth-apps"
	ingressNS = "berth-ingress"
	gateways  = 20
)

var (
	ksvcGVR     = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}
	routeGVR    = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "routes"}
	triggerGVR  = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "triggers"}
	brokerGVR   = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "brokers"}
	pingGVR     = schema.GroupVersionResource{Group: "sources.knative.dev", Version: "v1", Resource: "pingsources"}
	functions   = []string{"install", "getport", "setingress"}
	coldStartOn = map[string]string{"install": "/releases", "getport": "/ports", "setingress": "/exposures"}
)

// TestBerthOnCluster deploys berth from config/ on Knative, and drives 20 sample
// gateways through the event chain to real TCP and UDP traffic on one shared IP.
func TestBerthOnCluster(t *testing.T) {
	ctx := context.Background()
	c := env.cluster
	cs := c.Client
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	logCtx, stopLogs := context.WithCancel(ctx)
	t.Cleanup(stopLogs)
	keepPodLogs(logCtx, c.PodLogs(), filepath.Join(c.Logs(), "pods"), berthNS, "knative-eventing")
	if err := deployKnative(ctx, c); err != nil {
		t.Fatal(err)
	}

	// The shared-IP entry point: a LoadBalancer Service MetalLB gives an address.
	for _, ns := range []string{appsNS, ingressNS} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ep := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "shared-ip", Annotations: map[string]string{"metallb.io/allow-shared-ip": "berth"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
			Ports: []corev1.ServicePort{{Name: "placeholder", Port: 9, Protocol: corev1.ProtocolTCP}}},
	}
	if _, err := cs.CoreV1().Services(ingressNS).Create(ctx, ep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sharedIP, err := lbAddress(ctx, cs, ingressNS, "shared-ip")
	if err != nil {
		t.Fatal(err)
	}
	reportf("entry point: berth-ingress/shared-ip got %s from MetalLB", sharedIP)

	// The sample chart, served where the install function's pod can fetch it.
	chart, err := chartrepo.Package(filepath.Join(env.root, "charts", "echo-gateway"), "0.1.0")
	if err != nil {
		t.Fatal(err)
	}
	privileged, err := chartrepo.FromTemplates("privileged", map[string]string{"pod.yaml": chartrepo.PrivilegedPod})
	if err != nil {
		t.Fatal(err)
	}
	sample, err := sampleChart(env.echo)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := chartrepo.StartOn(c.NodeIP.String(), chart, privileged, sample)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()

	// An OTLP receiver where the functions' pods reach it: their traces and
	// metrics, configured through berth-config's OTEL_* settings.
	telemetry, err := otlpsink.Start(net.JoinHostPort(c.NodeIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer telemetry.Close()
	urls := deployBerth(t, ctx, dyn, repo.RepoURL, telemetry.URL())
	outcomes := startOutcomeSink(t, ctx, dyn, c)
	waitTriggers(t, ctx, dyn)
	sinksByRef(t, ctx, dyn, urls)
	hc := clusterHTTP(c)
	broker, audience := brokerAddress(t, ctx, dyn)
	// The tenant: a ServiceAccount of the apps namespace, bound to berth-tenant
	// there; its tokens for berth's functions and for the Broker.
	tenant := tenantTokens(t, ctx, appsNS, "e2e-client", "berth-tenant", audience)

	// Cold start: each function from zero, through Knative's ingress (Traefik) and the activator.
	step(t, "cold start", func(t *testing.T) {
		waitZero(t, ctx, "after deploy")
		for _, fn := range functions {
			url := urls[fn] + coldStartOn[fn]
			t0 := time.Now()
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Authorization", "Bearer "+tenant.berth)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("%s cold start: %v", fn, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s cold start: GET %s = %s", fn, url, resp.Status)
			}
			reportf("cold start: %s from zero to 200 on GET %s in %s", fn, coldStartOn[fn], time.Since(t0).Round(time.Millisecond))
		}
	})

	// Who may call: without a token a function answers 401; the
	// Broker refuses a ServiceAccount no EventPolicy lists, a tenant's event for
	// another namespace, and a tenant's event of a type only berth sends.
	step(t, "refusals", func(t *testing.T) {
		refusals(t, ctx, hc, urls, broker, audience)
	})

	post := func(t *testing.T, hc *http.Client, url string, e event.Event) { postAs(t, hc, url, tenant.broker, e) }

	// Warm-up: Knative's in-memory channel fans each event out to every
	// subscription and, while its token cache is cold, mints an OIDC token per
	// delivery behind its client's rate limit. One event through the whole
	// fan-out (a chart the repository lacks: install.failed comes back) fills it.
	step(t, "warm-up", func(t *testing.T) {
		tw := time.Now()
		post(t, hc, broker, tenantEvent("warm-up", events.InstallRequested, "", map[string]any{
			"privateChartsRepo": repo.RepoURL, "chartName": "no-such-chart", "releaseName": "warm-up", "namespace": appsNS}))
		outcomes.nextEvent(t, 3*time.Minute, events.InstallFailed)
		reportf("warm-up: one install.requested through the fan-out with cold OIDC token caches -> install.failed in %s", time.Since(tw).Round(time.Millisecond))
	})

	// What the steps hand on: the first event's time, each gateway's TCP and
	// UDP endpoints, and the gateway uninstalled.
	var (
		t0       time.Time
		tcp, udp map[string]events.EndpointExposedData
		gone     = appsNS + "/gw-07"
	)
	// 20 gateways, each through one install.requested event.
	step(t, "20 gateways by install.requested", func(t *testing.T) {
		t0 = time.Now()
		var wg sync.WaitGroup
		for i := 1; i <= gateways; i++ {
			wg.Go(func() { post(t, hc, broker, installRequested(i, repo.RepoURL, env.echo)) })
		}
		wg.Wait()
		tcp = map[string]events.EndpointExposedData{}
		for len(tcp) < gateways {
			d := outcomes.next(t, events.EndpointExposed, 8*time.Minute)
			tcp[d.Owner] = d
		}
		exposedIn := time.Since(t0)
		reportf("20 gateways: install.requested ×20 -> 20 endpoint.exposed (TCP) in %s", exposedIn.Round(time.Millisecond))
	})

	// The UDP port of each gateway, through port.requested.
	step(t, "UDP ports by port.requested", func(t *testing.T) {
		t1 := time.Now()
		var wg sync.WaitGroup
		for _, d := range tcp {
			wg.Go(func() { post(t, hc, broker, portRequested(d)) })
		}
		wg.Wait()
		udp = map[string]events.EndpointExposedData{}
		for len(udp) < gateways {
			d := outcomes.next(t, events.EndpointExposed, 5*time.Minute)
			if d.Protocol == "UDP" {
				udp[d.Owner] = d
			}
		}
		reportf("20 gateways: port.requested (UDP) ×20 -> 20 endpoint.exposed in %s", time.Since(t1).Round(time.Millisecond))
	})

	// One trace per gateway, through the real Broker: each install.requested
	// carried its own traceparent, and the chain's three hops continue it.
	step(t, "traces through the Broker", func(t *testing.T) {
		traces(t, ctx, telemetry)
	})

	// Where is my gateway: install answers the endpoints the chain gave.
	step(t, "GET /releases/{ns}/{name}", func(t *testing.T) {
		owner := appsNS + "/gw-01"
		releaseEndpoints(t, hc, urls["install"], tenant.berth, tcp[owner], udp[owner])
	})

	// Traffic from the node to <shared ip>:<port>, TCP and UDP, for each.
	step(t, "traffic on the shared IP", func(t *testing.T) {
		t2 := time.Now()
		seen := map[int]string{}
		for owner, d := range tcp {
			name := owner[strings.Index(owner, "/")+1:]
			if d.IP != sharedIP {
				t.Errorf("%s exposed on %s, want the shared %s", owner, d.IP, sharedIP)
			}
			if prev, dup := seen[d.Port]; dup {
				t.Errorf("%s and %s both got TCP port %d", owner, prev, d.Port)
			}
			seen[d.Port] = owner
			want := "hello from " + name
			addr := net.JoinHostPort(d.IP, strconv.Itoa(d.Port))
			var greeting string
			if err := eventually(ctx, 3*time.Minute, func() (err error) { greeting, err = tcpGreeting(addr); return err }); err != nil || greeting != want {
				t.Errorf("%s: TCP %s: greeting %q, %v", owner, addr, greeting, err)
			}
			u := udp[owner]
			if u.IP != d.IP || u.Port != d.Port {
				t.Errorf("%s: UDP on %s:%d, want the TCP port's %s:%d", owner, u.IP, u.Port, d.IP, d.Port)
			}
			uaddr := net.JoinHostPort(u.IP, strconv.Itoa(u.Port))
			var answer string
			if err := eventually(ctx, time.Minute, func() (err error) { answer, err = udpExchange(uaddr); return err }); err != nil || answer != want+": ping" {
				t.Errorf("%s: UDP %s: answer %q, %v", owner, uaddr, answer, err)
			}
		}
		if t.Failed() {
			t.FailNow()
		}
		reportf("20 gateways: all answered TCP (greeting + echo) and UDP on %s, each on one port for both, %d distinct ports, in %s after exposure; total %s from the first event",
			sharedIP, len(seen), time.Since(t2).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	})

	// Uninstall one: its ports stop answering and go back to the pool.
	step(t, "uninstall", func(t *testing.T) {
		t3 := time.Now()
		post(t, hc, broker, uninstallRequested(gone))
		outcomes.next(t, events.ReleaseUninstalled, 3*time.Minute)
		addr := net.JoinHostPort(sharedIP, strconv.Itoa(tcp[gone].Port))
		if err := eventually(ctx, 2*time.Minute, func() error {
			if _, err := tcpGreeting(addr); err == nil {
				return fmt.Errorf("%s still answers", addr)
			}
			if l := ledgerEntries(t, ctx, gone); len(l) > 0 {
				return fmt.Errorf("ledger still holds %v for %s", l, gone)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := udpExchange(net.JoinHostPort(sharedIP, strconv.Itoa(udp[gone].Port))); err == nil {
			t.Errorf("UDP %d still answers after uninstall", udp[gone].Port)
		}
		reportf("uninstall: %s's TCP %d and UDP %d stopped answering and left the ledger %s after uninstall.requested",
			gone, tcp[gone].Port, udp[gone].Port, time.Since(t3).Round(time.Millisecond))
	})

	// The freed port is the lowest free one again: the next gateway gets it.
	step(t, "reuse of the freed port", func(t *testing.T) {
		post(t, hc, broker, installRequested(21, repo.RepoURL, env.echo))
		d := outcomes.next(t, events.EndpointExposed, 5*time.Minute)
		for d.Owner != appsNS+"/gw-21" || d.Protocol != "TCP" {
			d = outcomes.next(t, events.EndpointExposed, 5*time.Minute)
		}
		if d.Port != tcp[gone].Port {
			t.Errorf("gw-21 got port %d, want the freed %d", d.Port, tcp[gone].Port)
		}
		if err := eventually(ctx, 3*time.Minute, func() error {
			g, err := tcpGreeting(net.JoinHostPort(d.IP, strconv.Itoa(d.Port)))
			if err == nil && g != "hello from gw-21" {
				return fmt.Errorf("greeting %q", g)
			}
			return err
		}); err != nil {
			t.Fatal(err)
		}
		reportf("reuse: gw-21 got the freed port %d and answers on it", d.Port)
	})

	// Bad requests through the chain: each comes back as install.failed with a
	// 4xx problem, and nothing is installed.
	step(t, "bad input through the chain", func(t *testing.T) {
		bad := []struct {
			name   string
			data   map[string]any
			status int
		}{
			{"namespace not allowed", map[string]any{"privateChartsRepo": repo.RepoURL, "chartName": "echo-gateway", "releaseName": "bad-1", "namespace": "kube-system"}, 403},
			{"chart source not allowed", map[string]any{"privateChartsRepo": "http://169.254.169.254/latest", "chartName": "echo-gateway", "releaseName": "bad-2", "namespace": appsNS}, 403},
			{"shell in the release name", map[string]any{"privateChartsRepo": repo.RepoURL, "chartName": "echo-gateway", "releaseName": "gw;rm -rf /", "namespace": appsNS}, 400},
			{"no such chart", map[string]any{"privateChartsRepo": repo.RepoURL, "chartName": "no-such-chart", "releaseName": "bad-4", "namespace": appsNS}, 422},
			{"a privileged hostPath pod (Pod Security)", map[string]any{"privateChartsRepo": repo.RepoURL, "chartName": "privileged", "releaseName": "bad-5", "namespace": appsNS}, 403},
		}
		before := releaseCount(t, ctx)
		for i, b := range bad {
			post(t, hc, broker, tenantEvent(fmt.Sprintf("bad-%d", i+1), events.InstallRequested, "", b.data))
			e := outcomes.nextEvent(t, 3*time.Minute, events.InstallFailed)
			var f struct {
				Problem struct {
					Status int `json:"status"`
				} `json:"problem"`
				CauseID string `json:"causeId"`
			}
			if err := e.DataAs(&f); err != nil {
				t.Fatal(err)
			}
			if f.Problem.Status != b.status || f.CauseID != fmt.Sprintf("bad-%d", i+1) {
				t.Errorf("%s: install.failed %s, want status %d for bad-%d", b.name, e.Data(), b.status, i+1)
			}
		}
		if after := releaseCount(t, ctx); after != before {
			t.Errorf("bad requests changed the release records: %d, then %d", before, after)
		}
		if _, err := cs.CoreV1().Pods(appsNS).Get(ctx, "bad-5", metav1.GetOptions{}); err == nil {
			t.Error("the privileged pod exists")
		}
		if t.Failed() {
			t.FailNow()
		}
		reportf("bad input: %d bad install.requested events (a privileged hostPath pod among them, refused by Pod Security) each came back as install.failed with its 4xx, and no release was written", len(bad))
	})

	// The 2018 sample app's flow, over HTTP with a token: install by form
	// post, setrule the serviceName it answered by form post, and reach the
	// gateway at the ip:port setrule answered. No namespace is named: install
	// and setingress, as config/ ships them, agree on where.
	step(t, "the 2018 sample flow", func(t *testing.T) {
		seedFlow(t, ctx, hc, urls, tenant.berth, sharedIP)
	})

	// A Gateway entry point that Traefik implements: gateways exposed through
	// berth's Gateway API backend answer TCP through it, and a port Traefik
	// cannot serve is reported failed with its reason and taken back. Last, as
	// requests that name no lbip may pick any entry point.
	step(t, "Gateway entry point through Traefik", func(t *testing.T) {
		gatewayThroughTraefik(t, ctx, hc, outcomes, broker, tenant.broker, repo.RepoURL)
	})

	step(t, "scale to zero", func(t *testing.T) { waitZero(t, ctx, "after the gateways") })
}

// step runs one step of the e2e as a subtest, so that a failure names its
// step; the steps after a failed one do not run, as each builds on the last.
func step(t *testing.T, name string, f func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, f) {
		t.FailNow()
	}
}

// deployBerth builds berth's images with ko, applies config/ as shipped (the
// chart source allowed: the test's repository; telemetry to the test's
// receiver), and waits until each function's Knative Service is Ready: its
// revision, and its Route through Traefik's KIngress. It returns each
// function's URL, the address Knative's ingress answers on.
func deployBerth(t *testing.T, ctx context.Context, dyn dynamic.Interface, repoURL, otlp string) map[string]string {
	t.Helper()
	t0 := time.Now()
	manifest, err := env.images.resolve(ctx, env.root, "berth", filepath.Join(env.root, "ko.yaml"), "config/")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := controlplane.Decode(manifest)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == "berth-config" {
			_ = unstructured.SetNestedField(o.Object, repoURL+"/", "data", "ALLOWED_CHART_SOURCES")
			// Named as 2018 clients name their repository.
			_ = unstructured.SetNestedField(o.Object, "stable="+repoURL, "data", "CHART_REPOSITORIES")
			// The repository is on the node's own address.
			_ = unstructured.SetNestedField(o.Object, "true", "data", "ALLOW_PRIVATE_CHART_SOURCES")
			// Telemetry to the test's receiver, exported promptly.
			_ = unstructured.SetNestedField(o.Object, otlp, "data", "OTEL_EXPORTER_OTLP_ENDPOINT")
			_ = unstructured.SetNestedField(o.Object, "200", "data", "OTEL_BSP_SCHEDULE_DELAY")
			_ = unstructured.SetNestedField(o.Object, "2000", "data", "OTEL_METRIC_EXPORT_INTERVAL")
		}
	}
	if err := env.cluster.Apply(ctx, encode(objs), 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	urls, revisions := map[string]string{}, map[string]string{}
	for _, fn := range functions {
		if err := eventually(ctx, 5*time.Minute, func() error {
			ks, err := dyn.Resource(ksvcGVR).Namespace(berthNS).Get(ctx, fn, metav1.GetOptions{})
			if err != nil {
				return err
			}
			rev, _, _ := unstructured.NestedString(ks.Object, "status", "latestReadyRevisionName")
			url, _, _ := unstructured.NestedString(ks.Object, "status", "url")
			if status, reason := conditionOf(ks, "Ready"); status != "True" || url == "" {
				return fmt.Errorf("ksvc %s: Ready=%s (%s): %v", fn, status, reason, ks.Object["status"])
			}
			rt, err := dyn.Resource(routeGVR).Namespace(berthNS).Get(ctx, fn, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if status, reason := conditionOf(rt, "Ready"); status != "True" {
				return fmt.Errorf("route %s: Ready=%s (%s)", fn, status, reason)
			}
			urls[fn], revisions[fn] = url, rev
			return nil
		}); err != nil {
			t.Fatalf("%v\n%s", err, podProblems(ctx, env.cluster.Client, berthNS))
		}
	}
	reportf("berth: built with ko, applied from config/ as shipped (Triggers and PingSource by ref), revisions %v; every Route Ready through Traefik's KIngress in %s; URLs %v",
		revisions, time.Since(t0).Round(time.Second), urls)
	return urls
}

func condition(o *unstructured.Unstructured, typ string) string {
	s, _ := conditionOf(o, typ)
	return s
}

func conditionOf(o *unstructured.Unstructured, typ string) (status, reason string) {
	conds, _, _ := unstructured.NestedSlice(o.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ {
			s, _ := m["status"].(string)
			r, _ := m["reason"].(string)
			return s, r
		}
	}
	return "", ""
}

// waitTriggers waits until every Trigger in berth is Ready.
func waitTriggers(t *testing.T, ctx context.Context, dyn dynamic.Interface) {
	t.Helper()
	if err := eventually(ctx, 3*time.Minute, func() error {
		list, err := dyn.Resource(triggerGVR).Namespace(berthNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for i := range list.Items {
			if tr := &list.Items[i]; condition(tr, "Ready") != "True" {
				return fmt.Errorf("trigger %s not ready: %v", tr.GetName(), tr.Object["status"])
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// sinksByRef checks that config/'s Triggers and PingSource, which name the
// functions' Knative Services by ref, resolved to the URLs Knative's ingress
// answers on, and are Ready.
func sinksByRef(t *testing.T, ctx context.Context, dyn dynamic.Interface, urls map[string]string) {
	t.Helper()
	n := map[string]int{}
	check := func(gvr schema.GroupVersionResource, path, uriField string) {
		if err := eventually(ctx, 2*time.Minute, func() error {
			n[gvr.Resource] = 0
			list, err := dyn.Resource(gvr).Namespace(berthNS).List(ctx, metav1.ListOptions{})
			if err != nil {
				return err
			}
			for i := range list.Items {
				o := &list.Items[i]
				name, ok, _ := unstructured.NestedString(o.Object, "spec", path, "ref", "name")
				if !ok {
					continue // the test's own outcome Triggers, by URI
				}
				got, _, _ := unstructured.NestedString(o.Object, "status", uriField)
				if condition(o, "Ready") != "True" || got != urls[name] {
					return fmt.Errorf("%s %s: Ready=%s, %s %q; want %q", o.GetKind(), o.GetName(), condition(o, "Ready"), uriField, got, urls[name])
				}
				n[gvr.Resource]++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	check(triggerGVR, "subscriber", "subscriberUri")
	check(pingGVR, "sink", "sinkUri")
	if n["triggers"] == 0 || n["pingsources"] != 1 {
		t.Fatalf("by ref: %v, want berth's Triggers and its PingSource", n)
	}
	reportf("berth: %d Triggers and %d PingSource, by ref as config/ ships them, resolved to the Knative Services' URLs and Ready", n["triggers"], n["pingsources"])
}

// waitZero waits until no pod of a berth function runs.
func waitZero(t *testing.T, ctx context.Context, when string) {
	t.Helper()
	t0 := time.Now()
	if err := eventually(ctx, 5*time.Minute, func() error {
		pods, err := env.cluster.Client.CoreV1().Pods(berthNS).List(ctx, metav1.ListOptions{LabelSelector: "serving.knative.dev/service"})
		if err != nil {
			return err
		}
		if n := len(pods.Items); n > 0 {
			return fmt.Errorf("%d function pods still running", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reportf("scale to zero %s: every function at zero pods after %s", when, time.Since(t0).Round(time.Second))
}

// brokerAddress waits for the Broker to be Ready with an OIDC audience and
// config/'s EventPolicies applied, and returns its URL and audience.
func brokerAddress(t *testing.T, ctx context.Context, dyn dynamic.Interface) (string, string) {
	t.Helper()
	var url, aud string
	if err := eventually(ctx, 3*time.Minute, func() error {
		b, err := dyn.Resource(brokerGVR).Namespace(berthNS).Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return err
		}
		url, _, _ = unstructured.NestedString(b.Object, "status", "address", "url")
		aud, _, _ = unstructured.NestedString(b.Object, "status", "address", "audience")
		policies, _, _ := unstructured.NestedSlice(b.Object, "status", "policies")
		if url == "" || aud == "" || len(policies) < 2 || condition(b, "Ready") != "True" {
			return fmt.Errorf("broker not ready with an audience and its EventPolicies: %v", b.Object["status"])
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	reportf("broker: Ready, audience %s, EventPolicies applied", aud)
	return url, aud
}

// tokens are one ServiceAccount's bearer tokens: for berth's functions (the
// audience berth) and for the Broker.
type tokens struct{ berth, broker string }

// tenantTokens makes ServiceAccount ns/name (bound to role in ns, if set) and
// mints its tokens.
func tenantTokens(t *testing.T, ctx context.Context, ns, name, role, brokerAudience string) tokens {
	t.Helper()
	cs := env.cluster.Client
	if err := localrun.ServiceAccount(ctx, cs, ns, name, role); err != nil {
		t.Fatal(err)
	}
	mint := func(aud string) string {
		tok, err := localrun.Token(ctx, cs, ns, name, aud, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	return tokens{berth: mint("berth"), broker: mint(brokerAudience)}
}

// refusals checks who may not call: a function's Revision without a token,
// and posts to the Broker that no EventPolicy admits. Nothing is installed.
func refusals(t *testing.T, ctx context.Context, hc *http.Client, urls map[string]string, broker, audience string) {
	t.Helper()
	before := releaseCount(t, ctx)
	for _, fn := range functions {
		url := urls[fn] + "/"
		body, _ := json.Marshal(newEvent("direct-"+fn, events.InstallRequested, "", map[string]any{"chartName": "echo-gateway", "namespace": appsNS}))
		resp, err := hc.Post(url, "application/cloudevents+json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatalf("direct POST to %s: %v", fn, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("an unauthenticated POST to %s's Revision = %s, want 401", fn, resp.Status)
		}
	}
	intruder := tenantTokens(t, ctx, "default", "e2e-intruder", "", audience)
	other := tenantTokens(t, ctx, appsNS, "e2e-other", "", audience)
	bad := []struct {
		name  string
		token string
		e     event.Event
		want  int
	}{
		{"no token", "", installRequested(90, "http://x", env.echo), http.StatusUnauthorized},
		{"a token for berth, not for the Broker", other.berth, installRequested(91, "http://x", env.echo), http.StatusUnauthorized},
		{"a ServiceAccount no EventPolicy lists", intruder.broker, installRequested(92, "http://x", env.echo), http.StatusForbidden},
		{"a tenant's event for another namespace", other.broker, withTenant(installRequested(93, "http://x", env.echo), "kube-system"), http.StatusForbidden},
		{"a tenant's release.uninstalled (only berth sends it)", other.broker,
			withTenant(newEvent("forged-uninstalled", events.ReleaseUninstalled, "", events.ReleaseUninstalledData{Release: events.Release{Name: "gw-01", Namespace: appsNS}}), appsNS), http.StatusForbidden},
	}
	for _, b := range bad {
		if got := postStatus(t, hc, broker, b.token, b.e); got != b.want {
			t.Errorf("%s: the Broker answered %d, want %d", b.name, got, b.want)
		}
	}
	if after := releaseCount(t, ctx); after != before {
		t.Errorf("refused calls changed the release records: %d, then %d", before, after)
	}
	if t.Failed() {
		t.FailNow()
	}
	reportf("refusals: an unauthenticated POST to each function's URL got 401; the Broker refused %d posts no EventPolicy admits (401/403)", len(bad))
}

func withTenant(e event.Event, tenant string) event.Event {
	e.SetExtension(events.ExtensionTenant, tenant)
	return e
}

func newEvent(id, typ, subject string, data any) event.Event {
	e := cloudevents.NewEvent()
	e.SetID(id)
	e.SetSource("/berth/e2e")
	e.SetType(typ)
	e.SetSubject(subject)
	_ = e.SetData(cloudevents.ApplicationJSON, data)
	return e
}

// tenantEvent is an event of the apps namespace's tenant.
func tenantEvent(id, typ, subject string, data any) event.Event {
	return withTenant(newEvent(id, typ, subject, data), appsNS)
}

// sampleChart is the sample gateway's chart as a 2018 client's chart: named
// sample-gateway, running image without being told.
func sampleChart(image string) (chartrepo.Chart, error) {
	dir, err := os.MkdirTemp("", "sample-gateway-")
	if err != nil {
		return chartrepo.Chart{}, err
	}
	defer os.RemoveAll(dir)
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(env.root, "charts", "echo-gateway"))); err != nil {
		return chartrepo.Chart{}, err
	}
	for f, edit := range map[string]func([]byte) []byte{
		"Chart.yaml": func(b []byte) []byte {
			return regexp.MustCompile(`(?m)^name: .*$`).ReplaceAll(b, []byte("name: sample-gateway"))
		},
		"values.yaml": func(b []byte) []byte {
			return regexp.MustCompile(`(?m)^image: .*$`).ReplaceAll(b, []byte("image: "+image))
		},
	} {
		p := filepath.Join(dir, f)
		b, err := os.ReadFile(p)
		if err == nil {
			err = os.WriteFile(p, edit(b), 0o644)
		}
		if err != nil {
			return chartrepo.Chart{}, err
		}
	}
	return chartrepo.Package(dir, "")
}

// seedFlow is the 2018 sample app (sample/index.js): POST /install with the
// form chartName=stable/<chart>, then POST /setrule with the form
// serviceName=<the answer's serviceName>&servicePort=<port>, then the
// gateway at the answer's ip:port.
func seedFlow(t *testing.T, ctx context.Context, hc *http.Client, urls map[string]string, token, sharedIP string) {
	t0 := time.Now()
	post := func(fn, path, body string) map[string]any {
		t.Helper()
		u := urls[fn] + path
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", path, err)
		}
		defer resp.Body.Close()
		var a map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode >= 300 || a["status"] != "success" {
			t.Fatalf("POST %s %s = %s %v (%v)", path, body, resp.Status, a, err)
		}
		return a
	}
	inst := post("install", "/install", "chartName=stable%2Fsample-gateway")
	svc, _ := inst["serviceName"].(string)
	if svc == "" {
		t.Fatalf("install answered no serviceName: %v", inst)
	}
	rule := post("setingress", "/setrule", "serviceName="+url.QueryEscape(svc)+"&servicePort=7000")
	ip, _ := rule["ip"].(string)
	port, _ := rule["port"].(float64)
	if ip != sharedIP || port == 0 || rule["releaseName"] == "" {
		t.Fatalf("setrule answered %v, want ip %s, a port and a releaseName", rule, sharedIP)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(int(port)))
	var greeting string
	if err := eventually(ctx, 3*time.Minute, func() (err error) { greeting, err = tcpGreeting(addr); return err }); err != nil || greeting != "echo-gateway" {
		t.Fatalf("the 2018 sample's gateway at %s: greeting %q, %v", addr, greeting, err)
	}
	reportf("the 2018 sample flow: form install of stable/sample-gateway (release %v), form setrule of %s:7000 -> %s answering TCP, in %s",
		inst["releaseName"], svc, addr, time.Since(t0).Round(time.Millisecond))
}

func installRequested(i int, repoURL, image string) event.Event {
	name := fmt.Sprintf("gw-%02d", i)
	e := tenantEvent("install-"+name, events.InstallRequested, appsNS+"/"+name, map[string]any{
		"privateChartsRepo": repoURL, "chartName": "echo-gateway", "releaseName": name, "namespace": appsNS,
		"values": map[string]any{"image": image, "settings.greeting": "hello from " + name},
		"expose": events.Expose{ServicePort: intstr.FromString("tcp"), Protocol: "TCP"},
	})
	// The caller's trace, which berth's spans continue.
	e.SetExtension("traceparent", "00-"+gatewayTrace(i)+"-"+callerSpan+"-01")
	return e
}

// callerSpan is the span the e2e's events name as their parent.
const callerSpan = "00000000000e2e01"

// gatewayTrace is the trace id of gateway i's install.requested.
func gatewayTrace(i int) string { return fmt.Sprintf("be27%028x", i) }

func portRequested(d events.EndpointExposedData) event.Event {
	ns, name, _ := strings.Cut(d.Owner, "/")
	return tenantEvent("udp-"+name, events.PortRequested, d.Owner, events.PortRequestedData{
		Owner: d.Owner, Protocol: "UDP",
		Expose:  &events.Expose{ServiceName: name, ServicePort: intstr.FromString("udp"), Protocol: "UDP"},
		Release: &events.Release{Name: name, Namespace: ns},
	})
}

func uninstallRequested(owner string) event.Event {
	ns, name, _ := strings.Cut(owner, "/")
	return tenantEvent("uninstall-"+name, events.UninstallRequested, owner, map[string]any{"releaseName": name, "namespace": ns})
}

// postAs sends e to the Broker's ingress with token, as a web app in the
// cluster would, and fails the test unless the Broker takes it.
func postAs(t *testing.T, hc *http.Client, url, token string, e event.Event) {
	if s := postStatus(t, hc, url, token, e); s/100 != 2 {
		t.Errorf("posting %s: broker answered %d", e.ID(), s)
	}
}

// postStatus sends e to the Broker's ingress with token ("" for none) and
// returns the status it answered.
func postStatus(t *testing.T, hc *http.Client, url, token string, e event.Event) int {
	body, err := json.Marshal(e)
	if err != nil {
		t.Error(err)
		return 0
	}
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Errorf("posting %s: %v", e.ID(), err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// outcomeSink receives berth's outcome events through Triggers of its own.
type outcomeSink struct {
	ch chan event.Event
}

var outcomeTypes = []string{events.EndpointExposed, events.EndpointFailed, events.InstallFailed, events.PortFailed, events.ReleaseUninstalled}

func startOutcomeSink(t *testing.T, ctx context.Context, dyn dynamic.Interface, c *cluster.Cluster) *outcomeSink {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(c.NodeIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &outcomeSink{ch: make(chan event.Event, 256)}
	p, err := cloudevents.NewHTTP(cloudevents.WithListener(ln))
	if err != nil {
		t.Fatal(err)
	}
	ce, err := cloudevents.NewClient(p)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	go func() { _ = ce.StartReceiver(rctx, func(e event.Event) { s.ch <- e }) }()
	var manifest strings.Builder
	for _, typ := range outcomeTypes {
		fmt.Fprintf(&manifest, `---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: e2e-%s
  namespace: %s
spec:
  broker: default
  filter:
    attributes:
      type: %s
  subscriber:
    uri: http://%s/
`, strings.ReplaceAll(strings.TrimPrefix(typ, "dev.berth."), ".", "-"), berthNS, typ, ln.Addr())
	}
	if err := c.Apply(ctx, []byte(manifest.String()), time.Minute); err != nil {
		t.Fatal(err)
	}
	return s
}

// next returns the next outcome of type typ, failing the test on a failure event.
func (s *outcomeSink) next(t *testing.T, typ string, timeout time.Duration) events.EndpointExposedData {
	t.Helper()
	e := s.nextEvent(t, timeout, typ)
	var d events.EndpointExposedData
	if typ == events.EndpointExposed {
		if err := e.DataAs(&d); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// nextEvent returns the next outcome of type typ, skipping other outcomes but
// failing the test on a failure event that is not typ.
func (s *outcomeSink) nextEvent(t *testing.T, timeout time.Duration, typ string) event.Event {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e := <-s.ch:
			if e.Type() == typ {
				return e
			}
			if strings.HasSuffix(e.Type(), ".failed") {
				t.Fatalf("%s for %s: %s", e.Type(), e.Subject(), e.Data())
			}
		case <-deadline:
			t.Fatalf("no %s within %s\n%s", typ, timeout, podProblems(context.Background(), env.cluster.Client, berthNS))
		}
	}
}

// releaseCount counts Helm's release records in the apps namespace.
func releaseCount(t *testing.T, ctx context.Context) int {
	t.Helper()
	list, err := env.cluster.Client.CoreV1().Secrets(appsNS).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

// ledgerEntries lists the port ledger's entries held by owner.
func ledgerEntries(t *testing.T, ctx context.Context, owner string) []string {
	t.Helper()
	cms, err := env.cluster.Client.CoreV1().ConfigMaps(ingressNS).List(ctx, metav1.ListOptions{LabelSelector: ledger.LabelPart + "=block"})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, cm := range cms.Items {
		l, err := portalloc.Decode(cm.Data)
		if err != nil {
			t.Fatal(err)
		}
		for k, e := range l.Entries {
			if e.Owner == owner {
				out = append(out, k.String())
			}
		}
	}
	slices.Sort(out)
	return out
}
