package localrun

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/seed"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

// tenantB is the second tenant's namespace.
const tenantB = "tenant-b"

// caller is one identity calling berth over HTTP.
type caller struct {
	name  string
	token string
}

type answer struct {
	status int
	body   []byte
	header http.Header
}

func (c caller) do(t *testing.T, method, url, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: b, header: resp.Header}
}

// deliver posts e to a function as a Trigger would, and returns the status and
// the reply's problem status, if it replied with a *.failed event.
func (c caller) deliver(t *testing.T, url string, e event.Event) (int, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	if err := cehttp.WriteRequest(context.Background(), binding.ToMessage(&e), req); err != nil {
		t.Fatal(err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	reply, err := cehttp.NewEventFromHTTPResponse(resp)
	if err != nil || !strings.HasSuffix(reply.Type(), ".failed") {
		return resp.StatusCode, 0
	}
	var f function.Failure
	_ = reply.DataAs(&f)
	return resp.StatusCode, f.Problem.Status
}

func tenantEvent(id, typ, tenant string, data any) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetSource("/tenancy-test")
	e.SetType(typ)
	if tenant != "" {
		e.SetExtension(events.ExtensionTenant, tenant)
	}
	_ = e.SetData(cloudevents.ApplicationJSON, data)
	return e
}

func mustStatus(t *testing.T, what string, a answer, want int) answer {
	t.Helper()
	if a.status != want {
		t.Fatalf("%s = %d %s, want %d", what, a.status, a.body, want)
	}
	return a
}

func endpointOf(t *testing.T, a answer) (string, int) {
	t.Helper()
	var end struct {
		EntryPoint string
		Port       int
	}
	if err := json.Unmarshal(a.body, &end); err != nil || end.Port == 0 {
		t.Fatalf("endpoint %s: %v", a.body, err)
	}
	return end.EntryPoint, end.Port
}

// TestTenancy runs the three functions as processes against the harness API
// server, with two tenants, and tries what a hostile tenant or an anonymous
// caller would, on every endpoint. Each attempt is refused with its status and
// writes nothing; the rightful tenant's same operations succeed.
func TestTenancy(t *testing.T) {
	ctx, env := startForTest(t, Options{Namespaces: []string{tenantB},
		Env: []string{"MAX_PORTS_PER_NAMESPACE=6", "RATE_LIMIT_QPS=2", "RATE_LIMIT_BURST=60", "AUTH_CACHE_TTL=2s"}})
	cp := env.CP
	token := func(ns, name, role, aud string) caller {
		t.Helper()
		if err := ServiceAccount(ctx, cp.Client, ns, name, role); err != nil {
			t.Fatal(err)
		}
		tok, err := Token(ctx, cp.Client, ns, name, aud, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return caller{name: ns + "/" + name, token: "Bearer " + tok}
	}
	alice := caller{name: "alice (the demo tenant)", token: "Bearer " + env.Token}
	bob := token(tenantB, "bob", "berth-tenant", Audience)
	vera := token(tenantB, "vera", "berth-viewer", Audience)
	mallory := token(tenantB, "mallory", "", Audience)
	bobOtherAudience := token(tenantB, "bob", "berth-tenant", "kubernetes")
	bobOtherAudience.name = "bob, token for another audience"
	broker := caller{name: "the broker's delivery identity", token: "Bearer " + env.brokerToken}
	anonymous := caller{name: "anonymous"}
	sa, err := cp.Client.CoreV1().ServiceAccounts(tenantB).Get(ctx, "bob", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	signed := func(exp time.Time) caller {
		tok, err := cp.SignToken(controlplaneClaims(tenantB, "bob", string(sa.UID), exp))
		if err != nil {
			t.Fatal(err)
		}
		return caller{name: "bob, signed token expiring " + exp.Format(time.TimeOnly), token: "Bearer " + tok}
	}
	bobSigned, bobExpired := signed(time.Now().Add(time.Hour)), signed(time.Now().Add(-time.Minute))

	inst, gp, si := env.URLs["install"], env.URLs["getport"], env.URLs["setingress"]
	chart := func(ns, name string) string {
		return fmt.Sprintf(`{"chartName":"demo/echo-gateway","releaseName":%q,"namespace":%q}`, name, ns)
	}
	// The rightful tenants set up: a release each, exposed, and a reservation.
	mustStatus(t, "alice installs", alice.do(t, "POST", inst+"/install", chart(AppsNamespace, "a-gw")), 201)
	mustStatus(t, "bob installs", bob.do(t, "POST", inst+"/install", chart(tenantB, "b-gw")), 201)
	expose := func(ns, svc string) string {
		return fmt.Sprintf(`{"serviceName":%q,"serviceNamespace":%q,"servicePort":"tcp","lbip":%q}`, svc, ns, SharedIP)
	}
	aEP, aPort := endpointOf(t, mustStatus(t, "alice exposes", alice.do(t, "POST", si+"/exposures?wait=30s", expose(AppsNamespace, "a-gw")), 200))
	endpointOf(t, mustStatus(t, "bob exposes", bob.do(t, "POST", si+"/exposures?wait=30s", expose(tenantB, "b-gw")), 200))
	rEP, rPort := endpointOf(t, mustStatus(t, "alice reserves", alice.do(t, "POST", gp+"/ports", `{"owner":"berth-apps/spare"}`), 200))
	mustStatus(t, "a signed, live token (the expired one below is signed the same way)", bobSigned.do(t, "GET", inst+"/releases?namespace="+tenantB, ""), 200)

	aExposure := fmt.Sprintf("%s/exposures/%s/TCP/%d", si, aEP, aPort)
	aPortURL := fmt.Sprintf("%s/ports/%s/TCP/%d", gp, rEP, rPort)
	before := cp.Fingerprint(t, AppsNamespace, tenantB, IngressNamespace, SystemNamespace)
	releaseRecords := func() int {
		l, err := cp.Client.CoreV1().Secrets("").List(ctx, metav1.ListOptions{LabelSelector: "owner=helm"})
		if err != nil {
			t.Fatal(err)
		}
		return len(l.Items)
	}
	records := releaseRecords()

	attempts := []struct {
		name        string
		who         caller
		method, url string
		body        string
		want        int
	}{
		{"no token: list releases", anonymous, "GET", inst + "/releases", "", 401},
		{"no token: install", anonymous, "POST", inst + "/install", chart(AppsNamespace, "x"), 401},
		{"no token: list ports", anonymous, "GET", gp + "/ports", "", 401},
		{"no token: seed getport", anonymous, "GET", gp + "/getport?namespace=" + AppsNamespace, "", 401},
		{"no token: expose", anonymous, "POST", si + "/exposures", expose(AppsNamespace, "a-gw"), 401},
		{"no token: delete an exposure", anonymous, "DELETE", aExposure, "", 401},
		{"malformed token", caller{"garbage", "Bearer not-a-jwt"}, "GET", inst + "/releases", "", 401},
		{"basic auth instead of a token", caller{"basic", "Basic YWxpY2U6c2VjcmV0"}, "GET", gp + "/ports", "", 401},
		{"a token for another audience", bobOtherAudience, "GET", si + "/exposures", "", 401},
		{"an expired token", bobExpired, "GET", inst + "/releases?namespace=" + tenantB, "", 401},
		{"install into another tenant's namespace", bob, "POST", inst + "/install", chart(AppsNamespace, "x"), 403},
		{"dry-run into another tenant's namespace", bob, "POST", inst + "/install?dryRun=true", chart(AppsNamespace, "x"), 403},
		{"take over another tenant's release by upgrade", bob, "POST", inst + "/upgrade", chart(AppsNamespace, "a-gw"), 403},
		{"install with upgrade over another tenant's release", bob, "POST", inst + "/install", `{"chartName":"demo/echo-gateway","releaseName":"a-gw","namespace":"berth-apps","upgrade":true}`, 403},
		{"roll back another tenant's release", bob, "POST", inst + "/releases/berth-apps/a-gw/rollback", "", 403},
		{"delete another tenant's release", bob, "DELETE", inst + "/releases/berth-apps/a-gw", "", 403},
		{"seed-delete another tenant's release", bob, "POST", inst + "/delete", `{"releaseName":"a-gw","namespace":"berth-apps"}`, 403},
		{"read another tenant's release values", bob, "GET", inst + "/releases/berth-apps/a-gw", "", 403},
		{"read another tenant's history", bob, "GET", inst + "/releases/berth-apps/a-gw/history", "", 403},
		{"list another tenant's releases", bob, "GET", inst + "/releases?namespace=" + AppsNamespace, "", 403},
		{"a viewer installs", vera, "POST", inst + "/install", chart(tenantB, "v"), 403},
		{"a ServiceAccount with no role lists", mallory, "GET", inst + "/releases?namespace=" + tenantB, "", 403},
		{"reserve as another tenant's owner", bob, "POST", gp + "/ports", `{"owner":"berth-apps/a-gw"}`, 403},
		{"seed getport in another tenant's namespace", bob, "GET", gp + "/getport?namespace=" + AppsNamespace, "", 403},
		{"release another tenant's port", bob, "DELETE", aPortURL, "", 403},
		{"release another tenant's port naming its owner", bob, "DELETE", aPortURL + "?owner=berth-apps/spare", "", 403},
		{"run the repair sweep", bob, "POST", gp + "/sweep", "", 403},
		{"read every entry point's fill (operators only)", bob, "GET", gp + "/ports?summary=true", "", 403},
		{"a namespace's viewer reads every entry point's fill", vera, "GET", gp + "/ports?summary=true", "", 403},
		{"an owner too long for the ledger", bob, "POST", gp + "/ports", `{"owner":"tenant-b/` + strings.Repeat("o", 200) + `"}`, 400},
		{"an owner without a namespace", bob, "POST", gp + "/ports", `{"owner":"gw"}`, 400},
		{"take over another tenant's port by naming its owner", bob, "POST", si + "/exposures",
			fmt.Sprintf(`{"serviceName":"b-gw","serviceNamespace":"tenant-b","servicePort":"tcp","owner":"berth-apps/a-gw:%d"}`, 7000), 403},
		{"expose another tenant's Service", bob, "POST", si + "/exposures", expose(AppsNamespace, "a-gw"), 403},
		{"expose the ingress controller's admission port", bob, "POST", si + "/exposures",
			`{"serviceName":"ingress-nginx-controller","serviceNamespace":"berth-ingress","servicePort":80}`, 403},
		{"seed setrule on another tenant's Service", bob, "POST", si + "/setrule", expose(AppsNamespace, "a-gw"), 403},
		{"seed GET setingress on another tenant's Service", bob, "GET", si + "/setingress?serviceNamespace=berth-apps&serviceName=a-gw&servicePort=tcp", "", 403},
		{"unexpose another tenant's port", bob, "DELETE", aExposure, "", 403},
		{"a tenant's token is no delivery identity", bob, "POST", inst + "/", "", 403},
	}
	for _, a := range attempts {
		t.Run(a.name, func(t *testing.T) {
			var got answer
			if strings.HasSuffix(a.url, "/") && a.method == "POST" {
				status, _ := a.who.deliver(t, a.url, tenantEvent("bob-1", events.InstallRequested, tenantB, map[string]string{"chartName": "demo/echo-gateway", "namespace": tenantB}))
				got = answer{status: status}
			} else {
				got = a.who.do(t, a.method, a.url, a.body)
			}
			if got.status != a.want {
				t.Errorf("%s: %s %s = %d %s, want %d", a.who.name, a.method, a.url, got.status, got.body, a.want)
			}
			// A problem, or on the 2018 routes the 2018 refusal (each
			// function's tests check which route answers which).
			if f, ok := seed.ReadFailure(got.header.Get("Content-Type"), got.body); got.status >= 400 && got.body != nil &&
				!strings.Contains(got.header.Get("Content-Type"), "problem+json") && (!ok || f.Code != got.status) {
				t.Errorf("%s: answered %q %s, want a problem body or a 2018 refusal", a.name, got.header.Get("Content-Type"), got.body)
			}
			if got.status == 401 && got.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", a.name)
			}
		})
	}

	// Events delivered by the broker's identity act only in the tenant they name.
	deliveries := []struct {
		name string
		url  string
		e    event.Event
	}{
		{"install into another namespace than the event's tenant", inst + "/",
			tenantEvent("ev-1", events.InstallRequested, tenantB, map[string]string{"chartName": "demo/echo-gateway", "releaseName": "x", "namespace": AppsNamespace})},
		{"uninstall another tenant's release", inst + "/",
			tenantEvent("ev-2", events.UninstallRequested, tenantB, map[string]string{"releaseName": "a-gw", "namespace": AppsNamespace})},
		{"release.uninstalled for another tenant's release, to setingress", si + "/",
			tenantEvent("ev-3", events.ReleaseUninstalled, tenantB, events.ReleaseUninstalledData{Release: events.Release{Name: "a-gw", Namespace: AppsNamespace}})},
		{"release.uninstalled for another tenant's release, to getport", gp + "/",
			tenantEvent("ev-4", events.ReleaseUninstalled, tenantB, events.ReleaseUninstalledData{Release: events.Release{Name: "a-gw", Namespace: AppsNamespace}})},
		{"port.requested for another tenant's owner", gp + "/",
			tenantEvent("ev-5", events.PortRequested, tenantB, events.PortRequestedData{Owner: "berth-apps/a-gw"})},
		{"install with no tenant named", inst + "/",
			tenantEvent("ev-6", events.InstallRequested, "", map[string]string{"chartName": "demo/echo-gateway", "releaseName": "x", "namespace": AppsNamespace})},
	}
	for _, d := range deliveries {
		if status, failed := broker.deliver(t, d.url, d.e); status != 200 || failed != 403 {
			t.Errorf("delivery %q = %d with a failure of status %d, want a 403 failure reply", d.name, status, failed)
		}
	}
	if status, _ := anonymous.deliver(t, inst+"/", deliveries[0].e); status != 401 {
		t.Errorf("an event delivery without a token = %d, want 401", status)
	}

	if after := cp.Fingerprint(t, AppsNamespace, tenantB, IngressNamespace, SystemNamespace); after != before {
		t.Errorf("the refused attempts wrote:\n%s\nwas\n%s", after, before)
	}
	if n := releaseRecords(); n != records {
		t.Errorf("Helm release records: %d, were %d", n, records)
	}

	// Lists show each caller only what it may list.
	for _, l := range []struct {
		who    caller
		url    string
		hidden string
		shown  string
	}{
		{bob, inst + "/releases", `"a-gw"`, `"b-gw"`},
		{bob, gp + "/ports", `berth-apps/`, `tenant-b/`},
		{bob, si + "/exposures", `berth-apps/`, `tenant-b/`},
		{vera, si + "/exposures", `berth-apps/`, `tenant-b/`},
		{alice, gp + "/ports", `tenant-b/`, `berth-apps/`},
	} {
		a := mustStatus(t, l.who.name+" lists "+l.url, l.who.do(t, "GET", l.url, ""), 200)
		if bytes.Contains(a.body, []byte(l.hidden)) || !bytes.Contains(a.body, []byte(l.shown)) {
			t.Errorf("%s: GET %s = %s, want %s shown and %s hidden", l.who.name, l.url, a.body, l.shown, l.hidden)
		}
	}
	mustStatus(t, "mallory lists ports", mallory.do(t, "GET", gp+"/ports", ""), 200)
	if a := mallory.do(t, "GET", gp+"/ports", ""); strings.Contains(string(a.body), "/") {
		t.Errorf("a ServiceAccount with no role sees %s", a.body)
	}

	// Two ports of one Service get a public port each; re-binding a held port to
	// another Service is refused.
	if _, err := cp.Client.CoreV1().Services(AppsNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "two-ports"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "two"}, Ports: []corev1.ServicePort{
			{Name: "a", Port: 7000, Protocol: corev1.ProtocolTCP}, {Name: "b", Port: 7001, Protocol: corev1.ProtocolTCP}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, p1 := endpointOf(t, mustStatus(t, "expose port a", alice.do(t, "POST", si+"/exposures?wait=30s", `{"serviceName":"two-ports","serviceNamespace":"berth-apps","servicePort":7000,"lbip":"192.0.2.10"}`), 200))
	_, p2 := endpointOf(t, mustStatus(t, "expose port b", alice.do(t, "POST", si+"/exposures?wait=30s", `{"serviceName":"two-ports","serviceNamespace":"berth-apps","servicePort":7001,"lbip":"192.0.2.10"}`), 200))
	if p1 == p2 {
		t.Errorf("two ports of one Service share public port %d", p1)
	}
	rebind := fmt.Sprintf(`{"serviceName":"a-gw","serviceNamespace":"berth-apps","servicePort":"tcp","owner":"berth-apps/two-ports:7000","entryPoint":"service.shared-ip","port":%d}`, p1)
	mustStatus(t, "re-bind a held port to another Service", alice.do(t, "POST", si+"/exposures", rebind), 409)

	// The rightful tenant's operations succeed.
	mustStatus(t, "alice reads her release", alice.do(t, "GET", inst+"/releases/berth-apps/a-gw", ""), 200)
	mustStatus(t, "alice reads its history", alice.do(t, "GET", inst+"/releases/berth-apps/a-gw/history", ""), 200)
	mustStatus(t, "alice upgrades it", alice.do(t, "POST", inst+"/upgrade", `{"chartName":"demo/echo-gateway","releaseName":"a-gw","namespace":"berth-apps","values":{"settings.greeting":"v2"}}`), 200)
	mustStatus(t, "alice rolls it back", alice.do(t, "POST", inst+"/releases/berth-apps/a-gw/rollback", ""), 200)
	mustStatus(t, "alice releases her port", alice.do(t, "DELETE", aPortURL, ""), 204)
	mustStatus(t, "alice unexposes", alice.do(t, "DELETE", aExposure, ""), 204)
	mustStatus(t, "alice uninstalls", alice.do(t, "DELETE", inst+"/releases/berth-apps/a-gw", ""), 200)

	// Quota: tenant-b holds b-gw's port; it may hold 6 in all.
	var last answer
	for i := range 8 {
		last = bob.do(t, "POST", gp+"/ports", fmt.Sprintf(`{"owner":"tenant-b/q-%d"}`, i))
		if last.status != 200 {
			break
		}
	}
	if last.status != 403 || !strings.Contains(string(last.body), "bound is 6") {
		t.Errorf("past the namespace's quota: %d %s, want 403 naming the bound", last.status, last.body)
	}
	if n := countOwned(t, env, "tenant-b/"); n != 6 {
		t.Errorf("tenant-b holds %d ports, want its quota of 6", n)
	}

	// Rate: 2/s with a burst of 60; the table used some of bob's burst.
	limited := 0
	for range 80 {
		a := bob.do(t, "GET", gp+"/ports", "")
		if a.status == 429 {
			limited++
			if s, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || s < 1 {
				t.Errorf("429 with Retry-After %q", a.header.Get("Retry-After"))
			}
		}
	}
	if limited == 0 {
		t.Error("80 requests at once past a burst of 60 were never limited")
	}
	if a := alice.do(t, "GET", gp+"/ports", ""); a.status != 200 {
		t.Errorf("another caller while bob is limited = %d, want 200", a.status)
	}
}

func controlplaneClaims(ns, name, uid string, exp time.Time) controlplane.TokenClaims {
	return controlplane.TokenClaims{Namespace: ns, ServiceAccount: name, UID: uid, Audience: Audience,
		NotBefore: exp.Add(-2 * time.Hour), Expires: exp}
}

func countOwned(t *testing.T, env *Env, prefix string) int {
	t.Helper()
	l, err := env.CP.Client.CoreV1().ConfigMaps(IngressNamespace).List(context.Background(), metav1.ListOptions{LabelSelector: ledger.LabelPart + "=block"})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, cm := range l.Items {
		for _, v := range cm.Data {
			if strings.Contains(v, `"o":"`+prefix) {
				n++
			}
		}
	}
	return n
}
