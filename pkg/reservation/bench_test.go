package reservation

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/pkg/testing/figures"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/telemetry"
	"github.com/berth-dev/berth/pkg/testing/otlpsink"
)

const benchInstances, benchConcurrency = 8, 50

// instanceClient is a clientset with its own connections, as a separate
// function instance would have.
func instanceClient(b *testing.B) kubernetes.Interface {
	cfg := rest.CopyConfig(cp.Config)
	cfg.Dial = (&net.Dialer{}).DialContext // no shared transport cache
	cfg.Wrap(telemetry.WrapKube)           // traced when tracing is on
	return kubernetes.NewForConfigOrDie(cfg)
}

// BenchmarkReservations prints, from one run on one API server: contended
// reservations/s with p50/p99 latency, with and without group commit; the
// ceiling of uncontended single-writer ConfigMap updates/s; their ratio; and the
// duplicates the 2018 list-then-pick algorithm hands out at the same concurrency.
func BenchmarkReservations(b *testing.B) {
	cp.Require(b)
	for range b.N {
		ceiling := ceilingUpdates(b, 300)
		batched, p50, p99, failed := contended(b, 0)
		if failed > 0 {
			b.Errorf("%d reservations failed with group commit", failed)
		}
		single, sp50, sp99, sfailed := contended(b, 1)
		dups := seedDuplicates(b)
		b.ReportMetric(batched, "reservations/s")
		b.ReportMetric(ceiling, "ceiling-updates/s")
		b.ReportMetric(batched/ceiling, "ratio")
		b.ReportMetric(float64(p99.Milliseconds()), "p99-ms")
		b.ReportMetric(float64(dups), "seed-duplicates")
		b.Logf("\n"+
			"  %d instances x %d concurrent reservations on one entry point\n"+
			"  ceiling, uncontended single-writer ConfigMap updates: %8.1f /s\n"+
			"  berth, group commit:        %8.1f reservations/s  p50 %6.1f ms  p99 %6.1f ms  ratio to ceiling %.2f\n"+
			"  berth, one write a request: %8.1f reservations/s  p50 %6.1f ms  p99 %6.1f ms  ratio to ceiling %.2f  (%d gave up with 409)\n"+
			"  2018 list-then-pick: %d of %d answers were duplicates",
			benchInstances, benchConcurrency, ceiling,
			batched, figures.MS(p50), figures.MS(p99), batched/ceiling,
			single, figures.MS(sp50), figures.MS(sp99), single/ceiling, sfailed,
			dups, benchInstances*benchConcurrency)
	}
}

