package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/testing/answer"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

var cp *controlplane.ControlPlane

// allowAll lets every caller do everything: these tests are about what each
// operation does; the tenancy test (pkg/testing/localrun) is about who may do it.
type allowAll struct{}

func (allowAll) Check(context.Context, auth.Attributes) error           { return nil }
func (allowAll) Allowed(context.Context, auth.Attributes) (bool, error) { return true, nil }

func TestMain(m *testing.M) { os.Exit(controlplane.RunTests(m, &cp)) }

// serve runs getport over real HTTP on a fresh namespace holding one entry point
// (service.lb at 192.0.2.7) and returns its URL.
func serve(t *testing.T, portMax int) (string, string) {
	t.Helper()
	ns := cp.Namespace(t)
	cp.LoadBalancer(t, ns, "lb", "192.0.2.7", nil)
	cfg := Config{
		Config: function.Config{MaxRequestBytes: 2048},
		Settings: reservation.Settings{LoadBalancerNamespace: ns, PortMin: 20000, PortMax: portMax, ReservationTTL: time.Minute,
			TCPServicesConfigMap: "tcp-services", UDPServicesConfigMap: "udp-services"},
	}
	h := newHandler(cfg, cp.Client, gatewayClient(t), allowAll{})
	s := function.NewServer(cfg.Config, h.fn(), slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL, ns
}

func do(t *testing.T, method, url, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestBadRequests(t *testing.T) {
	cp.Require(t)
	url, ns := serve(t, 30000)
	// One port held by "a", so that a release by someone else is refused.
	if resp, b := do(t, "GET", url+"/getport?owner=ns/a", "", ""); resp.StatusCode != 200 {
		t.Fatalf("setup: %d %s", resp.StatusCode, b)
	}
	const js = "application/json"
	tests := []struct {
		name, method, path, ct, body string
		status                       int
	}{
		{"protocol", "GET", "/getport?owner=ns/x&protocol=SCTP", "", "", 400},
		{"empty owner", "GET", "/getport?owner=", "", "", 400},
		{"owner without namespace", "GET", "/getport?owner=gw", "", "", 400},
		{"no owner, no namespace", "GET", "/getport", "", "", 400},
		{"owner with a bad namespace", "POST", "/ports", js, `{"owner":"../etc/gw"}`, 400},
		{"owner with space", "GET", "/getport?owner=ns/a%20b", "", "", 400},
		{"owner with newline", "GET", "/getport?owner=ns/a%0Ab", "", "", 400},
		{"unknown lbip", "GET", "/getport?owner=ns/x&lbip=203.0.113.9", "", "", 404},
		{"bad entry point id", "GET", "/getport?owner=ns/x&entryPoint=lb", "", "", 400},
		{"unknown entry point", "GET", "/getport?owner=ns/x&entryPoint=gateway.lb", "", "", 404},
		{"not JSON", "POST", "/ports", js, "owner=ns/x", 400},
		{"unknown field", "POST", "/ports", js, `{"owner":"ns/x","port":20001}`, 400},
		{"wrong type", "POST", "/ports", js, `{"owner":42}`, 400},
		{"two objects", "POST", "/ports", js, `{"owner":"ns/x"}{"owner":"ns/y"}`, 400},
		{"wrong content type", "POST", "/ports", "text/plain", `{"owner":"ns/x"}`, 400},
		{"no owner", "POST", "/ports", js, `{"protocol":"TCP"}`, 400},
		{"long owner", "POST", "/ports", js, `{"owner":"` + strings.Repeat("o", 254) + `"}`, 400},
		{"shell in protocol", "POST", "/ports", js, `{"owner":"ns/x","protocol":"tcp;$(reboot)"}`, 400},
		{"too large", "POST", "/ports", js, `{"owner":"` + strings.Repeat("o", 3000) + `"}`, 413},
		{"release bad protocol", "DELETE", "/ports/service.lb/SCTP/20000", "", "", 400},
		{"release port not a number", "DELETE", "/ports/service.lb/TCP/abc", "", "", 400},
		{"release port out of range", "DELETE", "/ports/service.lb/TCP/70000", "", "", 400},
		{"release bad entry point", "DELETE", "/ports/lb/TCP/20000", "", "", 400},
		{"release another owner's port", "DELETE", "/ports/service.lb/TCP/20000?owner=ns/b", "", "", 409},
		{"no such route", "PUT", "/ports", js, `{}`, 404},
		{"getport unknown field", "GET", "/getport?owner=ns/x&port=20001", "", "", 400},
		{"getport owner twice", "GET", "/getport?owner=ns/x&owner=ns/y", "", "", 400},
		{"getport lbip in a JSON body, unknown", "GET", "/getport?owner=ns/x", js, `{"lbip":"203.0.113.9"}`, 404},
		{"getport lbip in query and body disagree", "GET", "/getport?owner=ns/x&lbip=192.0.2.1", js, `{"lbip":"203.0.113.9"}`, 400},
		{"getport body not JSON", "GET", "/getport?owner=ns/x", js, `lbip=1`, 400},
		{"getport body of another type", "GET", "/getport?owner=ns/x", "text/plain", `lbip=1`, 400},
		{"getport any case, unknown lbip", "GET", "/getPort/?owner=ns/x&lbip=203.0.113.9", "", "", 404},
	}
	before := cp.Fingerprint(t, ns)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, b := do(t, tc.method, url+tc.path, tc.ct, tc.body)
			answer.Refusal(t, seedRoutes, tc.method+" "+tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), b, tc.status)
		})
	}
	if after := cp.Fingerprint(t, ns); after != before {
		t.Errorf("bad requests changed the cluster: %s, was %s", after, before)
	}
}

