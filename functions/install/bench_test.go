package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/pkg/testing/controlplane"
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
		bm, cm := median(berth), median(cli)
		b.ReportMetric(float64(bm.Microseconds())/1000, "berth-ms")
		b.ReportMetric(float64(cm.Microseconds())/1000, "helm-cli-ms")
		b.ReportMetric(float64(bm)/float64(cm), "ratio")
		b.Logf("\n  install of echo-gateway, median of %d (first, cold, included: berth %.1f ms, CLI %.1f ms)\n"+
			"  berth (Helm SDK in-process, HTTP):         %7.1f ms\n"+
			"  helm CLI (repo add + repo update + install): %7.1f ms\n"+
			"  ratio berth / CLI: %.2f (goal at most 0.5)",
			n, ms(berth[0]), ms(cli[0]), ms(bm), ms(cm), float64(bm)/float64(cm))
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
