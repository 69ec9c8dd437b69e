package release

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	helmrelease "helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

var (
	cp       *controlplane.ControlPlane
	charts   *chartrepo.Server
	chartDir = "../../charts/echo-gateway"
)

func TestMain(m *testing.M) {
	os.Exit(controlplane.RunTests(runWithRepo{m}, &cp))
}

// runWithRepo serves the sample chart (0.1.0 and 0.2.0) for the package's tests.
type runWithRepo struct{ m *testing.M }

func (r runWithRepo) Run() int {
	var pkgs []chartrepo.Chart
	for _, v := range []string{"0.1.0", "0.2.0"} {
		c, err := chartrepo.Package(chartDir, v)
		if err != nil {
			panic(err)
		}
		pkgs = append(pkgs, c)
	}
	var err error
	if charts, err = chartrepo.Start(pkgs...); err != nil {
		panic(err)
	}
	defer charts.Close()
	return r.m.Run()
}

func newInstaller(t testing.TB, namespaces ...string) *Installer {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	p := Policy{Namespaces: namespaces, Sources: []string{charts.RepoURL, "oci://" + charts.Registry + "/"}, AllowPrivateAddresses: true, MaxValuesBytes: 64 << 10}
	return &Installer{
		Configs: NewConfigs(cp.Config, "secret", "", log),
		Fetcher: NewFetcher(FetcherOptions{Policy: p, Repos: map[string]string{"berth": charts.RepoURL}, PlainHTTP: true,
			MaxChartBytes: 1 << 20, CacheEntries: 16, IndexTTL: time.Minute}),
		Policy: p, DefaultTimeout: time.Minute, Log: log,
	}
}

func TestInstallFromEachSource(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	refs := map[string]ChartRef{
		"privateChartsRepo": {Name: "anything/echo-gateway", Repo: charts.RepoURL},
		"index.yaml URL":    {Name: "echo-gateway", Repo: charts.RepoURL + "/index.yaml", Version: "0.1.0"},
		"configured repo":   {Name: "berth/echo-gateway", Version: "~0.1"},
		"oci":               {Name: "oci://" + charts.Registry + "/charts/echo-gateway", Version: "0.2.0"},
	}
	for name, ref := range refs {
		t.Run(name, func(t *testing.T) {
			ns := cp.Namespace(t)
			in := newInstaller(t, ns)
			r, created, err := in.Install(ctx, Request{Chart: ref, ReleaseName: "gw", Namespace: ns})
			if err != nil || !created {
				t.Fatalf("Install = %+v, %v, %v", r, created, err)
			}
			if r.Status != "deployed" || r.Revision != 1 || r.Chart != "echo-gateway" || r.Source == nil {
				t.Errorf("Install = %+v", r)
			}
			if len(r.Services) != 1 || r.Services[0].Name != "gw" || len(r.Services[0].Ports) != 2 || r.Services[0].Ports[1].Protocol != "UDP" {
				t.Errorf("Services = %+v, want gw with a TCP and a UDP port", r.Services)
			}
			if _, err := cp.Client.AppsV1().Deployments(ns).Get(ctx, "gw", metav1.GetOptions{}); err != nil {
				t.Errorf("the Deployment was not created: %v", err)
			}
		})
	}
}