func TestFullRangeIs422(t *testing.T) {
	cp.Require(t)
	url, ns := serve(t, 20000)
	if resp, _ := do(t, "GET", url+"/getport?owner=ns/a", "", ""); resp.StatusCode != 200 {
		t.Fatal("first reservation failed")
	}
	before := cp.Fingerprint(t, ns)
	resp, b := do(t, "POST", url+"/ports", "application/json", `{"owner":"ns/b"}`)
	if resp.StatusCode != 422 || !strings.Contains(string(b), "20000-20000") {
		t.Errorf("reserve on a full range = %d %s, want 422 naming the range", resp.StatusCode, b)
	}
	if cp.Fingerprint(t, ns) != before {
		t.Error("a refused reservation changed the cluster")
	}
}

func TestSeedAndResourceRoutes(t *testing.T) {
	cp.Require(t)
	url, _ := serve(t, 30000)
	resp, b := do(t, "GET", url+"/getport?owner=tenant/gw&protocol=udp", "", "")
	var seed map[string]any
	if resp.StatusCode != 200 || json.Unmarshal(b, &seed) != nil {
		t.Fatalf("GET /getport = %d %s", resp.StatusCode, b)
	}
	for _, f := range []string{"public_ip", "port", "release", "ip", "protocol", "entryPoint", "owner", "expiresAt"} {
		if _, ok := seed[f]; !ok {
			t.Errorf("GET /getport answer %s lacks %q", b, f)
		}
	}
	if seed["public_ip"] != "192.0.2.7" || seed["protocol"] != "UDP" {
		t.Errorf("GET /getport = %s, want public_ip 192.0.2.7 and UDP", b)
	}
	resp, b2 := do(t, "POST", url+"/ports", "application/json", `{"owner":"tenant/gw","protocol":"UDP"}`)
	var again map[string]any
	json.Unmarshal(b2, &again)
	if resp.StatusCode != 200 || again["port"] != seed["port"] {
		t.Errorf("POST /ports for the same owner = %d %s, want port %v", resp.StatusCode, b2, seed["port"])
	}
	if resp, _ := do(t, "GET", url+"/getport?namespace=tenant", "", ""); resp.StatusCode != 200 {
		t.Errorf("GET /getport without owner = %d, want 200 (the seed had no owner)", resp.StatusCode)
	}
	_, b = do(t, "GET", url+"/ports?owner=tenant/gw", "", "")
	var list struct{ Items []map[string]any }
	if json.Unmarshal(b, &list) != nil || len(list.Items) != 1 {
		t.Errorf("GET /ports?owner=tenant/gw = %s, want one item", b)
	}
	path := "/ports/service.lb/UDP/" + jsonNumber(seed["port"]) + "?owner=tenant/gw"
	for i := range 2 {
		if resp, b := do(t, "DELETE", url+path, "", ""); resp.StatusCode != 204 {
			t.Errorf("DELETE #%d %s = %d %s, want 204", i+1, path, resp.StatusCode, b)
		}
	}
	_, b = do(t, "GET", url+"/ports?owner=tenant/gw", "", "")
	if json.Unmarshal(b, &list) != nil || len(list.Items) != 0 {
		t.Errorf("after DELETE, GET /ports = %s, want none", b)
	}
}

