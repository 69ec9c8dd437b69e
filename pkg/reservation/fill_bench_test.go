package reservation

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/testing/figures"
)

// fills are how many ports are already held on the entry point when the
// latency of one more reservation is measured.
var fills = []int{10, 1000, 10000}

// fillRange has room beyond the largest fill.
var fillRange = portalloc.Range{Min: 20000, Max: 39999}

// BenchmarkLedgerFill prints, from one run on one API server, the latency of a
// reservation on an entry point that holds 10, 1,000 and 10,000 bound ports
// (one round at each fill in turn, so that all three share the machine's
// moments), the ratio of each to the latency at 10, and the ledger's size at
// each fill: all its ConfigMaps, and the largest against the 1 MiB a ConfigMap
// may hold.
func BenchmarkLedgerFill(b *testing.B) {
	cp.Require(b)
	const rounds = 30
	ctx := context.Background()
	for range b.N {
		svcs := make([]*Service, len(fills))
		ids := make([]string, len(fills))
		for i, n := range fills {
			svcs[i], ids[i] = filledEntryPoint(b, n)
		}
		lat := make([][]time.Duration, len(fills))
		for r := range rounds {
			for i, svc := range svcs {
				owner := fmt.Sprintf("bench/probe-%d", r)
				t := time.Now()
				res, err := svc.Reserve(ctx, Request{Owner: owner})
				lat[i] = append(lat[i], time.Since(t))
				if err != nil {
					b.Fatalf("fill %d: %v", fills[i], err)
				}
				if res.Port != fillRange.Min+fills[i]+r {
					b.Fatalf("fill %d: got port %d, want the lowest free, %d", fills[i], res.Port, fillRange.Min+fills[i]+r)
				}
			}
		}
		base := figures.Median(lat[0])
		out := fmt.Sprintf("\n  one reservation at a time on an entry point already holding n bound ports, median of %d", rounds)
		for i, n := range fills {
			size, parts, largest := ledgerBytes(b, svcs[i], ids[i])
			med := figures.Median(lat[i])
			out += fmt.Sprintf("\n  n=%-6d p50 %7.2f ms  ratio to n=%d %.2f  ledger %8d bytes in %3d ConfigMaps, the largest %6d bytes (%4.1f%% of 1 MiB)",
				n, figures.MS(med), fills[0], float64(med)/float64(base), size, parts, largest, 100*float64(largest)/(1<<20))
			b.ReportMetric(float64(med)/float64(base), fmt.Sprintf("ratio-%d", n))
			if i == len(fills)-1 {
				b.ReportMetric(float64(size), fmt.Sprintf("ledger-bytes-%d", n))
			}
		}
		b.Log(out)
	}
}

// filledEntryPoint makes an entry point whose ledger holds n ports bound, the
// lowest of the range, as n gateways of 100 namespaces would, and a service
// reserving on it as getport does (quota on).
func filledEntryPoint(b *testing.B, n int) (*Service, string) {
	ctx := context.Background()
	ns := cp.Namespace(b)
	cp.LoadBalancer(b, ns, "filled", "192.0.2.90", nil)
	svc := newService(instanceClient(b), nil, ns, fillRange)
	svc.MaxPerNamespace = 100
	eps, err := svc.ListEntryPoints(ctx)
	if err != nil || len(eps) != 1 {
		b.Fatalf("entry points: %v %v", eps, err)
	}
	now := time.Now()
	bk := book(eps[0])
	blocks := map[ledger.Block]map[portalloc.Key]portalloc.Entry{}
	claims := map[string]*portalloc.Claims{}
	refs := map[string]ledger.Ref{}
	for i := range n {
		name := fmt.Sprintf("tenant-%03d/gateway-%05d", i%100, i)
		k := portalloc.Key{Protocol: portalloc.TCP, Port: fillRange.Min + i}
		blk := ledger.BlockOf(k.Port)
		if blocks[blk] == nil {
			blocks[blk] = map[portalloc.Key]portalloc.Entry{}
		}
		blocks[blk][k] = portalloc.Entry{Owner: name, State: portalloc.Bound, Since: now.Unix(), Service: name}
		r := bk.Claims(name)
		if claims[r.Name] == nil {
			claims[r.Name], refs[r.Name] = portalloc.NewClaims(), r
		}
		claims[r.Name].Put(k.Protocol, portalloc.Claim{Owner: name, Port: k.Port, Since: now.Unix()})
	}
	for blk, entries := range blocks {
		if err := svc.Ledgers.Blocks.Update(ctx, bk.Block(blk), func(l *portalloc.Ledger) error {
			maps.Copy(l.Entries, entries)
			return nil
		}); err != nil {
			b.Fatalf("fill %d: %v", n, err)
		}
	}
	for name, c := range claims {
		if err := svc.Ledgers.Claims.Update(ctx, refs[name], func(cur *portalloc.Claims) error {
			maps.Copy(cur.ByKey, c.ByKey)
			return nil
		}); err != nil {
			b.Fatalf("fill %d: %v", n, err)
		}
	}
	return svc, eps[0].ID()
}

// ledgerBytes is the size of an entry point's ledger: the data of all its
// ConfigMaps, how many there are, and the largest.
func ledgerBytes(b *testing.B, svc *Service, id string) (total, parts, largest int) {
	ep, err := svc.EntryPoint(context.Background(), id)
	if err != nil {
		b.Fatal(err)
	}
	cms, err := cp.Client.CoreV1().ConfigMaps(ep.Namespace).List(context.Background(), metav1.ListOptions{LabelSelector: ledger.LabelLedger + "=true"})
	if err != nil {
		b.Fatal(err)
	}
	for _, cm := range cms.Items {
		if !strings.HasPrefix(cm.Name, book(ep).Name+"-") {
			continue
		}
		n := 0
		for k, v := range cm.Data {
			n += len(k) + len(v)
		}
		total, parts, largest = total+n, parts+1, max(largest, n)
	}
	return total, parts, largest
}