func TestLifecycle(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	req := Request{Chart: ChartRef{Name: "berth/echo-gateway", Version: "0.1.0"}, ReleaseName: "gw", Namespace: ns,
		Values: map[string]any{"tcpPort": 1883}}
	if _, _, err := in.Install(ctx, req); err != nil {
		t.Fatal(err)
	}
	req.Chart.Version = "0.2.0"
	up, err := in.Upgrade(ctx, req)
	if err != nil || up.Revision != 2 || up.Version != "0.2.0" {
		t.Fatalf("Upgrade = %+v, %v", up, err)
	}
	hist, err := in.History(ctx, ns, "gw")
	if err != nil || len(hist) != 2 || hist[0].Status != "superseded" || hist[1].Status != "deployed" {
		t.Fatalf("History = %+v, %v", hist, err)
	}
	rb, err := in.Rollback(ctx, ns, "gw", 1, 0)
	if err != nil || rb.Revision != 3 || rb.Version != "0.1.0" {
		t.Fatalf("Rollback = %+v, %v", rb, err)
	}
	d, err := in.Status(ctx, ns, "gw")
	if err != nil || d.Values["tcpPort"] != float64(1883) || !strings.Contains(d.Notes, "1883") || len(d.Resources) != 3 {
		t.Errorf("Status = %+v, %v", d, err)
	}
	// The latest revision of each release, by name.
	if _, _, err := in.Install(ctx, Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "alpha", Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	list, err := in.List(ctx, "")
	if err != nil || len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "gw" || list[1].Revision != 3 || list[1].Version != "0.1.0" || list[1].Status != "deployed" {
		t.Errorf("List = %+v, %v; want alpha, then gw at revision 3 (0.1.0, deployed)", list, err)
	}
	if _, _, err := in.Uninstall(ctx, ns, "alpha", 0); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		_, gone, err := in.Uninstall(ctx, ns, "gw", 0)
		if err != nil || gone != (i == 0) {
			t.Errorf("Uninstall #%d = %v, %v; want gone=%v", i+1, gone, err, i == 0)
		}
	}
	if list, _ := in.List(ctx, ns); len(list) != 0 {
		t.Errorf("List after uninstall = %+v", list)
	}
	if _, err := in.Status(ctx, ns, "gw"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status after uninstall = %v, want ErrNotFound", err)
	}
}

// settings reads back the values the chart rendered into its ConfigMap.
func settings(t *testing.T, ns, name string) map[string]any {
	t.Helper()
	cm, err := cp.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(cm.Data["settings.json"]), &out); err != nil {
		t.Fatalf("settings.json %q: %v", cm.Data["settings.json"], err)
	}
	return out
}

