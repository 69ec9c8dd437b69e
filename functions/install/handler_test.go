package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

var (
	cp     *controlplane.ControlPlane
	charts *chartrepo.Server
)

type withCharts struct{ m *testing.M }

func (w withCharts) Run() int {
	c, err := chartrepo.Package("../../charts/echo-gateway", "")
	if err != nil {
		panic(err)
	}
	if charts, err = chartrepo.Start(c); err != nil {
		panic(err)
	}
	defer charts.Close()
	return w.m.Run()
}

// allowAll lets every caller do everything: these tests are about what each
// operation does; the tenancy test (pkg/testing/localrun) is about who may do it.
type allowAll struct{}

func (allowAll) Check(context.Context, auth.Attributes) error           { return nil }
func (allowAll) Allowed(context.Context, auth.Attributes) (bool, error) { return true, nil }

func TestMain(m *testing.M) { os.Exit(controlplane.RunTests(withCharts{m}, &cp)) }

// serve runs install over real HTTP for a fresh allowed namespace; sink, when
// set, is K_SINK. It returns the URL and the namespace.
func serve(t testing.TB, sink string) (string, string) {
	t.Helper()
	return serveWith(t, sink, allowAll{})
}

// serveWith is serve with ac deciding who may do what, and each of configure
// changing the configuration.
func serveWith(t testing.TB, sink string, ac auth.Access, configure ...func(*Config)) (string, string) {
	t.Helper()
	ns := cp.Namespace(t)
	cfg := Config{
		Config:                   function.Config{MaxRequestBytes: 64 << 10},
		AllowedNamespaces:        []string{ns},
		AllowedChartSources:      []string{charts.RepoURL + "/", "oci://" + charts.Registry + "/charts/"},
		ChartRepositories:        Repositories{"berth": charts.RepoURL},
		AllowPrivateChartSources: true, OCIPlainHTTP: true, CredentialsNamespace: ns,
		MaxValuesBytes: 16 << 10, MaxChartBytes: 1 << 20, ChartCacheEntries: 8, IndexTTL: time.Minute,
		ReleaseTimeout: time.Minute, HelmDriver: "secret",
		Settings: reservation.Settings{LoadBalancerNamespace: ns, PortMin: 20000, PortMax: 30000, ReservationTTL: time.Minute},
	}
	if sink != "" {
		u, _ := url.Parse(sink)
		cfg.Sink = function.URL{URL: u}
	}
	for _, c := range configure {
		c(&cfg)
	}
	log := slog.New(slog.DiscardHandler)
	h := newHandler(cfg, cp.Config, cp.Client, nil, ac, log)
	fn := h.fn()
	if g, ok := ac.(function.Gate); ok {
		fn.Gate = g // a real Guard authenticates callers too
	}
	s := function.NewServer(cfg.Config, fn, log)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv.URL, ns
}

func do(t testing.TB, method, u, body string) (int, []byte, string) {
	t.Helper()
	ct := ""
	if body != "" {
		ct = "application/json"
	}
	return doAs(t, method, u, ct, body)
}

// doAs is do with the body's Content-Type.
func doAs(t testing.TB, method, u, ct, body string) (int, []byte, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
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

// releaseSecrets counts Helm's release records in ns.
func releaseSecrets(t *testing.T, ns string) int {
	l, err := cp.Client.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "owner=helm"})
	if err != nil {
		t.Fatal(err)
	}
	return len(l.Items)
}

