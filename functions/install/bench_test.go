package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/pkg/testing/figures"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/release"
	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
	"github.com/berth-dev/berth/pkg/testing/localrun"
)

// BenchmarkInstall prints, from one run against one API server and one chart
// repository on loopback, berth's install latency (POST /install, the Helm SDK
// in-process) beside the helm CLI's, exec'd per request with `repo add` and
// `repo update` first, as the 2018 service ran it.
func BenchmarkInstall(b *testing.B) {
	cp.Require(b)
	const n = 8
	dir, err := controlplane.AssetsDir()
	if err != nil {
		b.Fatal(err)
	}
	helm := filepath.Join(dir, "bin", "helm")
	if _, err := os.Stat(helm); err != nil {
		b.Fatalf("%s missing: run `make helm-cli` (make bench does)", helm)
	}
	for range b.N {
		u, ns := serve(b, "")
		berth := make([]time.Duration, n)
		for i := range n {
			body := fmt.Sprintf(`{"chartName":"berth/echo-gateway","releaseName":"berth-%d","namespace":%q}`, i, ns)
			s := time.Now()
			if status, out, _ := do(b, "POST", u+"/install", body); status != 201 {
				b.Fatalf("POST /install = %d %s", status, out)
			}
			berth[i] = time.Since(s)
		}

		home := b.TempDir()
		kubeconfig := filepath.Join(home, "kubeconfig")
		if err := os.WriteFile(kubeconfig, cp.KubeConfig(), 0o600); err != nil {
			b.Fatal(err)
		}
		env := append(os.Environ(), "KUBECONFIG="+kubeconfig, "HELM_CONFIG_HOME="+home+"/config",
			"HELM_CACHE_HOME="+home+"/cache", "HELM_DATA_HOME="+home+"/data")
		run := func(args ...string) {
			cmd := exec.Command(helm, args...)
			cmd.Env = env
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("helm %v: %v: %s", args, err, out)
			}
		}
		cli := make([]time.Duration, n)
		for i := range n {
			s := time.Now()
			run("repo", "add", "berth", charts.RepoURL, "--force-update")
			run("repo", "update")
			run("install", fmt.Sprintf("cli-%d", i), "berth/echo-gateway", "--namespace", ns)
			cli[i] = time.Since(s)
		}
		bm, cm := figures.Median(berth), figures.Median(cli)
		b.ReportMetric(float64(bm.Microseconds())/1000, "berth-ms")
		b.ReportMetric(float64(cm.Microseconds())/1000, "helm-cli-ms")
		b.ReportMetric(float64(bm)/float64(cm), "ratio")
		b.Logf("\n  install of echo-gateway, median of %d (first, cold, included: berth %.1f ms, CLI %.1f ms)\n"+
			"  berth (Helm SDK in-process, HTTP):         %7.1f ms\n"+
			"  helm CLI (repo add + repo update + install): %7.1f ms\n"+
			"  ratio berth / CLI: %.2f (goal at most 0.5)",
			n, figures.MS(berth[0]), figures.MS(cli[0]), figures.MS(bm), figures.MS(cm), float64(bm)/float64(cm))
	}
}

// ingressNginx is the large chart of BenchmarkInstallFloor: ingress-nginx
// 4.11.0, from the module proxy's copy of its repository.
const ingressNginx = "k8s.io/ingress-nginx@v0.0.0-20240708192948-52c50467d67d"

// ingressNginxValues turn off what is cluster-scoped (a namespace's deployer
// may not create it) and the controller's load balancer.
var ingressNginxValues = map[string]any{
	"rbac": map[string]any{"create": false},
	"controller": map[string]any{
		"ingressClassResource": map[string]any{"enabled": false},
		"admissionWebhooks":    map[string]any{"enabled": false},
		"service":              map[string]any{"type": "ClusterIP"},
	},
}