// TestValuesArriveAsSetTypesThem: values' strings are typed as --set types
// them (the 2018 meaning), other JSON keeps its type, valuesObject is exact,
// and nothing a shell would read is read.
func TestValuesArriveAsSetTypesThem(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	shell := "$(rm -rf /); `reboot` && echo ${HOME} | sh\nsecond line 'quoted' \"double\" \\ back, comma=equals"
	_, _, err := in.Install(ctx, Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "gw", Namespace: ns,
		ValuesObject: map[string]any{"settings": map[string]any{"fromObject": "kept", "overridden": "no", "objectTrue": "true", "objectTwo": "2"}},
		Values: map[string]any{
			"settings.string":       shell,
			"settings.stringTrue":   "true",
			"settings.stringTwo":    "2",
			"settings.stringFloat":  "2.5",
			"settings.stringList":   "{a,b}",
			"settings.int":          42,
			"settings.float":        2.5,
			"settings.bool":         true,
			"settings.null":         nil,
			"settings.list":         []any{"a", 1, false},
			"settings.map":          map[string]any{"k": "v"},
			"settings.overridden":   "yes",
			"settings.dotted\\.key": "escaped",
			"settings.items[1]":     "second",
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := settings(t, ns, "gw")
	want := map[string]any{
		"fromObject": "kept", "overridden": "yes", "objectTrue": "true", "objectTwo": "2",
		"string": shell, "stringTrue": true, "stringTwo": float64(2), "stringFloat": "2.5", "stringList": "{a,b}", "int": float64(42), "float": 2.5,
		"bool": true, "null": nil, "list": []any{"a", float64(1), false}, "map": map[string]any{"k": "v"},
		"dotted.key": "escaped", "items": []any{nil, "second"},
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("rendered settings\n%s\nwant\n%s", gb, wb)
	}
}

func TestInstallIsIdempotent(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	req := Request{Chart: ChartRef{Name: "berth/echo-gateway", Version: "0.1.0"}, ReleaseName: "gw", Namespace: ns, Values: map[string]any{"replicas": 2}}
	var wg sync.WaitGroup
	created := make([]bool, 5)
	errs := make([]error, 5)
	for i := range 5 {
		wg.Go(func() { _, created[i], errs[i] = in.Install(ctx, req) })
	}
	wg.Wait()
	n := 0
	for i := range 5 {
		if errs[i] != nil {
			t.Errorf("concurrent Install #%d: %v", i, errs[i])
		}
		if created[i] {
			n++
		}
	}
	hist, _ := in.History(ctx, ns, "gw")
	if n != 1 || len(hist) != 1 {
		t.Errorf("5 identical installs created %d releases and %d revisions, want 1 and 1", n, len(hist))
	}
	req.Values["replicas"] = 3
	if _, _, err := in.Install(ctx, req); !errors.Is(err, ErrExists) || problem.Status(err) != 409 {
		t.Errorf("Install with other values = %v, want ErrExists (409)", err)
	}
	req.Upgrade = true
	r, _, err := in.Install(ctx, req)
	if err != nil || r.Revision != 2 {
		t.Errorf("Install with upgrade = %+v, %v; want revision 2", r, err)
	}
	if _, _, err := in.Install(ctx, req); err != nil {
		t.Errorf("the same install again: %v", err)
	}
	if hist, _ := in.History(ctx, ns, "gw"); len(hist) != 2 {
		t.Errorf("%d revisions, want 2", len(hist))
	}
	// A release installed without values is the same as a request without values.
	bare := Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "bare", Namespace: ns}
	for i := range 2 {
		if _, created, err := in.Install(ctx, bare); err != nil || created != (i == 0) {
			t.Errorf("Install without values #%d = %v, %v", i+1, created, err)
		}
	}
}

func TestStuckPendingRelease(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	req := Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "gw", Namespace: ns, Timeout: time.Minute}
	if _, _, err := in.Install(ctx, req); err != nil {
		t.Fatal(err)
	}
	cfg, _ := in.Configs(ns)
	stick := func(age time.Duration) {
		cur, err := cfg.Releases.Last("gw")
		if err != nil {
			t.Fatal(err)
		}
		cur.Info.Status = helmrelease.StatusPendingUpgrade
		cur.Info.LastDeployed = cur.Info.LastDeployed.Add(-age)
		if err := cfg.Releases.Update(cur); err != nil {
			t.Fatal(err)
		}
	}
	stick(0)
	if _, _, err := in.Install(ctx, req); !errors.Is(err, ErrInProgress) || problem.Status(err) != 409 {
		t.Errorf("Install while pending = %v, want ErrInProgress (409)", err)
	}
	stick(2 * time.Hour)
	r, _, err := in.Install(ctx, req)
	if err != nil || r.Status != "deployed" || r.Revision != 2 {
		t.Errorf("Install after a stuck pending-upgrade = %+v, %v; want deployed revision 2", r, err)
	}
	hist, _ := in.History(ctx, ns, "gw")
	if len(hist) != 2 || hist[0].Status != "failed" && hist[0].Status != "superseded" {
		t.Errorf("history = %+v", hist)
	}
}

func TestDryRunAndCache(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	before := charts.Requests("/index.yaml")
	r, created, err := in.Install(ctx, Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "dry", Namespace: ns, DryRun: true})
	if err != nil || created || !strings.Contains(r.Manifest, "kind: Deployment") {
		t.Fatalf("dry run = %+v, %v, %v", r, created, err)
	}
	if list, _ := in.List(ctx, ns); len(list) != 0 {
		t.Errorf("a dry run left releases: %+v", list)
	}
	if _, _, err := in.Install(ctx, Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "wet", Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	if n := charts.Requests("/index.yaml") - before; n != 1 {
		t.Errorf("two installs fetched the index %d times, want 1 (cached)", n)
	}
}