func TestBadRequests(t *testing.T) {
	cp.Require(t)
	u, ns := serve(t, "")
	good := `"chartName":"berth/echo-gateway","releaseName":"gw"`
	tests := []struct {
		name, method, path, body string
		status                   int
	}{
		{"not JSON", "POST", "/install", `chartName=x`, 400},
		{"unknown field", "POST", "/install", `{` + good + `,"set":"a=b"}`, 400},
		{"values not an object", "POST", "/install", `{` + good + `,"values":"a=b"}`, 400},
		{"no chart", "POST", "/install", `{"releaseName":"gw"}`, 400},
		{"release name with shell", "POST", "/install", `{"chartName":"berth/echo-gateway","releaseName":"gw$(reboot)"}`, 400},
		{"release name 54 chars", "POST", "/install", `{"chartName":"berth/echo-gateway","releaseName":"` + strings.Repeat("a", 54) + `"}`, 400},
		{"namespace not allowed", "POST", "/install", `{` + good + `,"namespace":"kube-system"}`, 403},
		{"createNamespace not allowed", "POST", "/install", `{` + good + `,"createNamespace":true}`, 403},
		{"repo not allowed", "POST", "/install", `{"chartName":"x/echo-gateway","releaseName":"gw","privateChartsRepo":"https://evil.example.com/charts"}`, 403},
		{"metadata address", "POST", "/install", `{"chartName":"x/c","releaseName":"gw","privateChartsRepo":"http://169.254.169.254/latest"}`, 403},
		{"credentials in URL", "POST", "/install", `{"chartName":"x/c","releaseName":"gw","privateChartsRepo":"https://user:pw@charts.example.com"}`, 400},
		{"oci not allowed", "POST", "/install", `{"chartName":"oci://ghcr.io/x/y","releaseName":"gw"}`, 403},
		{"unknown repo name", "POST", "/install", `{"chartName":"stable/mysql","releaseName":"gw"}`, 400},
		{"chart missing", "POST", "/install", `{"chartName":"berth/nothing","releaseName":"gw"}`, 422},
		{"version missing", "POST", "/install", `{` + good + `,"version":"7.0.0"}`, 422},
		{"timeout not a duration", "POST", "/install", `{` + good + `,"timeout":"soon"}`, 400},
		{"timeout negative", "POST", "/install", `{` + good + `,"timeout":"-5s"}`, 400},
		{"timeout a number", "POST", "/install", `{` + good + `,"timeout":90}`, 400},
		{"rollback timeout not a duration", "POST", "/releases/" + ns + "/gw/rollback", `{"timeout":"soon"}`, 400},
		{"values key with equals", "POST", "/install", `{` + good + `,"values":{"a=b":"c"}}`, 400},
		{"values too large", "POST", "/install", `{` + good + `,"values":{"a":"` + strings.Repeat("x", 20<<10) + `"}}`, 400},
		{"body too large", "POST", "/install", `{` + good + `,"values":{"a":"` + strings.Repeat("x", 70<<10) + `"}}`, 413},
		{"values that do not apply", "POST", "/install", `{` + good + `,"values":{"replicas":"many"}}`, 422},
		{"credentials Secret missing", "POST", "/install", `{` + good + `,"credentialsSecret":"nope"}`, 422},
		{"credentials Secret bad name", "POST", "/install", `{` + good + `,"credentialsSecret":"../x"}`, 400},
		{"dryRun not a bool", "POST", "/install?dryRun=maybe", `{` + good + `}`, 400},
		{"upgrade of nothing", "POST", "/upgrade", `{` + good + `}`, 404},
		{"delete bad name", "POST", "/delete", `{"releaseName":"g w"}`, 400},
		{"delete unknown field", "POST", "/delete", `{"releaseName":"gw","purge":true}`, 400},
		{"install reuseValue not a flag", "POST", "/upgrade", `{` + good + `,"reuseValue":"maybe"}`, 400},
		{"install reuseValue and reuseValues disagree", "POST", "/upgrade", `{` + good + `,"reuseValue":true,"reuseValues":false}`, 400},
		{"install chartName a number", "POST", "/install", `{"chartName":7}`, 400},
		{"install body an array", "POST", "/install", `[{"chartName":"berth/echo-gateway"}]`, 400},
		{"install two JSON objects", "POST", "/install", `{` + good + `}{}`, 400},
		{"install values in the query", "POST", "/install?values%5Bpassword%5D=x", `{` + good + `}`, 400},
		{"upgrade as a dry run (upgrade has none)", "POST", "/upgrade?dryRun=true", `{` + good + `}`, 400},
		{"status of nothing", "GET", "/releases/" + ns + "/gw", "", 404},
		{"status namespace not allowed", "GET", "/releases/kube-system/gw", "", 403},
		{"history of nothing", "GET", "/releases/" + ns + "/gw/history", "", 404},
		{"rollback of nothing", "POST", "/releases/" + ns + "/gw/rollback", `{}`, 404},
		{"rollback negative", "POST", "/releases/" + ns + "/gw/rollback", `{"revision":-1}`, 400},
		{"list namespace not allowed", "GET", "/releases?namespace=default", "", 403},
		{"no route", "PUT", "/install", `{}`, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, b, ct := do(t, tc.method, u+tc.path, tc.body)
			answer.Refusal(t, seedRoutes, tc.method+" "+tc.path, status, ct, b, tc.status)
			if strings.HasPrefix(tc.path, "/install") && !strings.Contains(tc.name, "install ") {
				// berth's own route refuses the same body the same way.
				p := strings.Replace(tc.path, "/install", "/releases", 1)
				status, b, ct := do(t, tc.method, u+p, tc.body)
				answer.Refusal(t, seedRoutes, tc.method+" "+p, status, ct, b, tc.status)
			}
		})
	}
	forms := []struct {
		name, path, ct, body string
		status               int
	}{
		{"form unknown field", "/install", form, "chartName=berth%2Fecho-gateway&cmd=reboot", 400},
		{"form key twice", "/install", form, "chartName=berth%2Fecho-gateway&chartName=berth%2Fother", 400},
		{"form not form-encoded", "/install", form, "chartName=%zz", 400},
		{"form empty chartName (the 2018 README's snippet)", "/install", form, "chartName=", 400},
		{"form values and values[k]", "/install", "application/json", `{"chartName":"berth/echo-gateway","values":{"a":"1"},"values[b]":"2"}`, 400},
		{"text/plain body", "/install", "text/plain", "chartName=berth/echo-gateway", 400},
		{"dryRun in the body", "/install", "application/json", `{"chartName":"berth/echo-gateway","dryRun":true}`, 400},
		{"form to berth's own route", "/releases", form, "chartName=berth%2Fecho-gateway", 400},
	}
	for _, tc := range forms {
		t.Run(tc.name, func(t *testing.T) {
			status, b, ct := doAs(t, "POST", u+tc.path, tc.ct, tc.body)
			answer.Refusal(t, seedRoutes, "POST "+tc.path, status, ct, b, tc.status)
		})
	}
	if n := releaseSecrets(t, ns); n != 0 {
		t.Errorf("bad requests left %d release records", n)
	}
	if l, _ := cp.Client.AppsV1().Deployments(ns).List(context.Background(), metav1.ListOptions{}); len(l.Items) != 0 {
		t.Errorf("bad requests left %d Deployments", len(l.Items))
	}
}