func jsonNumber(v any) string { b, _ := json.Marshal(v); return string(b) }

func newEvent(id, typ string, data any) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetType(typ)
	e.SetSource("/test/install")
	if data != nil {
		_ = e.SetData(cloudevents.ApplicationJSON, data)
	}
	return e
}

func TestEvents(t *testing.T) {
	cp.Require(t)
	url, ns := serve(t, 30000)
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(url))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	installed := events.ReleaseInstalledData{
		Release: events.Release{Name: "gw-1", Namespace: "tenant-1"},
		Expose:  &events.Expose{ServicePort: intstr.FromInt32(1883), Protocol: "TCP"},
	}
	var first events.PortReservedData
	for i := range 2 { // Knative delivers at least once: the same event twice
		reply, res := c.Request(ctx, newEvent("ev-1", events.ReleaseInstalled, installed))
		if !cloudevents.IsACK(res) || reply == nil || reply.Type() != events.PortReserved {
			t.Fatalf("release.installed #%d = %v, %v; want a port.reserved reply", i+1, reply, res)
		}
		var got events.PortReservedData
		if err := reply.DataAs(&got); err != nil {
			t.Fatal(err)
		}
		if got.Owner != "tenant-1/gw-1" || got.IP != "192.0.2.7" || got.Expose == nil || got.Release == nil || got.Release.Name != "gw-1" {
			t.Errorf("port.reserved data = %+v, want owner tenant-1/gw-1 at 192.0.2.7 carrying expose and release", got)
		}
		if i == 0 {
			first = got
		} else if got.Port != first.Port {
			t.Errorf("redelivery got port %d, want %d", got.Port, first.Port)
		}
	}

	// Without an expose intent there is nothing to do.
	plain := events.ReleaseInstalledData{Release: events.Release{Name: "gw-2", Namespace: "tenant-1"}}
	if reply, res := c.Request(ctx, newEvent("ev-2", events.ReleaseInstalled, plain)); !cloudevents.IsACK(res) || reply != nil {
		t.Errorf("release.installed without expose = %v, %v; want no reply", reply, res)
	}

	// port.requested without owner: the owner comes from source+id, so a
	// redelivery gets the same port.
	var ports []int
	for range 2 {
		e := newEvent("ev-3", events.PortRequested, events.PortRequestedData{Protocol: "UDP"})
		e.SetExtension(events.ExtensionTenant, "tenant-1")
		reply, res := c.Request(ctx, e)
		var got events.PortReservedData
		if !cloudevents.IsACK(res) || reply == nil || reply.DataAs(&got) != nil {
			t.Fatalf("port.requested = %v, %v", reply, res)
		}
		ports = append(ports, got.Port)
	}
	if ports[0] != ports[1] {
		t.Errorf("port.requested twice got ports %v, want one port", ports)
	}
	l, err := ledger.NewBooks(cp.Client.CoreV1(), kube.ConflictBackoff).Entries(ctx, ledger.BookFor(ns, "service", "lb"))
	if err != nil || len(l.Entries) != 2 {
		t.Errorf("ledger after redeliveries has %d entries (%v), want 2", len(l.Entries), err)
	}

	// Permanent failures travel on as port.failed; the input's data stays behind.
	failing := []struct {
		name string
		e    event.Event
	}{
		{"bad protocol", newEvent("ev-4", events.PortRequested, map[string]string{"owner": "ns/x", "protocol": "SCTP"})},
		{"unknown lbip", newEvent("ev-5", events.PortRequested, map[string]string{"owner": "ns/x", "lbip": "203.0.113.1"})},
		{"data not JSON", newEvent("ev-6", events.PortRequested, "secret-value")},
		{"no owner, no tenant", newEvent("ev-10", events.PortRequested, map[string]string{"protocol": "UDP"})},
		{"no data", newEvent("ev-7", events.ReleaseInstalled, nil)},
	}
	for _, tc := range failing {
		reply, res := c.Request(ctx, tc.e)
		var f function.Failure
		if !cloudevents.IsACK(res) || reply == nil || reply.Type() != events.PortFailed || reply.DataAs(&f) != nil {
			t.Errorf("%s: reply = %v, %v; want port.failed", tc.name, reply, res)
			continue
		}
		if f.Problem.Status < 400 || f.Problem.Status >= 500 || f.CauseID != tc.e.ID() || strings.Contains(string(reply.Data()), "secret-value") {
			t.Errorf("%s: failure = %s, want a 4xx problem naming %s without the input's data", tc.name, reply.Data(), tc.e.ID())
		}
	}
	// An event getport does not consume is refused.
	_, res := c.Request(ctx, newEvent("ev-8", "dev.berth.other.happened", map[string]string{}))
	var status *cehttp.Result
	if !cloudevents.ResultAs(res, &status) || status.StatusCode != 400 {
		t.Errorf("unknown event type = %v, want refused with 400", res)
	}
	// A PingSource ping runs a sweep and replies nothing.
	if reply, res := c.Request(ctx, newEvent("ev-9", events.PingSourcePing, map[string]string{})); !cloudevents.IsACK(res) || reply != nil {
		t.Errorf("ping = %v, %v; want a sweep and no reply", reply, res)
	}
}

