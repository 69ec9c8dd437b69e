package expose

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/pkg/testing/figures"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// BenchmarkExposures prints, per backend and from one run on one API server,
// exposures/s and p50/p99 latency of 100 concurrent exposures on one entry point
// beside 100 sequential ones (one at a time, no contention) as the baseline;
// then 1,000 concurrent through the Gateway API backend (goal: >= 50/s) beside
// the same sequential baseline.
func BenchmarkExposures(b *testing.B) {
	cp.Require(b)
	const n, many = 100, 1000
	for range b.N {
		seqs := map[string]float64{}
		for _, backend := range backends {
			seq, _, _ := exposures(b, backend, n, false)
			con, p50, p99 := exposures(b, backend, n, true)
			seqs[backend] = seq
			b.ReportMetric(con, backend+"-exposures/s")
			b.ReportMetric(con/seq, backend+"-ratio")
			b.Logf("%-13s %d concurrent: %7.1f exposures/s (p50 %6.1f ms, p99 %6.1f ms); sequential baseline %7.1f/s; ratio %.2f",
				backend, n, con, figures.MS(p50), figures.MS(p99), seq, con/seq)
		}
		gw := entrypoint.BackendGatewayAPI
		con, p50, p99 := exposures(b, gw, many, true)
		b.ReportMetric(con, gw+"-1000-exposures/s")
		b.Logf("%-13s %d concurrent: %7.1f exposures/s (p50 %6.1f ms, p99 %6.1f ms); sequential baseline %7.1f/s; ratio %.2f",
			gw, many, con, figures.MS(p50), figures.MS(p99), seqs[gw], con/seqs[gw])
	}
}

func exposures(b *testing.B, backend string, n int, concurrent bool) (float64, time.Duration, time.Duration) {
	ctx := context.Background()
	f := newFixture(b, backend)
	for i := range n {
		f.app(b, fmt.Sprintf("tenant-%d", i))
	}
	lat := make([]time.Duration, n)
	one := func(i int) {
		s := time.Now()
		if _, err := f.exp.Expose(ctx, f.request(fmt.Sprintf("tenant-%d", i), intstr.FromInt(1883), portalloc.TCP)); err != nil {
			b.Error(err)
		}
		lat[i] = time.Since(s)
	}
	start := time.Now()
	if concurrent {
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { one(i) })
		}
		wg.Wait()
	} else {
		for i := range n {
			one(i)
		}
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	return float64(n) / elapsed.Seconds(), lat[n/2], lat[n*99/100]
}