const form = "application/x-www-form-urlencoded"

func TestRoutes(t *testing.T) {
	cp.Require(t)
	u, ns := serve(t, "")
	body := `{"chartName":"anything/echo-gateway","privateChartsRepo":"` + charts.RepoURL + `","releaseName":"gw","values":{"tcpPort":1883}}`
	if status, b, _ := do(t, "POST", u+"/install?dryRun=true", body); status != 200 || !strings.Contains(string(b), "kind: Deployment") {
		t.Errorf("dry run = %d %s", status, b)
	}
	if n := releaseSecrets(t, ns); n != 0 {
		t.Errorf("a dry run left %d release records", n)
	}
	status, b, _ := do(t, "POST", u+"/install", body)
	var rel map[string]any
	if status != 201 || json.Unmarshal(b, &rel) != nil || rel["status"] != "success" || rel["releaseStatus"] != "deployed" || rel["services"] == nil {
		t.Fatalf("POST /install = %d %s", status, b)
	}
	if status, b, _ := do(t, "POST", u+"/install", body); status != 200 {
		t.Errorf("the same install again = %d %s, want 200", status, b)
	}
	if status, b, _ := do(t, "POST", u+"/install", strings.Replace(body, "1883", "1884", 1)); status != 409 {
		t.Errorf("an install with other values = %d %s, want 409", status, b)
	}
	if status, b, _ := do(t, "POST", u+"/upgrade", strings.Replace(body, "1883", "1884", 1)); status != 200 || !strings.Contains(string(b), `"revision":2`) {
		t.Errorf("POST /upgrade = %d %s", status, b)
	}
	if status, b, _ := do(t, "GET", u+"/releases", ""); status != 200 || !strings.Contains(string(b), `"name":"gw"`) {
		t.Errorf("GET /releases = %d %s", status, b)
	}
	if status, b, _ := do(t, "GET", u+"/releases/"+ns+"/gw", ""); status != 200 || !strings.Contains(string(b), `"tcpPort":1884`) || !strings.Contains(string(b), `"resources"`) {
		t.Errorf("GET /releases/%s/gw = %d %s", ns, status, b)
	}
	if status, b, _ := do(t, "GET", u+"/releases/"+ns+"/gw/history", ""); status != 200 || strings.Count(string(b), `"revision"`) != 2 {
		t.Errorf("history = %d %s", status, b)
	}
	if status, b, _ := do(t, "POST", u+"/releases/"+ns+"/gw/rollback", ""); status != 200 || !strings.Contains(string(b), `"revision":3`) {
		t.Errorf("rollback = %d %s", status, b)
	}
	for range 2 {
		if status, b, _ := do(t, "DELETE", u+"/releases/"+ns+"/gw", ""); status != 200 || !strings.Contains(string(b), "uninstalled") {
			t.Errorf("DELETE = %d %s", status, b)
		}
	}
	if n := releaseSecrets(t, ns); n != 0 {
		t.Errorf("%d release records after DELETE", n)
	}
}