func TestNoEntryPointIsRetried(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	cfg := Config{Config: function.Config{MaxRequestBytes: 2048},
		Settings: reservation.Settings{LoadBalancerNamespace: ns, PortMin: 20000, PortMax: 30000, ReservationTTL: time.Minute}}
	h := newHandler(cfg, cp.Client, nil, allowAll{})
	_, err := h.event(context.Background(), newEvent("ev", events.PortRequested, map[string]string{"owner": "ns/x"}))
	if problem.Status(err) != 503 {
		t.Errorf("port.requested with no entry point = %v, want a 503 error so that Knative retries", err)
	}
}

func TestSeedVariableNames(t *testing.T) {
	t.Setenv("LoadBalancerNamespace", "ingress")
	t.Setenv("IngressLabel", "shared")
	var cfg Config
	if err := function.Load(&cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.LoadBalancerNamespace != "ingress" || cfg.IngressLabel != "shared" {
		t.Errorf("seed names read as %q, %q", cfg.LoadBalancerNamespace, cfg.IngressLabel)
	}
	t.Setenv("LOAD_BALANCER_NAMESPACE", "berth")
	t.Setenv("PORT_MIN", "40000")
	t.Setenv("PORT_MAX", "30000")
	cfg = Config{}
	err := function.Load(&cfg)
	if err == nil || !strings.Contains(err.Error(), "PORT_MIN") {
		t.Errorf("Load with PORT_MIN > PORT_MAX = %v, want an error naming PORT_MIN", err)
	}
	if cfg.LoadBalancerNamespace != "berth" {
		t.Errorf("LOAD_BALANCER_NAMESPACE = %q, want the new name to win", cfg.LoadBalancerNamespace)
	}
}

func TestUninstallReleasesOnlyUnboundPorts(t *testing.T) {
	cp.Require(t)
	url, ns := serve(t, 30000)
	c, _ := cloudevents.NewClientHTTP(cloudevents.WithTarget(url))
	ctx := context.Background()
	rel := events.Release{Name: "gw", Namespace: "tenant"}
	for i, proto := range []string{"TCP", "UDP"} {
		in := events.ReleaseInstalledData{Release: rel, Expose: &events.Expose{ServicePort: intstr.FromInt32(1883), Protocol: proto}}
		if reply, res := c.Request(ctx, newEvent("inst-"+proto, events.ReleaseInstalled, in)); !cloudevents.IsACK(res) || reply == nil {
			t.Fatalf("install %d: %v", i, res)
		}
	}
	other := events.ReleaseInstalledData{Release: events.Release{Name: "other", Namespace: "tenant"}, Expose: &events.Expose{ServicePort: intstr.FromInt32(1883)}}
	c.Request(ctx, newEvent("inst-other", events.ReleaseInstalled, other))
	// setingress binds the UDP port.
	h := newHandler(Config{Settings: reservation.Settings{LoadBalancerNamespace: ns, PortMin: 20000, PortMax: 30000, ReservationTTL: time.Minute}},
		cp.Client, nil, allowAll{})
	list, _ := h.svc.List(ctx, reservation.Filter{Owner: "tenant/gw"})
	for _, r := range list {
		if r.Protocol == "UDP" {
			if _, _, err := h.svc.Bind(ctx, r.EntryPoint, portalloc.Key{Protocol: r.Protocol, Port: r.Port}, r.Owner, "tenant/gw"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 2 {
		reply, res := c.Request(ctx, newEvent("uninst", events.ReleaseUninstalled, events.ReleaseUninstalledData{Release: rel}))
		if !cloudevents.IsACK(res) || reply != nil {
			t.Fatalf("release.uninstalled = %v, %v; want handled, no reply", reply, res)
		}
	}
	left, _ := h.svc.List(ctx, reservation.Filter{})
	var got []string
	for _, r := range left {
		got = append(got, r.Owner+"/"+string(r.Protocol)+"/"+string(r.State))
	}
	want := []string{"tenant/gw/UDP/bound", "tenant/other/TCP/reserved"}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("after uninstall: %v, want %v", got, want)
	}
}

// TestCapacitySummary: GET /ports?summary=true counts each entry point's
// ports per protocol, and names no owner.
func TestCapacitySummary(t *testing.T) {
	cp.Require(t)
	url, _ := serve(t, 20009)
	for _, q := range []string{"owner=ns/a", "owner=ns/b", "owner=ns/c", "owner=ns/a&protocol=UDP"} {
		if resp, b := do(t, "GET", url+"/getport?"+q, "", ""); resp.StatusCode != 200 {
			t.Fatalf("getport?%s = %d %s", q, resp.StatusCode, b)
		}
	}
	resp, b := do(t, "GET", url+"/ports?summary=true", "", "")
	var got struct{ Items []reservation.Capacity }
	if resp.StatusCode != 200 || json.Unmarshal(b, &got) != nil || len(got.Items) != 2 {
		t.Fatalf("GET /ports?summary=true = %d %s", resp.StatusCode, b)
	}
	want := map[portalloc.Protocol]int{portalloc.TCP: 3, portalloc.UDP: 1}
	for _, c := range got.Items {
		if c.EntryPoint != "service.lb" || c.IP != "192.0.2.7" || c.Range != 10 || c.Reserved != want[c.Protocol] || c.Bound != 0 ||
			c.Reserved+c.Bound+c.InUse+c.Free != c.Range {
			t.Errorf("capacity %+v, want %d reserved of 10 on service.lb", c, want[c.Protocol])
		}
	}
	if strings.Contains(string(b), "ns/a") {
		t.Errorf("the summary names an owner: %s", b)
	}
	if resp, b := do(t, "GET", url+"/ports?summary=maybe", "", ""); resp.StatusCode != 400 {
		t.Errorf("summary=maybe = %d %s, want 400", resp.StatusCode, b)
	}
}

// gatewayClient is berth's Gateway API client of the test control plane.
func gatewayClient(t *testing.T) *gatewayapi.Client {
	t.Helper()
	c, err := gatewayapi.New(cp.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
