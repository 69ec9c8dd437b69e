package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/function"
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

// serve runs setingress over real HTTP on a namespace holding an ingress-nginx
// entry point (192.0.2.9) and a target Service "app" (mqtt 1883/TCP, coap
// 5683/UDP) that seed-style requests find as the default namespace.
func serve(t *testing.T) (string, string) {
	t.Helper()
	ns := cp.Namespace(t)
	cp.LoadBalancer(t, ns, "ingress-nginx-controller", "192.0.2.9", map[string]string{"app.kubernetes.io/name": "ingress-nginx"})
	_, err := cp.Client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "app"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "app"}, Ports: []corev1.ServicePort{
			{Name: "mqtt", Port: 1883, Protocol: corev1.ProtocolTCP},
			{Name: "coap", Port: 5683, Protocol: corev1.ProtocolUDP},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Config: function.Config{MaxRequestBytes: 2048},
		Settings: reservation.Settings{LoadBalancerNamespace: ns, PortMin: 20000, PortMax: 30000, ReservationTTL: time.Minute,
			TCPServicesConfigMap: "tcp-services", UDPServicesConfigMap: "udp-services"},
		AllowedNamespaces: []string{ns},
		ConfirmTimeout:    5 * time.Second,
	}
	h := newHandler(cfg, cp.Client, nil, allowAll{})
	s := function.NewServer(cfg.Config, h.fn(), slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL, ns
}

func do(t *testing.T, method, url, ct, body string) (int, []byte, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header.Get("Content-Type")
}

func TestBadRequests(t *testing.T) {
	cp.Require(t)
	url, ns := serve(t)
	const js, form = "application/json", "application/x-www-form-urlencoded"
	body := func(fields string) string { return `{"serviceNamespace":"` + ns + `",` + fields + `}` }
	tests := []struct {
		name, method, path, ct, body string
		status                       int
	}{
		{"seed without service", "GET", "/setingress?servicePort=1883", "", "", 400},
		{"seed without port", "GET", "/setingress?serviceName=app", "", "", 400},
		{"seed port name invalid", "GET", "/setingress?serviceName=app&servicePort=-x-", "", "", 400},
		{"seed unknown service", "GET", "/setingress?serviceName=nope&servicePort=1883", "", "", 404},
		{"seed unknown port", "GET", "/setingress?serviceName=app&servicePort=9999", "", "", 422},
		{"seed protocol mismatch", "GET", "/setingress?serviceName=app&servicePort=mqtt&protocol=UDP", "", "", 422},
		{"seed bad protocol", "GET", "/setingress?serviceName=app&servicePort=1883&protocol=ICMP", "", "", 400},
		{"seed unknown lbip", "GET", "/setingress?serviceName=app&servicePort=1883&lbip=203.0.113.5", "", "", 404},
		{"setrule not JSON", "POST", "/setrule", js, "serviceName=app", 400},
		{"setrule no service", "POST", "/setrule", form, "servicePort=1883", 400},
		{"setrule unknown field", "POST", "/setrule", js, body(`"serviceName":"app","servicePort":1883,"cmd":"helm upgrade"`), 400},
		{"exposure shell in name", "POST", "/exposures", js, body(`"serviceName":"app;reboot","servicePort":1883`), 400},
		{"exposure bad namespace", "POST", "/exposures", js, `{"serviceNamespace":"../etc","serviceName":"app","servicePort":1883}`, 400},
		{"exposure port too big", "POST", "/exposures", js, body(`"serviceName":"app","servicePort":70000`), 400},
		{"exposure port as float", "POST", "/exposures", js, body(`"serviceName":"app","servicePort":18.83`), 400},
		{"exposure PROXY on UDP", "POST", "/exposures", js, body(`"serviceName":"app","servicePort":"coap","protocol":"UDP","proxy":{"decode":true}`), 400},
		{"exposure reserved port of an owner without entry point", "POST", "/exposures", js, body(`"serviceName":"app","servicePort":1883,"port":20000,"owner":"` + ns + `/x"`), 400},
		{"exposure port never reserved, no entry point", "POST", "/exposures", js, body(`"serviceName":"app","servicePort":1883,"port":20000`), 404},
		{"setrule form unknown field", "POST", "/setrule", form, "serviceName=app&servicePort=1883&cmd=reboot", 400},
		{"setrule form key twice", "POST", "/setrule", form, "serviceName=app&serviceName=other&servicePort=1883", 400},
		{"setrule servicePort neither number nor name", "POST", "/setrule", form, "serviceName=app&servicePort=-x-", 400},
		{"setrule loadBalancerPort not a number", "POST", "/setrule", form, "serviceName=app&servicePort=1883&loadBalancerPort=high", 400},
		{"setrule port under two names", "POST", "/setrule", js, body(`"serviceName":"app","servicePort":1883,"loadBalancerPort":20000,"specificport":20001`), 400},
		{"setrule loadBalancerPort never reserved", "POST", "/setrule", js, body(`"serviceName":"app","servicePort":"1883","loadBalancerPort":"20000"`), 404},
		{"setrule loadBalancerIp not the release's", "POST", "/setrule", js, body(`"serviceName":"app","servicePort":1883,"loadBalancerPort":20000,"loadBalancerIp":"192.0.2.77","release":"service.ingress-nginx-controller"`), 400},
		{"setrule text/plain", "POST", "/setrule", "text/plain", "serviceName=app", 400},
		{"setrule any case, unknown service", "POST", "/SetRule/", form, "serviceName=nope&servicePort=1883", 404},
		{"setrule old GET, unknown port", "GET", "/setrule?servicename=app&serviceport=9999", "", "", 422},
		{"exposure port never reserved", "POST", "/exposures", js, body(`"serviceName":"app","servicePort":1883,"port":20000,"entryPoint":"service.ingress-nginx-controller"`), 404},
		{"exposure bad entry point", "POST", "/exposures", js, body(`"serviceName":"app","servicePort":1883,"entryPoint":"ingress-nginx"`), 400},
		{"exposure wrong content type", "POST", "/exposures", "text/yaml", body(`"serviceName":"app","servicePort":1883`), 400},
		{"exposure too large", "POST", "/exposures", js, body(`"serviceName":"` + strings.Repeat("a", 3000) + `"`), 413},
		{"delete bad protocol", "DELETE", "/exposures/service.ingress-nginx-controller/GRE/20000", "", "", 400},
		{"delete bad port", "DELETE", "/exposures/service.ingress-nginx-controller/TCP/0", "", "", 400},
		{"delete bad owner", "DELETE", "/exposures/service.ingress-nginx-controller/TCP/20000?owner=a%20b", "", "", 400},
		{"delete unknown entry point", "DELETE", "/exposures/service.nope/TCP/20000", "", "", 404},
		{"no route", "PATCH", "/exposures", js, "{}", 404},
		{"exposure wait not a duration", "POST", "/exposures?wait=forever", js, body(`"serviceName":"app","servicePort":1883`), 400},
		{"exposure wait negative", "POST", "/exposures?wait=-1s", js, body(`"serviceName":"app","servicePort":1883`), 400},
		{"exposure wait over CONFIRM_TIMEOUT", "POST", "/exposures?wait=1h", js, body(`"serviceName":"app","servicePort":1883`), 400},
	}
	before := cp.Fingerprint(t, ns)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, b, ct := do(t, tc.method, url+tc.path, tc.ct, tc.body)
			answer.Refusal(t, seedRoutes, tc.method+" "+tc.path, status, ct, b, tc.status)
		})
	}
	if after := cp.Fingerprint(t, ns); after != before {
		t.Errorf("bad requests changed the cluster:\n%s\nwas\n%s", after, before)
	}
}

