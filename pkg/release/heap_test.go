package release

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/testing/chartrepo"
)

// allocated runs f and returns the bytes it allocated, and the heap in use
// after it, collected.
func allocated(f func()) (alloc, after uint64) {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	runtime.GC()
	var c runtime.MemStats
	runtime.ReadMemStats(&c)
	return b.TotalAlloc - a.TotalAlloc, c.HeapAlloc
}

// TestHostileInputsHeap feeds the inputs that once took install's memory
// (a values bomb, a 10 MiB index, a chart that decompresses to 100 MiB) and
// checks each is refused with its 4xx, allocating under a stated bound. It
// prints what each cost, and what a parsed index holds per byte.
func TestHostileInputsHeap(t *testing.T) {
	const bound = 48 << 20 // each input may allocate at most this
	ctx := context.Background()

	bomb := map[string]any{}
	for i := 1; i <= 16; i++ {
		bomb[fmt.Sprintf("k%02d[65536]", i)] = 1
	}
	in := &Installer{Policy: Policy{Namespaces: []string{"apps"}, MaxValuesBytes: 256 << 10}}
	var err error
	alloc, _ := allocated(func() {
		err = in.Check(Request{Chart: ChartRef{Name: "x/c", Repo: "https://charts.example.com"}, ReleaseName: "r", Namespace: "apps", Values: bomb})
	})
	t.Logf("values bomb (16 keys like k01[65536]): %d, allocated %.1f MiB", problem.Status(err), float64(alloc)/(1<<20))
	if problem.Status(err) != 400 || alloc > bound {
		t.Errorf("values bomb = %v, allocated %d bytes; want 400 within %d", err, alloc, bound)
	}
	wide := map[string]any{}
	for i := 0; i < 200; i++ {
		wide[fmt.Sprintf("k%03d[255]", i)] = strings.Repeat("v", 1000)
	}
	if err := in.Check(Request{Chart: ChartRef{Name: "x/c", Repo: "https://charts.example.com"}, ReleaseName: "r", Namespace: "apps", Values: wide}); problem.Status(err) != 400 {
		t.Errorf("values that expand past MaxValuesBytes = %v, want 400", err)
	}

	archive := chartrepo.Bomb(100 << 20)
	sum := sha256.Sum256(archive)
	bigIndex := "apiVersion: v1\nentries:\n  big:\n" + strings.Repeat("    - {name: big, version: 1.0.0, urls: [big.tgz], description: "+strings.Repeat("x", 200)+"}\n", (10<<20)/260)
	smallIndex := fmt.Sprintf("apiVersion: v1\nentries:\n  bomb:\n    - {name: bomb, version: 0.1.0, urls: [bomb-0.1.0.tgz], digest: %s}\n", hex.EncodeToString(sum[:]))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/big/index.yaml":
			w.Write([]byte(bigIndex))
		case "/bomb/index.yaml":
			w.Write([]byte(smallIndex))
		case "/bomb/bomb-0.1.0.tgz":
			w.Write(archive)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	f := NewFetcher(FetcherOptions{Policy: Policy{Sources: []string{srv.URL}, AllowPrivateAddresses: true},
		MaxChartBytes: 10 << 20, MaxIndexBytes: 4 << 20, MaxDecompressedBytes: 20 << 20, CacheEntries: 8, IndexTTL: time.Minute})
	for _, tc := range []struct {
		name string
		ref  ChartRef
	}{
		{fmt.Sprintf("a %.0f MiB index", float64(len(bigIndex))/(1<<20)), ChartRef{Name: "big", Repo: srv.URL + "/big"}},
		{fmt.Sprintf("a chart of %d KiB that decompresses to 100 MiB", len(archive)>>10), ChartRef{Name: "bomb", Repo: srv.URL + "/bomb"}},
	} {
		alloc, after := allocated(func() { _, _, err = f.Load(ctx, tc.ref) })
		t.Logf("%s: %d (%v), allocated %.1f MiB, heap after %.1f MiB", tc.name, problem.Status(err), err, float64(alloc)/(1<<20), float64(after)/(1<<20))
		if s := problem.Status(err); s < 400 || s >= 500 || alloc > bound {
			t.Errorf("%s = %v, allocated %d bytes; want a 4xx within %d", tc.name, err, alloc, bound)
		}
	}

	// What the index cache weighs an index at: its size times indexHeapFactor.
	var b strings.Builder
	b.WriteString("apiVersion: v1\nentries:\n")
	for i := 0; b.Len() < 1<<20; i++ {
		fmt.Fprintf(&b, "  c%d:\n    - {name: c%d, version: 1.0.0, urls: [c.tgz], digest: %064d, description: %s}\n", i, i, i, strings.Repeat("x", 100))
	}
	var kept any
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	parsed, perr := parseIndex([]byte(b.String()))
	kept = parsed
	runtime.GC()
	var held runtime.MemStats
	runtime.ReadMemStats(&held)
	if perr != nil {
		t.Fatal(perr)
	}
	factor := float64(held.HeapAlloc-before.HeapAlloc) / float64(b.Len())
	t.Logf("a parsed %d KiB index holds %.1f bytes of heap per byte (indexHeapFactor %d)", b.Len()>>10, factor, indexHeapFactor)
	runtime.KeepAlive(kept)
	kept = nil
	var peak uint64
	alloc, _ = allocated(func() {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = parseIndex([]byte(b.String()))
		}()
		var m runtime.MemStats
		for {
			select {
			case <-done:
				return
			default:
			}
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			time.Sleep(time.Millisecond)
		}
	})
	t.Logf("parsing it allocates %.0f MiB in all (%.0f per byte), heap in use peaking at %.0f MiB", float64(alloc)/(1<<20), float64(alloc)/float64(b.Len()), float64(peak)/(1<<20))
}
