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

	"github.com/berth-dev/berth/pkg/portalloc"
)

// BenchmarkExposures prints, per backend and from one run on one API server,
// exposures/s and p50/p99 latency of 100 concurrent exposures on one entry point
// beside 100 sequential ones (one at a time, no contention) as the baseline.
func BenchmarkExposures(b *testing.B) {
	cp.Require(b)
	const n = 100
	for range b.N {
		for _, backend := range backends {
			seq, _, _ := exposures(b, backend, n, false)
			con, p50, p99 := exposures(b, backend, n, true)
			b.ReportMetric(con, backend+"-exposures/s")
			b.ReportMetric(con/seq, backend+"-ratio")
			b.Logf("%-13s %d concurrent: %7.1f exposures/s (p50 %6.1f ms, p99 %6.1f ms); sequential baseline %7.1f/s; ratio %.2f",
				backend, n, con, figures.MS(p50), figures.MS(p99), seq, con/seq)
		}
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
