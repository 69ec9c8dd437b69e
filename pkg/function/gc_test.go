package function

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestHoldGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOGC" {
				return v
			}
			return ""
		}
	}
	release := holdGC(env(""))
	if p := debug.SetGCPercent(startGCPercent); p != startGCPercent {
		t.Errorf("held: GC percent %d, want %d", p, startGCPercent)
	}
	release()
	release()
	if p := debug.SetGCPercent(100); p != 100 {
		t.Errorf("released (twice): GC percent %d, want 100 again", p)
	}
	// The first collection ends the hold by itself.
	holdGC(env(""))
	if p := gogc(); p != startGCPercent {
		t.Fatalf("held again: GC percent %d, want %d", p, startGCPercent)
	}
	runtime.GC()
	deadline := time.Now().Add(5 * time.Second)
	for gogc() != 100 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if p := gogc(); p != 100 {
		t.Errorf("after a collection: GC percent %d, want 100 again", p)
	}
	// The operator's GOGC is theirs: it is left as the runtime read it.
	debug.SetGCPercent(50)
	release = holdGC(env("50"))
	if p := debug.SetGCPercent(50); p != 50 {
		t.Errorf("with GOGC=50 set: GC percent %d, want 50 untouched", p)
	}
	release()
	if p := debug.SetGCPercent(100); p != 50 {
		t.Errorf("with GOGC=50 set, released: GC percent %d, want 50 untouched", p)
	}
}

// gogc reads the GC percent without setting it.
func gogc() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestAnsweredSkipsProbes: the start ends with the first request that is
// not a health probe (Knative probes a new pod before its first request).
func TestAnsweredSkipsProbes(t *testing.T) {
	var n int
	mux := http.NewServeMux()
	mux.HandleFunc("GET /thing", func(w http.ResponseWriter, _ *http.Request) {})
	s := NewServer(Config{MaxRequestBytes: 1 << 10}, Function{Name: "t", API: mux, Gate: openGate{}}, slog.New(slog.DiscardHandler))
	s.answered = func() { n++ }
	for _, p := range []string{"/healthz", "/readyz", "/healthz"} {
		s.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	if n != 0 {
		t.Fatalf("health probes ended the start %d times, want 0", n)
	}
	for _, p := range []string{"/thing", "/nothing"} {
		s.Handler().ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", p, nil))
	}
	if n != 2 {
		t.Errorf("2 requests (one answered 404) called answered %d times, want 2", n)
	}
}