func TestCredentialsComeFromASecret(t *testing.T) {
	cp.Require(t)
	u, ns := serve(t, "")
	secret := func(name, source string) {
		t.Helper()
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
			Data: map[string][]byte{"username": []byte("robot"), "password": []byte("hunter2")}}
		s.Annotations = map[string]string{AnnotationNamespaces: ns}
		if source != "" {
			s.Annotations[AnnotationChartSource] = source
		}
		if _, err := cp.Client.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	secret("repo-creds", charts.RepoURL)
	secret("other-creds", "https://charts.example.com")
	secret("unbound-creds", "")
	elsewhere := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "elsewhere-creds",
		Annotations: map[string]string{AnnotationChartSource: charts.RepoURL, AnnotationNamespaces: "team-b,team-c"}},
		Data: map[string][]byte{"username": []byte("robot"), "password": []byte("hunter2")}}
	if _, err := cp.Client.CoreV1().Secrets(ns).Create(context.Background(), elsewhere, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	status, b, _ := do(t, "POST", u+"/install", `{"chartName":"berth/echo-gateway","releaseName":"gw","credentialsSecret":"repo-creds"}`)
	if status != 201 || strings.Contains(string(b), "hunter2") {
		t.Errorf("install with credentials = %d %s", status, b)
	}
	for _, tc := range []struct {
		secret string
		want   int
	}{{"other-creds", 403}, {"unbound-creds", 422}, {"elsewhere-creds", 403}} {
		before := charts.Requests("/index.yaml")
		status, b, _ := do(t, "POST", u+"/install", `{"chartName":"berth/echo-gateway","releaseName":"gw2","credentialsSecret":"`+tc.secret+`"}`)
		if status != tc.want || strings.Contains(string(b), "hunter2") {
			t.Errorf("install with %s = %d %s, want %d", tc.secret, status, b, tc.want)
		}
		if n := charts.Requests("/index.yaml") - before; n != 0 {
			t.Errorf("install with %s sent %d requests to the repository", tc.secret, n)
		}
	}
}

// noGet allows every operation but reading releases.
type noGet struct{}

func (noGet) Check(_ context.Context, a auth.Attributes) error {
	if a.Verb == "get" {
		return auth.ErrDenied
	}
	return nil
}
func (n noGet) Allowed(ctx context.Context, a auth.Attributes) (bool, error) {
	return n.Check(ctx, a) == nil, nil
}

