package release

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	helmrelease "helm.sh/helm/v3/pkg/release"
	helmtime "helm.sh/helm/v3/pkg/time"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/figures"
)

// recordReads counts the listings of full release records: of those not
// superseded, of some releases by name, of every record.
type recordReads struct {
	current, named, all atomic.Int32
	next                http.RoundTripper
}

func (c *recordReads) RoundTrip(r *http.Request) (*http.Response, error) {
	sel := r.URL.Query().Get("labelSelector")
	if r.Method == http.MethodGet && !strings.Contains(r.Header.Get("Accept"), "PartialObjectMetadata") &&
		(strings.HasSuffix(r.URL.Path, "/secrets") || strings.HasSuffix(r.URL.Path, "/configmaps")) {
		switch {
		case strings.Contains(sel, "status!=superseded"):
			c.current.Add(1)
		case strings.Contains(sel, "name in ("):
			c.named.Add(1)
		default:
			c.all.Add(1)
		}
	}
	return c.next.RoundTrip(r)
}

// List shows each release's latest revision, in whatever state Helm leaves
// it (a latest revision superseded included), for either storage driver,
// and decodes the records that are not superseded, not the history. Records
// that only look like Helm's (its labels, no release in them) are skipped,
// as Helm's List skips them; many of them cost one listing of every record.
func TestListDecodesLatestRecords(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	histories := map[string][]helmrelease.Status{
		"a": {helmrelease.StatusSuperseded, helmrelease.StatusSuperseded, helmrelease.StatusSuperseded, helmrelease.StatusDeployed},
		"b": {helmrelease.StatusDeployed, helmrelease.StatusFailed},
		"c": {helmrelease.StatusSuperseded, helmrelease.StatusSuperseded},
		"d": {helmrelease.StatusDeployed, "bogus"},
		"e": {helmrelease.StatusSuperseded, helmrelease.StatusSuperseded, helmrelease.StatusUninstalled},
	}
	want := "a 4 deployed, b 2 failed, c 2 superseded, e 3 uninstalled"
	for _, kind := range []string{"secret", "configmap"} {
		t.Run(kind, func(t *testing.T) {
			ns := cp.Namespace(t)
			in := newInstaller(t, ns)
			reads := &recordReads{}
			rc := rest.CopyConfig(cp.Config)
			rc.Wrap(func(next http.RoundTripper) http.RoundTripper { reads.next = next; return reads })
			in.Configs = NewConfigs(rc, kind, "", slog.New(slog.DiscardHandler))
			cfg, err := in.Configs(ns)
			if err != nil {
				t.Fatal(err)
			}
			c := &chart.Chart{Metadata: &chart.Metadata{Name: "x", Version: "0.1.0", APIVersion: "v2"}}
			for name, statuses := range histories {
				for i, st := range statuses {
					r := &helmrelease.Release{Name: name, Namespace: ns, Version: i + 1, Chart: c,
						Info: &helmrelease.Info{Status: st, LastDeployed: helmtime.Now()}}
					if err := cfg.Releases.Create(r); err != nil {
						t.Fatal(err)
					}
				}
			}
			list := func(what string, current, named, all int32) {
				t.Helper()
				reads.current.Store(0)
				reads.named.Store(0)
				reads.all.Store(0)
				l, err := in.List(ctx, ns)
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				var got []string
				for _, r := range l {
					got = append(got, fmt.Sprintf("%s %d %s", r.Name, r.Revision, r.Status))
				}
				if strings.Join(got, ", ") != want {
					t.Errorf("%s: List = %s, want %s", what, strings.Join(got, ", "), want)
				}
				if c, n, a := reads.current.Load(), reads.named.Load(), reads.all.Load(); c != current || n != named || a != all {
					t.Errorf("%s: List listed the records not superseded %d times, some by name %d, every record %d; want %d, %d, %d",
						what, c, n, a, current, named, all)
				}
			}
			list("Helm's records", 1, 1, 0) // c's latest is superseded: read by name

			// Records with Helm's labels and no release in them.
			forge := func(name, version string) {
				labels := map[string]string{"owner": "helm", "name": name, "version": version, "status": "superseded"}
				meta := metav1.ObjectMeta{Name: "sh.helm.release.v1." + name + ".v" + version, Labels: labels}
				if kind == "secret" {
					_, err = cp.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{ObjectMeta: meta, Data: map[string][]byte{"release": []byte("not a release")}}, metav1.CreateOptions{})
				} else {
					_, err = cp.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: meta, Data: map[string]string{"release": "not a release"}}, metav1.CreateOptions{})
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			forge("forged", "1")
			forge("a", "9")
			list("a forged record, and a forged later revision of a", 1, 1, 0)
			for i := range missingAtOnce {
				forge(fmt.Sprintf("many-%03d", i), "1")
			}
			list("many forged records", 1, 0, 1)
		})
	}
}

