package release

import (
	"context"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/pkg/problem"
)

// TestUnknownErrorsAreRetried: an API server that stops answering in the
// middle of an install is a failure that may pass (5xx, which Knative
// retries), not a chart that cannot be installed (422); a render error is 422.
func TestUnknownErrorsAreRetried(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	rc := rest.CopyConfig(cp.Config)
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTrip(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodPost && strings.Contains(r.URL.Path, "/deployments") {
				return nil, &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
			}
			return rt.RoundTrip(r)
		})
	})
	in.Configs = NewConfigs(rc, "secret", "", in.Log)
	ctx := context.Background()
	_, _, err := in.Install(ctx, Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "flaky", Namespace: ns})
	if s := problem.Status(err); s < 500 {
		t.Errorf("install with the API server refusing connections = %v (%d), want a 5xx", err, s)
	}
	// The retry, with the API server back, installs over the failed record.
	in.Configs = NewConfigs(cp.Config, "secret", "", in.Log)
	if _, _, err := in.Install(ctx, Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "flaky", Namespace: ns}); err != nil {
		t.Errorf("the retry: %v", err)
	}
	_, _, err = in.Install(ctx, Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "bad-values", Namespace: ns,
		Values: map[string]any{"replicas": "two"}})
	if s := problem.Status(err); s != 422 {
		t.Errorf("install with values the API server refuses = %v (%d), want 422", err, s)
	}
}

type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestMissingDependencies: a chart that declares a dependency it does not
// carry is not installable (422), as helm install says, and nothing is written.
func TestMissingDependencies(t *testing.T) {
	cp.Require(t)
	c := packageChart(t, map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: needs-dep\nversion: 0.1.0\ndependencies:\n  - name: redis\n    version: 1.0.0\n    repository: https://charts.example.com\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: {{ .Release.Name }}}\n",
	})
	if err := charts.Add(c); err != nil {
		t.Fatal(err)
	}
	ns := cp.Namespace(t)
	before := cp.Fingerprint(t, ns)
	_, _, err := newInstaller(t, ns).Install(context.Background(), Request{Chart: ChartRef{Name: "berth/needs-dep"}, ReleaseName: "partial", Namespace: ns})
	if s := problem.Status(err); s != 422 || !strings.Contains(err.Error(), "redis") {
		t.Errorf("a chart missing its dependency = %v (%d), want 422 naming it", err, s)
	}
	if after := cp.Fingerprint(t, ns); after != before {
		t.Errorf("the refused install wrote:\n%s", after)
	}
}