// TestChartMessagesAndDryRuns: a chart's fail message reaches only a caller who
// may read the release; a dry run needs that too, and answers rendered Secrets
// redacted.
func TestChartMessagesAndDryRuns(t *testing.T) {
	cp.Require(t)
	for _, c := range []struct {
		name string
		tmpl string
	}{
		{"fails", `{{ fail "the-secret-is-42" }}`},
		{"with-secret", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {token: hunter2}\n"},
	} {
		ch, err := chartrepo.FromTemplates(c.name, map[string]string{"x.yaml": c.tmpl})
		if err != nil {
			t.Fatal(err)
		}
		if err := charts.Add(ch); err != nil {
			t.Fatal(err)
		}
	}
	reader, _ := serve(t, "")
	writer, _ := serveWith(t, "", noGet{})
	for _, tc := range []struct {
		name, url, body string
		want            int
		shows, hides    string
	}{
		{"fail, to a reader", reader + "/install", `{"chartName":"berth/fails","releaseName":"f"}`, 422, "the-secret-is-42", ""},
		{"fail, to a caller who may not read", writer + "/install", `{"chartName":"berth/fails","releaseName":"f"}`, 422, "may get releases", "the-secret-is-42"},
		{"dry run by a caller who may not read", writer + "/install?dryRun=true", `{"chartName":"berth/with-secret","releaseName":"s"}`, 403, "", "hunter2"},
		{"dry run, Secrets redacted", reader + "/install?dryRun=true", `{"chartName":"berth/with-secret","releaseName":"s"}`, 200, "(redacted)", "hunter2"},
	} {
		status, b, _ := do(t, "POST", tc.url, tc.body)
		if status != tc.want || !strings.Contains(string(b), tc.shows) || tc.hides != "" && strings.Contains(string(b), tc.hides) {
			t.Errorf("%s: %d %s; want %d, showing %q, hiding %q", tc.name, status, b, tc.want, tc.shows, tc.hides)
		}
	}
}

func installEvent(id string, data any) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetType(events.InstallRequested)
	e.SetSource("/test/webapp")
	_ = e.SetData(cloudevents.ApplicationJSON, data)
	return e
}