// BenchmarkInstallFloor prints, from one run against one API server and one
// chart repository on loopback, berth's POST /releases latency (a tenant's
// token reviewed, its access checked, the chart from the repository, Helm as
// the namespace's deployer) beside the Helm SDK's floor: action.Install of
// the same chart, loaded once, through berth's own Helm configuration (the
// same discovery, REST mapper and deployer identity), and nothing else. The
// two alternate, release by release, so that the machine's moments fall on
// both; one of each warms up first.
func BenchmarkInstallFloor(b *testing.B) {
	cp.Require(b)
	ctx := context.Background()
	out, err := exec.Command("go", "mod", "download", "-json", ingressNginx).Output()
	if err != nil {
		b.Fatalf("go mod download %s: %v", ingressNginx, err)
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(out, &mod); err != nil {
		b.Fatal(err)
	}
	nginx, err := chartrepo.Package(filepath.Join(mod.Dir, "charts", "ingress-nginx"), "")
	if err != nil {
		b.Fatal(err)
	}
	if err := charts.Add(nginx); err != nil {
		b.Fatal(err)
	}
	echo, err := chartrepo.Package("../../charts/echo-gateway", "")
	if err != nil {
		b.Fatal(err)
	}
	// config/'s access RBAC, as shipped (it has a Role in the entry points' namespace).
	_, err = cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: localrun.IngressNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		b.Fatal(err)
	}
	if err := localrun.ApplyAccess(ctx, cp, "../.."); err != nil {
		b.Fatal(err)
	}
	// Single installs on this machine spread by a third and more (20 to 48
	// ms for the same chart): 31 of each keep the medians' ratio within a
	// few hundredths from run to run, where 9 left it to move by 0.2.
	const n = 31
	for range b.N {
		var report strings.Builder
		for _, c := range []struct {
			chart  chartrepo.Chart
			values map[string]any
		}{{echo, nil}, {nginx, ingressNginxValues}} {
			u, ns, token := serveAsDeployed(b)
			cfg, err := release.NewConfigs(cp.Config, "secret", localrun.Deployer, slog.New(slog.DiscardHandler))(ns)
			if err != nil {
				b.Fatal(err)
			}
			loaded, err := loader.LoadArchive(bytes.NewReader(c.chart.Archive))
			if err != nil {
				b.Fatal(err)
			}
			body, _ := json.Marshal(map[string]any{"chartName": "berth/" + c.chart.Name, "namespace": ns, "valuesObject": c.values})
			var berth, floor []time.Duration
			for i := range n + 1 {
				req, _ := http.NewRequest("POST", u+"/releases", strings.NewReader(strings.Replace(string(body), `{`, fmt.Sprintf(`{"releaseName":"berth-%d",`, i), 1)))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				s := time.Now()
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					b.Fatalf("POST /releases %s = %d %s", c.chart.Name, resp.StatusCode, msg)
				}
				d := time.Since(s)
				inst := action.NewInstall(cfg)
				inst.ReleaseName, inst.Namespace, inst.Timeout = fmt.Sprintf("sdk-%d", i), ns, time.Minute
				s = time.Now()
				if _, err := inst.RunWithContext(ctx, loaded, c.values); err != nil {
					b.Fatalf("action.Install %s: %v", c.chart.Name, err)
				}
				if i > 0 {
					berth, floor = append(berth, d), append(floor, time.Since(s))
				}
			}
			bm, fm := figures.Median(berth), figures.Median(floor)
			ratio := float64(bm) / float64(fm)
			b.ReportMetric(ratio, c.chart.Name+"-ratio")
			fmt.Fprintf(&report, "\n  %s %s, median of %d:\n    berth POST /releases:            %7.1f ms\n    Helm SDK floor (action.Install): %7.1f ms\n    ratio: %.2f (goal at most 1.15)",
				c.chart.Name, c.chart.Version, n, figures.MS(bm), figures.MS(fm), ratio)
		}
		b.Log(report.String())
	}
}

// serveAsDeployed runs install over real HTTP as it is deployed: callers'
// tokens reviewed and their access checked by the API server, Helm run as the
// namespace's deployer. It returns the URL, the namespace, and a token of a
// tenant there (ClusterRole berth-tenant).
func serveAsDeployed(b *testing.B) (string, string, string) {
	ctx := context.Background()
	guard := auth.GuardSettings{AuthAudience: localrun.Audience, AuthCacheTTL: time.Minute, RateLimitQPS: 1000,
		RateLimitBurst: 1000, SystemNamespace: localrun.SystemNamespace}.New(cp.Client)
	u, ns := serveWith(b, "", guard, func(c *Config) {
		c.DeployerServiceAccount = localrun.Deployer
		c.MaxValuesBytes = 64 << 10
	})
	if err := localrun.ServiceAccount(ctx, cp.Client, ns, localrun.Deployer, localrun.Deployer); err != nil {
		b.Fatal(err)
	}
	if err := localrun.ServiceAccount(ctx, cp.Client, ns, "bench", "berth-tenant"); err != nil {
		b.Fatal(err)
	}
	token, err := localrun.Token(ctx, cp.Client, ns, "bench", localrun.Audience, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	return u, ns, token
}