// ceilingUpdates is n sequential updates of one ConfigMap by one writer, each
// with the resourceVersion the previous one returned: no reads, no conflicts.
func ceilingUpdates(b *testing.B, n int) float64 {
	ctx := context.Background()
	ns := cp.Namespace(b)
	cms := instanceClient(b).CoreV1().ConfigMaps(ns)
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "ceiling"}, Data: map[string]string{}}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := range n {
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data["tcp."+strconv.Itoa(20000+i)] = `{"o":"ceiling","s":"reserved","t":1800000000}`
		if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// contended runs benchInstances services, each with its own store and
// connections, making benchConcurrency reservations at once.
func contended(b *testing.B, maxBatch int) (perSec float64, p50, p99 time.Duration, failed int) {
	ctx := context.Background()
	ns := cp.Namespace(b)
	cp.LoadBalancer(b, ns, "shared", "192.0.2.80", nil)
	svcs := make([]*Service, benchInstances)
	for i := range svcs {
		core := instanceClient(b)
		store := ledger.NewBooks(core.CoreV1(), kube.ConflictBackoff)
		store.Blocks.MaxBatch, store.Claims.MaxBatch = maxBatch, maxBatch
		svcs[i] = newService(core, nil, ns, wide)
		svcs[i].Ledgers = store
	}
	lat := make([]time.Duration, 0, benchInstances*benchConcurrency)
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for i, svc := range svcs {
		for j := range benchConcurrency {
			wg.Go(func() {
				t := time.Now()
				_, err := svc.Reserve(ctx, Request{Owner: fmt.Sprintf("i%d-%d", i, j)})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					failed++
					return
				}
				lat = append(lat, time.Since(t))
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	if len(lat) == 0 {
		return 0, 0, 0, failed
	}
	return float64(len(lat)) / elapsed.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100], failed
}

// seedDuplicates runs the 2018 getport at the same concurrency: read the
// Service's ports and answer the first port of the range not among them,
// reserving nothing. It returns how many answers repeat an earlier one.
func seedDuplicates(b *testing.B) int {
	ctx := context.Background()
	ns := cp.Namespace(b)
	cp.LoadBalancer(b, ns, "nginx", "192.0.2.81", nil)
	clients := make([]kubernetes.Interface, benchInstances)
	for i := range clients {
		clients[i] = instanceClient(b)
	}
	answers := make(chan int, benchInstances*benchConcurrency)
	var wg sync.WaitGroup
	for i := range benchInstances {
		for range benchConcurrency {
			wg.Go(func() {
				svc, err := clients[i].CoreV1().Services(ns).Get(ctx, "nginx", metav1.GetOptions{})
				if err != nil {
					b.Error(err)
					return
				}
				used := map[int32]bool{}
				for _, p := range svc.Spec.Ports {
					used[p.Port] = true
				}
				for p := int32(wide.Min); p <= int32(wide.Max); p++ {
					if !used[p] {
						answers <- int(p)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	close(answers)
	seen, dups := map[int]bool{}, 0
	for p := range answers {
		if seen[p] {
			dups++
		}
		seen[p] = true
	}
	return dups
}

// BenchmarkTracingCost prints contended reservations/s with telemetry on
// (spans and metrics exported by OTLP/HTTP to a receiver on loopback, every
// Kubernetes call traced) beside the same with telemetry off, in one run:
// rounds alternate off and on, and each side's median round is compared.
func BenchmarkTracingCost(b *testing.B) {
	cp.Require(b)
	sink, err := otlpsink.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	const rounds = 3
	for range b.N {
		var off, on []float64
		for range rounds {
			perSec, _, _, failed := contended(b, 0)
			if failed > 0 {
				b.Errorf("%d reservations failed, telemetry off", failed)
			}
			off = append(off, perSec)
			on = append(on, tracedRound(b, sink))
		}
		slices.Sort(off)
		slices.Sort(on)
		mOff, mOn := off[rounds/2], on[rounds/2]
		spans := len(sink.Spans())
		if spans == 0 {
			b.Fatal("telemetry on exported no span")
		}
		b.ReportMetric(mOn, "traced-reservations/s")
		b.ReportMetric(mOff, "untraced-reservations/s")
		b.ReportMetric(mOn/mOff, "ratio")
		b.Logf("\n"+
			"  %d instances x %d concurrent reservations on one entry point, median of %d rounds each, alternating\n"+
			"  telemetry off:                     %8.1f reservations/s  (rounds %.1f)\n"+
			"  telemetry on (OTLP to loopback):   %8.1f reservations/s  (rounds %.1f)  ratio %.2f (goal >= 0.95)\n"+
			"  %d spans exported",
			benchInstances, benchConcurrency, rounds, mOff, off, mOn, on, mOn/mOff, spans)
	}
}

// tracedRound is one contended round with telemetry set up as a function
// sets it up from OTEL_EXPORTER_OTLP_ENDPOINT, flushed and off again after.
func tracedRound(b *testing.B, sink *otlpsink.Sink) float64 {
	b.Setenv(telemetry.EnvEndpoint, sink.URL())
	shutdown, err := telemetry.Setup(context.Background(), "getport-bench")
	if err != nil {
		b.Fatal(err)
	}
	perSec, _, _, failed := contended(b, 0)
	if failed > 0 {
		b.Errorf("%d reservations failed, telemetry on", failed)
	}
	if err := shutdown(context.Background()); err != nil {
		b.Errorf("flushing telemetry: %v", err)
	}
	return perSec
}
