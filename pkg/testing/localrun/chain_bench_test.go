package localrun

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/events"
)

// chainSize is how many gateways one backend's round installs and exposes at
// once; chainTenants is over how many namespaces they are spread (each holds at
// most MAX_PORTS_PER_NAMESPACE, 100 by default).
const chainSize, chainTenants, chainSequential = 1000, 10, 5

// chainBackends are the entry points a round exposes on, by backend.
var chainBackends = []struct{ name, ip string }{
	{"shared-ip", SharedIP},
	{"ingress-nginx", NginxIP},
	{"gateway-api", GatewayIP},
}

// chainNamespace is where a round's i-th gateway goes; the sequential
// round's have a namespace of their own, so that no namespace passes its quota.
var chainOnly = flag.String("chain.backend", "", "run BenchmarkChain for this backend only (shared-ip, ingress-nginx, gateway-api)")

func chainNamespace(backend, tag string, i int) string {
	short := strings.Split(backend, "-")[0]
	if tag == "seq" {
		return "chain-" + short + "-seq"
	}
	return fmt.Sprintf("chain-%s-%d", short, i%chainTenants)
}

// BenchmarkChain prints, for each backend, from one run of the three function
// processes chained by the local broker as `make run` wires them, with the
// sample chart from a chart repository on loopback: the time from posting
// 1,000 install.requested events at once to the 1,000th endpoint.exposed,
// gateways/s beside the same chain run one gateway at a time in the same run
// (the ratio), and p50/p99 of each stage: install (install.requested posted to
// release.installed), reserve (to port.reserved) and expose (to
// endpoint.exposed). It fails unless every gateway is exposed, on a port of
// its own, with one release each.
func BenchmarkChain(b *testing.B) {
	var ns []string
	for _, be := range chainBackends {
		ns = append(ns, chainNamespace(be.name, "seq", 0))
		for i := range chainTenants {
			ns = append(ns, chainNamespace(be.name, "all", i))
		}
	}
	ctx, env := startForTest(b, Options{Namespaces: ns})
	for range b.N {
		var out strings.Builder
		fmt.Fprintf(&out, "\n  %d gateways per backend posted at once as install.requested (with expose) to the local broker; 3 function processes, 1 API server, 2 cores; goal: shared-ip >= 10 gateways/s", chainSize)
		for _, be := range chainBackends {
			if *chainOnly != "" && be.name != *chainOnly {
				continue
			}
			seq := chainRound(ctx, b, env, be.name, be.ip, "seq", chainSequential, 1)
			all := chainRound(ctx, b, env, be.name, be.ip, "all", chainSize, chainSize)
			// One line a backend: a benchmark's output keeps its first 10 lines.
			fmt.Fprintf(&out, "\n  %-13s %4d in %5.1f s: %5.1f gateways/s; one at a time %4.1f/s, ratio %4.1f; p50/p99 s:", be.name, chainSize, all.total.Seconds(), all.rate(), seq.rate(), all.rate()/seq.rate())
			for _, st := range stages {
				d := all.stage[st]
				fmt.Fprintf(&out, " %s %.2f/%.2f", st, pct(d, 50).Seconds(), pct(d, 99).Seconds())
			}
			b.ReportMetric(all.rate(), be.name+"-gateways/s")
		}
		b.Log(out.String())
	}
}

var stages = []string{"install", "reserve", "expose"}

// stageEnd is the event that ends each stage.
var stageEnd = map[string]string{
	events.ReleaseInstalled: "install",
	events.PortReserved:     "reserve",
	events.EndpointExposed:  "expose",
}

type chainResult struct {
	n     int
	total time.Duration
	stage map[string][]time.Duration
}

func (r chainResult) rate() float64 { return float64(r.n) / r.total.Seconds() }