func TestEvents(t *testing.T) {
	cp.Require(t)
	got := make(chan event.Event, 4)
	p, _ := cloudevents.NewHTTP()
	recv, _ := cloudevents.NewHTTPReceiveHandler(context.Background(), p, func(e event.Event) { got <- e })
	sink := httptest.NewServer(recv)
	defer sink.Close()
	u, ns := serve(t, sink.URL)
	c, _ := cloudevents.NewClientHTTP(cloudevents.WithTarget(u))
	ctx := context.Background()
	data := map[string]any{"chartName": "berth/echo-gateway", "namespace": ns,
		"expose": events.Expose{ServicePort: intstr.FromString("tcp"), Protocol: "TCP"}}
	var name string
	for i := range 2 { // at-least-once delivery: the same event twice
		reply, res := c.Request(ctx, installEvent("req-1", data))
		var in events.ReleaseInstalledData
		if !cloudevents.IsACK(res) || reply == nil || reply.Type() != events.ReleaseInstalled || reply.DataAs(&in) != nil {
			t.Fatalf("install.requested #%d = %v, %v", i+1, reply, res)
		}
		if reply.Extensions()[events.ExtensionExpose] != "true" || in.Expose == nil || len(in.Release.Services) != 1 {
			t.Errorf("release.installed = %s, want the expose intent and the Service", reply.Data())
		}
		if i == 1 && in.Release.Name != name {
			t.Errorf("redelivery answered release %q, want %q", in.Release.Name, name)
		}
		name = in.Release.Name
		<-got // the reply also went to K_SINK
	}
	if n := releaseSecrets(t, ns); n != 1 {
		t.Errorf("the same event twice left %d release records, want 1", n)
	}
	// A failing install replies install.failed, without the request's values.
	bad := installEvent("req-2", map[string]any{"chartName": "berth/nothing", "namespace": ns, "values": map[string]any{"password": "hunter2"}})
	if reply, res := c.Request(ctx, bad); !cloudevents.IsACK(res) || reply == nil || reply.Type() != events.InstallFailed || strings.Contains(string(reply.Data()), "hunter2") {
		t.Errorf("failing install.requested = %v, %v", reply, res)
	}
	<-got
	// Uninstalling over HTTP emits release.uninstalled to K_SINK.
	if status, b, _ := do(t, "DELETE", u+"/releases/"+ns+"/"+name, ""); status != 200 {
		t.Fatalf("DELETE = %d %s", status, b)
	}
	select {
	case e := <-got:
		var d events.ReleaseUninstalledData
		if e.Type() != events.ReleaseUninstalled || e.DataAs(&d) != nil || d.Release.Name != name {
			t.Errorf("sink got %v, want release.uninstalled for %s", e, name)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no release.uninstalled reached the sink")
	}
	// An uninstall.requested event replies release.uninstalled, also when the
	// release is already gone.
	u2 := event.New()
	u2.SetID("un-1")
	u2.SetSource("/test")
	u2.SetType(events.UninstallRequested)
	_ = u2.SetData(cloudevents.ApplicationJSON, map[string]string{"releaseName": name, "namespace": ns})
	if reply, res := c.Request(ctx, u2); !cloudevents.IsACK(res) || reply == nil || reply.Type() != events.ReleaseUninstalled {
		t.Errorf("uninstall.requested = %v, %v", reply, res)
	}
}

func TestDerivedName(t *testing.T) {
	tests := []struct{ chart, want string }{
		{"berth/echo-gateway", "echo-gateway-"},
		{"oci://r.example.com/charts/MQTT_Gateway", "mqttgateway-"},
		{"x/" + strings.Repeat("a", 60), strings.Repeat("a", 44) + "-"},
		{"x/9lives", "r9lives-"},
	}
	for _, tc := range tests {
		got := derivedName(tc.chart, "src\x00id")
		if !strings.HasPrefix(got, tc.want) || len(got) > 53 || got != derivedName(tc.chart, "src\x00id") || got == derivedName(tc.chart, "src\x00id2") {
			t.Errorf("derivedName(%q) = %q, want prefix %q, stable per key, at most 53", tc.chart, got, tc.want)
		}
	}
}

func TestConfig(t *testing.T) {
	for env, want := range map[string]string{
		"ALLOWED_NAMESPACES=":            "ALLOWED_NAMESPACES",
		"ALLOWED_NAMESPACES=Bad_NS":      "ALLOWED_NAMESPACES",
		"CHART_REPOSITORIES=stable":      "CHART_REPOSITORIES",
		"ALLOWED_CHART_SOURCES=ftp://x/": "ALLOWED_CHART_SOURCES",
		"HELM_DRIVER=sql":                "HELM_DRIVER",
		"RELEASE_TIMEOUT=5":              "RELEASE_TIMEOUT",
		"LOAD_BALANCER_NAMESPACE=":       "LOAD_BALANCER_NAMESPACE",
	} {
		k, v, _ := strings.Cut(env, "=")
		t.Run(env, func(t *testing.T) {
			t.Setenv("ALLOWED_NAMESPACES", "apps")
			t.Setenv("LOAD_BALANCER_NAMESPACE", "ingress")
			t.Setenv(k, v)
			var cfg Config
			if err := function.Load(&cfg); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Load with %s = %v, want an error naming %s", env, err, want)
			}
		})
	}
	t.Setenv("ALLOWED_NAMESPACES", "apps,tenants")
	t.Setenv("LOAD_BALANCER_NAMESPACE", "ingress")
	t.Setenv("CHART_REPOSITORIES", "berth=https://charts.example.com,oci=oci://r.example.com/charts")
	var cfg Config
	if err := function.Load(&cfg); err != nil || len(cfg.AllowedNamespaces) != 2 || cfg.ChartRepositories["oci"] != "oci://r.example.com/charts" {
		t.Errorf("Load = %+v, %v", cfg, err)
	}
}
