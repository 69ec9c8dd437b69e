//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/pkg/testing/cluster"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

// The run's shared parts, set up once by TestMain.
var (
	env struct {
		root    string // the repository
		assets  string // the cluster's build cache
		images  *images
		cluster *cluster.Cluster
		echo    string // the sample gateway's image
	}
	// report collects the figures the run prints at its end.
	report []string
)

func reportf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	report = append(report, line)
	fmt.Fprintln(os.Stderr, "e2e: "+line)
}

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "e2e setup:", err); return 1 }

	root, err := filepath.Abs("../../..")
	if err != nil {
		return fail(err)
	}
	assets, err := controlplane.AssetsDir()
	if err != nil {
		return fail(err)
	}
	env.root, env.assets = root, assets
	if env.images, err = startImages(filepath.Join(assets, "bin", "ko")); err != nil {
		return fail(err)
	}
	defer env.images.Close()
	koConfig := filepath.Join(root, "ko.yaml")
	pause, err := env.images.build(ctx, root, "berth/pause", koConfig, "./pkg/testing/pause")
	if err != nil {
		return fail(err)
	}
	if env.echo, err = env.images.build(ctx, root, "berth/echo-gateway", koConfig, "./charts/echo-gateway"); err != nil {
		return fail(err)
	}
	reportf("images: pause and echo-gateway built with ko in %s", time.Since(t0).Round(time.Second))

	sysctls := cluster.ReadSysctls()
	state := filepath.Join(os.TempDir(), "berth-e2e")
	imageCache := filepath.Join(filepath.Dir(assets), "e2e-images")
	c, err := cluster.Up(ctx, cluster.Options{
		Assets: assets, State: state, ImageCache: imageCache,
		SandboxImage: pause, InsecureRegistries: []string{registryAddr},
		LoadBalancerRange: "198.51.100.10-198.51.100.30",
		Logf:              func(f string, a ...any) { fmt.Fprintf(os.Stderr, "e2e: "+f+"\n", a...) },
	})
	if err != nil {
		return fail(err)
	}
	env.cluster = c
	reportf("cluster: up in %s (etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet, kube-proxy, CoreDNS, MetalLB controller); logs in %s",
		sum(c.Timings).Round(time.Second), c.Logs())

	code := m.Run()

	t1 := time.Now()
	c.Down()
	left := cluster.Leftovers(state, imageCache)
	for k, v := range cluster.ReadSysctls() {
		if string(v) != string(sysctls[k]) {
			left = append(left, fmt.Sprintf("sysctl %s = %s, was %s", k, strings.TrimSpace(string(v)), strings.TrimSpace(string(sysctls[k]))))
		}
	}
	reportf("cluster: down in %s; leftovers: %d", time.Since(t1).Round(time.Second), len(left))
	for _, l := range left {
		fmt.Fprintln(os.Stderr, "e2e: LEFT BEHIND: "+l)
	}
	if len(left) > 0 {
		code = 1
	}
	reportf("total: %s", time.Since(t0).Round(time.Second))
	fmt.Fprintln(os.Stderr, "\n== e2e report ==")
	for _, l := range report {
		fmt.Fprintln(os.Stderr, l)
	}
	return code
}

func sum(ts []cluster.Timing) time.Duration {
	var d time.Duration
	for _, t := range ts {
		d += t.Duration
	}
	return d
}