// chainRound posts n install.requested events for backend's entry point at ip,
// at most conc in flight, and waits for every chain to end.
func chainRound(ctx context.Context, b *testing.B, env *Env, backend, ip, tag string, n, conc int) chainResult {
	b.Helper()
	cursor := len(env.Received(0))
	posted := make(map[string]time.Time, n)
	var mu sync.Mutex
	subject := func(i int) (ns, release string) {
		return chainNamespace(backend, tag, i), fmt.Sprintf("%s-%04d", tag, i)
	}
	ended := make(map[string]time.Time, n)
	at := make(map[string]map[string]time.Time, n) // subject → stage → end
	ports := map[int]string{}
	var failed []string
	collect := func() {
		for _, e := range env.Received(cursor) {
			cursor++
			s := e.Subject()
			mu.Lock()
			_, ours := posted[s]
			mu.Unlock()
			if !ours {
				continue
			}
			if at[s] == nil {
				at[s] = map[string]time.Time{}
			}
			if st, ok := stageEnd[e.Type()]; ok {
				if _, seen := at[s][st]; !seen {
					at[s][st] = e.At
				}
			}
			switch {
			case e.Type() == events.EndpointExposed:
				var d events.EndpointExposedData
				if err := e.DataAs(&d); err != nil {
					b.Fatal(err)
				}
				if other, taken := ports[d.Port]; taken && other != s {
					b.Errorf("%s and %s both got port %d", other, s, d.Port)
				}
				ports[d.Port] = s
				if _, done := ended[s]; !done {
					ended[s] = e.At
				}
			case strings.HasSuffix(e.Type(), ".failed"):
				if _, done := ended[s]; !done {
					ended[s] = e.At
					failed = append(failed, fmt.Sprintf("%s %s: %s", s, e.Type(), e.Data()))
				}
			}
		}
	}

	start := time.Now()
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	for i := range n {
		ns, release := subject(i)
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			mu.Lock()
			posted[ns+"/"+release] = time.Now()
			mu.Unlock()
			e := InstallRequestIn(ns, backend+"-"+release, release, ip)
			e.SetSubject(ns + "/" + release) // install.failed carries it
			if err := env.Post(ctx, e); err != nil {
				b.Error(err)
			}
			if conc > 1 {
				return
			}
			for { // one at a time: wait for this chain's end
				collect()
				if _, done := ended[ns+"/"+release]; done {
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(10 * time.Minute)
	for len(ended) < n {
		if time.Now().After(deadline) {
			b.Fatalf("%s: %d of %d chains ended in 10 min", backend, len(ended), n)
		}
		time.Sleep(50 * time.Millisecond)
		collect()
	}
	var last time.Time
	for _, t := range ended {
		if t.After(last) {
			last = t
		}
	}
	if len(failed) > 0 {
		slices.Sort(failed)
		b.Fatalf("%s: %d of %d chains failed; first: %s", backend, len(failed), n, failed[0])
	}
	if len(ports) != n {
		b.Fatalf("%s: %d distinct ports for %d gateways", backend, len(ports), n)
	}
	checkReleases(ctx, b, env, backend, tag, n)

	r := chainResult{n: n, total: last.Sub(start), stage: map[string][]time.Duration{}}
	for s, t0 := range posted {
		prev := t0
		for _, st := range stages {
			t, ok := at[s][st]
			if !ok {
				b.Fatalf("%s: no %s for %s", backend, st, s)
			}
			r.stage[st] = append(r.stage[st], t.Sub(prev))
			prev = t
		}
	}
	return r
}

// checkReleases counts the deployed Helm releases of a round: exactly one
// per gateway.
func checkReleases(ctx context.Context, b *testing.B, env *Env, backend, tag string, n int) {
	b.Helper()
	got, seen := 0, map[string]bool{}
	for i := range n {
		ns := chainNamespace(backend, tag, i)
		if seen[ns] {
			continue
		}
		seen[ns] = true
		list, err := env.CP.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: "owner=helm,status=deployed"})
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range list.Items {
			if strings.HasPrefix(s.Labels["name"], tag+"-") {
				got++
			}
		}
	}
	if got != n {
		b.Fatalf("%s: %d deployed releases for %d gateways", backend, got, n)
	}
}

// pct is the p-th percentile of d.
func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}