func TestBadRequestsInstallNothing(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	good := func() Request {
		return Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "gw", Namespace: ns}
	}
	with := func(f func(*Request)) Request { r := good(); f(&r); return r }
	tests := []struct {
		name   string
		req    Request
		status int
	}{
		{"empty release name", with(func(r *Request) { r.ReleaseName = "" }), 400},
		{"release name too long", with(func(r *Request) { r.ReleaseName = strings.Repeat("a", 54) }), 400},
		{"release name with shell", with(func(r *Request) { r.ReleaseName = "gw;rm -rf" }), 400},
		{"release name upper case", with(func(r *Request) { r.ReleaseName = "GW" }), 400},
		{"namespace not allowed", with(func(r *Request) { r.Namespace = "kube-system" }), 403},
		{"namespace malformed", with(func(r *Request) { r.Namespace = "../x" }), 400},
		{"chart empty", with(func(r *Request) { r.Chart.Name = "" }), 400},
		{"chart with spaces", with(func(r *Request) { r.Chart.Name = "berth/echo gateway" }), 400},
		{"chart unknown repo name", with(func(r *Request) { r.Chart.Name = "nope/echo-gateway" }), 400},
		{"chart not in repo", with(func(r *Request) { r.Chart.Name = "berth/nothing" }), 422},
		{"version not in repo", with(func(r *Request) { r.Chart.Version = "9.9.9" }), 422},
		{"version malformed", with(func(r *Request) { r.Chart.Version = "1.0; ls" }), 400},
		{"repo not allowed", with(func(r *Request) { r.Chart = ChartRef{Name: "x/echo-gateway", Repo: "https://charts.example.com"} }), 403},
		{"repo with credentials", with(func(r *Request) { r.Chart = ChartRef{Name: "x/echo-gateway", Repo: "https://u:p@charts.example.com"} }), 400},
		{"repo file scheme", with(func(r *Request) { r.Chart = ChartRef{Name: "x/echo-gateway", Repo: "file:///etc"} }), 400},
		{"oci not allowed", with(func(r *Request) { r.Chart = ChartRef{Name: "oci://registry.example.com/charts/x"} }), 403},
		{"oci with privateChartsRepo", with(func(r *Request) {
			r.Chart = ChartRef{Name: "oci://" + charts.Registry + "/charts/echo-gateway", Repo: charts.RepoURL}
		}), 400},
		{"oci version range", with(func(r *Request) {
			r.Chart = ChartRef{Name: "oci://" + charts.Registry + "/charts/echo-gateway", Version: ">=0.1"}
		}), 400},
		{"oci chart missing", with(func(r *Request) {
			r.Chart = ChartRef{Name: "oci://" + charts.Registry + "/charts/nothing", Version: "1.0.0"}
		}), 422},
		{"values key with equals", with(func(r *Request) { r.Values = map[string]any{"a=b": 1} }), 400},
		{"values key with comma", with(func(r *Request) { r.Values = map[string]any{"a,b": 1} }), 400},
		{"values key empty", with(func(r *Request) { r.Values = map[string]any{"": 1} }), 400},
		{"values key dots only", with(func(r *Request) { r.Values = map[string]any{"a..b": 1} }), 400},
		{"values too large", with(func(r *Request) { r.Values = map[string]any{"big": strings.Repeat("x", 70<<10)} }), 400},
		{"values that do not render", with(func(r *Request) { r.Values = map[string]any{"replicas": "many"} }), 422},
		{"timeout negative", with(func(r *Request) { r.Timeout = -time.Second }), 400},
		{"createNamespace not allowed", with(func(r *Request) { r.CreateNamespace = true }), 403},
		{"timeout too long", with(func(r *Request) { r.Timeout = 2 * time.Hour }), 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := in.Install(ctx, tc.req)
			if problem.Status(err) != tc.status {
				t.Errorf("Install(%s) = %v (%d), want %d", tc.name, err, problem.Status(err), tc.status)
			}
		})
	}
	if list, _ := in.List(ctx, ns); len(list) != 0 {
		t.Errorf("bad requests installed %+v", list)
	}
	secrets, _ := cp.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	for _, s := range secrets.Items {
		t.Errorf("bad requests left Secret %s", s.Name)
	}
}