// BenchmarkList prints, from one run against one API server, berth's List
// of a namespace of 100 releases of 5 revisions each (echo-gateway's chart
// in each record) beside Helm's own List action (--all) of the same
// namespace, alternating, median of 9, with the heap each allocated.
func BenchmarkList(b *testing.B) {
	cp.Require(b)
	ctx := context.Background()
	ns := cp.Namespace(b)
	in := newInstaller(b, ns)
	cfg, err := in.Configs(ns)
	if err != nil {
		b.Fatal(err)
	}
	pc, err := chartrepo.Package(chartDir, "")
	if err != nil {
		b.Fatal(err)
	}
	c := load(b, pc)
	const releases, revisions = 100, 5
	for i := range releases {
		for v := 1; v <= revisions; v++ {
			st := helmrelease.StatusSuperseded
			if v == revisions {
				st = helmrelease.StatusDeployed
			}
			r := &helmrelease.Release{Name: fmt.Sprintf("r%03d", i), Namespace: ns, Version: v, Chart: c,
				Manifest: "apiVersion: v1\nkind: Service\nmetadata:\n  name: gw\nspec:\n  ports:\n  - port: 7000\n",
				Info:     &helmrelease.Info{Status: st, LastDeployed: helmtime.Now()}}
			if err := cfg.Releases.Create(r); err != nil {
				b.Fatal(err)
			}
		}
	}
	measure := func(f func() int) (time.Duration, uint64) {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		s := time.Now()
		if n := f(); n != releases {
			b.Fatalf("listed %d releases, want %d", n, releases)
		}
		d := time.Since(s)
		runtime.ReadMemStats(&m1)
		return d, m1.TotalAlloc - m0.TotalAlloc
	}
	for range b.N {
		var berth, helm []time.Duration
		var berthHeap, helmHeap []uint64
		for i := range 10 {
			d, h := measure(func() int {
				l, err := in.List(ctx, ns)
				if err != nil {
					b.Fatal(err)
				}
				return len(l)
			})
			hd, hh := measure(func() int {
				l := action.NewList(cfg)
				l.All = true
				l.SetStateMask()
				rels, err := l.Run()
				if err != nil {
					b.Fatal(err)
				}
				return len(rels)
			})
			if i > 0 {
				berth, helm = append(berth, d), append(helm, hd)
				berthHeap, helmHeap = append(berthHeap, h), append(helmHeap, hh)
			}
		}
		bm, hm := figures.Median(berth), figures.Median(helm)
		b.ReportMetric(float64(bm)/float64(hm), "ratio")
		b.Logf("\n  %d releases of %d revisions, median of 9:\n    berth List:       %6.1f ms %6.1f MB allocated\n    Helm's List --all: %6.1f ms %6.1f MB allocated\n    ratio: %.2f",
			releases, revisions, figures.MS(bm), float64(figures.Median(berthHeap))/(1<<20), figures.MS(hm), float64(figures.Median(helmHeap))/(1<<20), float64(bm)/float64(hm))
	}
}