func TestSeedRoutesAndResources(t *testing.T) {
	cp.Require(t)
	url, ns := serve(t)
	status, b, _ := do(t, "GET", url+"/setingress?serviceName=app&servicePort=1883", "", "")
	var seed map[string]any
	if status != 200 || json.Unmarshal(b, &seed) != nil || seed["ip"] != "192.0.2.9" || seed["releaseName"] == nil || seed["port"] == nil {
		t.Fatalf("GET /setingress = %d %s, want ip, port and releaseName", status, b)
	}
	status, b2, _ := do(t, "POST", url+"/setrule", "application/json", `{"serviceName":"app","servicePort":"mqtt"}`)
	var again map[string]any
	json.Unmarshal(b2, &again)
	if status != 200 || again["port"] != seed["port"] {
		t.Errorf("POST /setrule for the same Service port = %d %s, want port %v again", status, b2, seed["port"])
	}
	svc, _ := cp.Client.CoreV1().Services(ns).Get(context.Background(), "app", metav1.GetOptions{})
	want := "192.0.2.9:" + jsonString(seed["port"]) + "/TCP"
	if svc.Annotations["berth.dev/endpoint"] != want {
		t.Errorf("berth.dev/endpoint = %q, want %q", svc.Annotations["berth.dev/endpoint"], want)
	}
	_, b, _ = do(t, "GET", url+"/exposures", "", "")
	var list struct{ Items []map[string]any }
	if json.Unmarshal(b, &list) != nil || len(list.Items) != 1 {
		t.Errorf("GET /exposures = %s, want one", b)
	}
	path := "/exposures/service.ingress-nginx-controller/TCP/" + jsonString(seed["port"])
	for range 2 {
		if status, b, _ := do(t, "DELETE", url+path, "", ""); status != 204 {
			t.Errorf("DELETE %s = %d %s, want 204", path, status, b)
		}
	}
	cm, _ := cp.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), "tcp-services", metav1.GetOptions{})
	if len(cm.Data) != 0 {
		t.Errorf("tcp-services after DELETE = %v, want empty", cm.Data)
	}
}

func jsonString(v any) string { b, _ := json.Marshal(v); return strings.Trim(string(b), `"`) }