func TestLoopbackRefusedByDefault(t *testing.T) {
	p := Policy{Namespaces: []string{"x"}, Sources: []string{charts.RepoURL}, MaxValuesBytes: 1 << 10}
	f := NewFetcher(FetcherOptions{Policy: p, MaxChartBytes: 1 << 20, CacheEntries: 4, IndexTTL: time.Minute})
	_, _, err := f.Load(context.Background(), ChartRef{Name: "x/echo-gateway", Repo: charts.RepoURL})
	if !errors.Is(err, ErrSourceNotAllowed) || problem.Status(err) != 403 {
		t.Errorf("a loopback source without AllowPrivateAddresses = %v, want ErrSourceNotAllowed (403)", err)
	}
}

// TestForgedRecordStaysInItsNamespace: whoever may write Secrets in a
// namespace may write a release record claiming another namespace; berth
// answers (and announces an uninstall) for the namespace it read, never the
// one the record claims.
func TestForgedRecordStaysInItsNamespace(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	cfg, err := in.Configs(ns)
	if err != nil {
		t.Fatal(err)
	}
	forged := &helmrelease.Release{Name: "victim", Namespace: "someone-else", Version: 1,
		Info: &helmrelease.Info{Status: helmrelease.StatusDeployed}, Chart: &chart.Chart{Metadata: &chart.Metadata{Name: "x", Version: "1.0.0"}}}
	if err := cfg.Releases.Create(forged); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if d, err := in.Status(ctx, ns, "victim"); err != nil || d.Namespace != ns {
		t.Errorf("Status = %+v, %v; want namespace %s", d.Release, err, ns)
	}
	if l, err := in.List(ctx, ns); err != nil || len(l) != 1 || l[0].Namespace != ns {
		t.Errorf("List = %+v, %v; want one release in %s", l, err, ns)
	}
	r, _, err := in.Uninstall(ctx, ns, "victim", 0)
	if err != nil || r.Namespace != ns || r.Name != "victim" {
		t.Errorf("Uninstall = %+v, %v; want %s/victim", r, err, ns)
	}
}

// TestSchemaValidationKept: with the validator a namespace's configuration
// keeps between installs, a manifest the API server cannot take (a port that
// is not a number) is still refused as the chart's fault, before and after
// good installs through the same validator, and the refusals leave nothing.
func TestSchemaValidationKept(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	bad, err := chartrepo.FromTemplates("typo", map[string]string{"svc.yaml": `apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}
spec:
  ports: [{port: mqtt}]
`})
	if err != nil {
		t.Fatal(err)
	}
	if err := charts.Add(bad); err != nil {
		t.Fatal(err)
	}
	in := newInstaller(t, ns)
	for i, name := range []string{"typo-1", "gw-1", "typo-2", "gw-2", "typo-3"} {
		chart := "berth/typo"
		if strings.HasPrefix(name, "gw") {
			chart = "berth/echo-gateway"
		}
		_, _, err := in.Install(ctx, Request{Chart: ChartRef{Name: chart}, ReleaseName: name, Namespace: ns})
		if want := i%2 == 1; want != (err == nil) {
			t.Fatalf("install %d (%s): %v", i, name, err)
		}
		if err != nil && !errors.Is(err, ErrRender) {
			t.Errorf("install %s = %v, want ErrRender", name, err)
		}
	}
	list, err := in.List(ctx, ns)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Errorf("releases after 3 refused and 2 good installs: %+v, want the 2 good", list)
	}
	for _, n := range []string{"typo-1", "typo-2", "typo-3"} {
		if _, err := cp.Client.CoreV1().Services(ns).Get(ctx, n, metav1.GetOptions{}); err == nil {
			t.Errorf("refused install %s left its Service", n)
		}
	}
}