func TestEventChain(t *testing.T) {
	cp.Require(t)
	url, ns := serve(t)
	ctx := context.Background()
	c, _ := cloudevents.NewClientHTTP(cloudevents.WithTarget(url))
	// What getport would have replied: a reservation for release ns/app.
	svc := reservation.Settings{LoadBalancerNamespace: ns, PortMin: 20000, PortMax: 30000, ReservationTTL: time.Minute}.New(cp.Client, nil)
	rel := events.Release{Name: "app", Namespace: ns, Services: []events.Service{{Name: "app", Ports: []events.ServicePort{{Name: "mqtt", Port: 1883, Protocol: "TCP"}}}}}
	res, err := svc.Reserve(ctx, reservation.Request{Owner: rel.Owner(), Protocol: "TCP"})
	if err != nil {
		t.Fatal(err)
	}
	reserved := events.PortReservedData{EntryPoint: res.EntryPoint, IP: res.IP, Port: res.Port, Protocol: "TCP", Owner: res.Owner,
		Expose: &events.Expose{ServicePort: intstr.FromString("mqtt")}, Release: &rel}
	var first events.EndpointExposedData
	for i := range 2 {
		e := event.New()
		e.SetID("reserved-1")
		e.SetSource("/berth/getport")
		e.SetType(events.PortReserved)
		_ = e.SetData(cloudevents.ApplicationJSON, reserved)
		reply, result := c.Request(ctx, e)
		var got events.EndpointExposedData
		if !cloudevents.IsACK(result) || reply == nil || reply.Type() != events.EndpointExposed || reply.DataAs(&got) != nil {
			t.Fatalf("port.reserved #%d = %v, %v; want endpoint.exposed", i+1, reply, result)
		}
		if got.Port != res.Port || got.Service != ns+"/app" || got.IP != "192.0.2.9" {
			t.Errorf("endpoint.exposed = %+v, want %s/app at 192.0.2.9:%d", got, ns, res.Port)
		}
		if got.Release == nil || got.Release.Name != "app" {
			t.Errorf("endpoint.exposed carries release %+v, want app", got.Release)
		}
		got.Release = nil
		if i == 0 {
			first = got
		} else if got != first {
			t.Errorf("redelivery answered %+v, want %+v", got, first)
		}
	}
	list, _ := svc.List(ctx, reservation.Filter{})
	if len(list) != 1 || list[0].State != "bound" {
		t.Errorf("ledger = %+v, want one bound entry", list)
	}

	// A port.reserved without intent fails on, without retry.
	bad := event.New()
	bad.SetID("reserved-2")
	bad.SetSource("/berth/getport")
	bad.SetType(events.PortReserved)
	_ = bad.SetData(cloudevents.ApplicationJSON, events.PortReservedData{EntryPoint: res.EntryPoint, Port: res.Port, Owner: "x"})
	if reply, result := c.Request(ctx, bad); !cloudevents.IsACK(result) || reply == nil || reply.Type() != events.EndpointFailed {
		t.Errorf("port.reserved without intent = %v, %v; want endpoint.failed", reply, result)
	}

	// Uninstall unexposes and frees the port.
	u := event.New()
	u.SetID("uninstalled-1")
	u.SetSource("/berth/install")
	u.SetType(events.ReleaseUninstalled)
	_ = u.SetData(cloudevents.ApplicationJSON, events.ReleaseUninstalledData{Release: rel})
	for range 2 {
		if reply, result := c.Request(ctx, u); !cloudevents.IsACK(result) || reply != nil {
			t.Fatalf("release.uninstalled = %v, %v", reply, result)
		}
	}
	if list, _ := svc.List(ctx, reservation.Filter{}); len(list) != 0 {
		t.Errorf("ledger after uninstall = %+v, want empty", list)
	}
	cm, _ := cp.Client.CoreV1().ConfigMaps(ns).Get(ctx, "tcp-services", metav1.GetOptions{})
	lb, _ := cp.Client.CoreV1().Services(ns).Get(ctx, "ingress-nginx-controller", metav1.GetOptions{})
	if len(cm.Data) != 0 || len(lb.Spec.Ports) != 1 {
		t.Errorf("after uninstall tcp-services = %v and the controller has %d ports, want none and 1", cm.Data, len(lb.Spec.Ports))
	}
}

func TestConfig(t *testing.T) {
	t.Setenv("LOAD_BALANCER_NAMESPACE", "ingress")
	t.Setenv("ALLOWED_NAMESPACES", "apps")
	t.Setenv("SHARED_IP_ANNOTATIONS", "bad key!:x")
	var cfg Config
	if err := function.Load(&cfg); err == nil || !strings.Contains(err.Error(), "SHARED_IP_ANNOTATIONS") {
		t.Errorf("Load with a bad annotation key = %v, want an error naming SHARED_IP_ANNOTATIONS", err)
	}
	t.Setenv("SHARED_IP_ANNOTATIONS", "")
	os.Unsetenv("SHARED_IP_ANNOTATIONS")
	cfg = Config{}
	if err := function.Load(&cfg); err != nil || cfg.SharedIPAnnotations["metallb.io/loadBalancerIPs"] != "{ip}" {
		t.Errorf("defaults = %v, %v; want MetalLB's annotations", cfg.SharedIPAnnotations, err)
	}
}
