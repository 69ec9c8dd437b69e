package localrun

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/testing/otlpsink"
)

// TestTelemetry drives install.requested events through the three function
// processes, as make run does, with an OTLP receiver on loopback, and checks
// what a platform team would read: one trace per event across all three
// functions, each hop a child of the one before, the Helm, ledger and routing
// spans inside them; the metrics, with ports used equal to exposures made;
// and GET /releases/{ns}/{name} naming the endpoint the chain gave.
func TestTelemetry(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	sink, err := otlpsink.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	ctx, env := startForTest(t, Options{Env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + sink.URL(), "OTEL_METRIC_EXPORT_INTERVAL=300", "OTEL_BSP_SCHEDULE_DELAY=100",
	}})

	// The caller's own trace: berth's spans must continue it.
	const callerSpan = "00f067aa0ba902b7"
	traces := map[string]string{"tel-a": "4bf92f3577b34da6a3ce929d0e0e4736", "tel-b": "0af7651916cd43dd8448eb211c80319c"}
	ends := map[string]events.EndpointExposedData{}
	for _, rel := range []string{"tel-a", "tel-b"} {
		e := InstallRequest(rel+"-1", rel, SharedIP)
		e.SetExtension("traceparent", "00-"+traces[rel]+"-"+callerSpan+"-01")
		last, err := env.Chain(ctx, e)
		if err != nil {
			t.Fatalf("chain of %s: %v", rel, err)
		}
		if got := TraceID(last); got != traces[rel] {
			t.Errorf("endpoint.exposed of %s carries trace %q, want the caller's %s", rel, got, traces[rel])
		}
		var d events.EndpointExposedData
		if err := last.DataAs(&d); err != nil {
			t.Fatal(err)
		}
		ends[rel] = d
	}

	// Spans are batched by each process, and a hop's own span ends only
	// after its reply is written, so it can reach the sink after the next
	// hop's: wait until each trace holds every hop and the last hop's route.
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	await := []otlpsink.Span{
		{Service: "install", Name: "process " + events.InstallRequested},
		{Service: "getport", Name: "process " + events.ReleaseInstalled},
		{Service: "setingress", Name: "process " + events.PortReserved},
		{Service: "setingress", Name: "route shared-ip"},
	}
	err = sink.WaitFor(wctx, func(s *otlpsink.Sink) bool {
		for _, id := range traces {
			for _, w := range await {
				if !slices.ContainsFunc(s.Trace(id), func(sp otlpsink.Span) bool {
					return sp.Service == w.Service && sp.Name == w.Name
				}) {
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("waiting for the traces: %v; have traces %v", err, sink.TraceIDs())
	}
	for rel, id := range traces {
		spans := sink.Trace(id)
		var b strings.Builder
		sink.WriteTree(&b, id)
		t.Logf("trace of %s:\n%s", rel, b.String())
		byID := map[string]otlpsink.Span{}
		for _, sp := range spans {
			byID[sp.SpanID] = sp
		}
		// find finds service's span named name, or any of names "a|b".
		find := func(service, name string) otlpsink.Span {
			t.Helper()
			names := strings.Split(name, "|")
			i := slices.IndexFunc(spans, func(sp otlpsink.Span) bool { return sp.Service == service && slices.Contains(names, sp.Name) })
			if i < 0 {
				t.Fatalf("trace of %s has no %s span %q", rel, service, name)
			}
			return spans[i]
		}
		// The hops: each function's span is the child of the one that
		// sent its event, the first of the caller's.
		hop1 := find("install", "process "+events.InstallRequested)
		hop2 := find("getport", "process "+events.ReleaseInstalled)
		hop3 := find("setingress", "process "+events.PortReserved)
		for _, c := range []struct {
			child  otlpsink.Span
			parent string
		}{{hop1, callerSpan}, {hop2, hop1.SpanID}, {hop3, hop2.SpanID}} {
			if c.child.ParentID != c.parent {
				t.Errorf("%s: %q has parent %s, want %s", rel, c.child.Name, c.child.ParentID, c.parent)
			}
			if c.child.Kind != "consumer" || c.child.StatusCode == "error" {
				t.Errorf("%s: %q is %s, status %s", rel, c.child.Name, c.child.Kind, c.child.StatusCode)
			}
		}
		// Inside each hop: the work, and the Kubernetes calls it made.
		within := func(sp otlpsink.Span, hop otlpsink.Span) bool {
			for p := sp; p.ParentID != ""; {
				if p.ParentID == hop.SpanID {
					return true
				}
				var ok bool
				if p, ok = byID[p.ParentID]; !ok {
					return false
				}
			}
			return false
		}
		for _, w := range []struct {
			service, name string
			hop           otlpsink.Span
		}{
			{"install", "helm install", hop1},
			{"install", "load chart", hop1},
			{"getport", "reserve port", hop2},
			{"getport", "ledger commit", hop2},
			{"getport", "POST configmaps|PUT configmaps", hop2}, // the ledger's write
			{"setingress", "PUT configmaps", hop3},              // the bind
			{"setingress", "expose", hop3},
			{"setingress", "route shared-ip", hop3},
			{"setingress", "POST services", hop3},
		} {
			sp := find(w.service, w.name)
			if !within(sp, w.hop) {
				t.Errorf("%s: %s span %q is not inside %q", rel, w.service, w.name, w.hop.Name)
			}
		}
		if c := find("getport", "ledger commit"); c.Attrs["berth.ledger.batch_size"] == "" || c.Attrs["berth.ledger.attempts"] == "" {
			t.Errorf("%s: ledger commit attributes %v lack batch size and attempts", rel, c.Attrs)
		}
		if r := find("setingress", "route shared-ip"); r.Attrs["berth.port"] != fmt.Sprint(ends[rel].Port) {
			t.Errorf("%s: route span port %q, want %d", rel, r.Attrs["berth.port"], ends[rel].Port)
		}
	}
	if ids := sink.TraceIDs(); len(ids) != len(traces) {
		t.Errorf("traces %v, want only the %d chains' (no call outside an operation starts one)", ids, len(traces))
	}

	// Metrics, as the periodic readers last exported them.
	shared := map[string]string{"berth.entry_point": ends["tel-a"].EntryPoint, "network.transport": "tcp"}
	err = sink.WaitFor(wctx, func(s *otlpsink.Sink) bool {
		return pointValue(s, "setingress", "berth.port.usage", shared, "bound") == 2 &&
			countOf(s, "install", "berth.release.operation.duration", map[string]string{"berth.operation": "install", "berth.outcome": "success"}) == 2 &&
			countOf(s, "getport", "berth.reservation.duration", map[string]string{"berth.outcome": "success"}) == 2 &&
			countOf(s, "setingress", "berth.exposure.duration", map[string]string{"berth.backend": "shared-ip", "berth.outcome": "success"}) == 2
	})
	if err != nil {
		t.Errorf("metrics never showed two installs, reservations and exposures and two ports bound: %v; have %v", err, sink.MetricNames())
		for _, m := range []string{"berth.port.usage", "berth.release.operation.duration", "berth.reservation.duration", "berth.exposure.duration"} {
			for _, p := range sink.Points(m) {
				t.Logf("%s %s %v = %v (count %d)", p.Service, m, p.Attrs, p.Float, p.Count)
			}
		}
	}
	if free := pointValue(sink, "setingress", "berth.port.usage", shared, "free"); free != 10001-2 {
		t.Errorf("setingress reports %v ports free on %s, want 10001 - 2", free, shared["berth.entry_point"])
	}
	if n := countOf(sink, "getport", "berth.ledger.batch.size", nil); n < 2 {
		t.Errorf("ledger batch sizes recorded %d times, want a commit per reservation at least", n)
	}

	// Where is my gateway.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, env.URLs["install"]+"/releases/"+AppsNamespace+"/tel-a", nil)
	req.Header.Set("Authorization", "Bearer "+env.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Name      string
		Endpoints []struct{ Endpoint, EntryPoint, Backend, Service string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /releases/%s/tel-a = %d, %v", AppsNamespace, resp.StatusCode, err)
	}
	want := fmt.Sprintf("%s:%d/TCP", ends["tel-a"].IP, ends["tel-a"].Port)
	if len(st.Endpoints) != 1 || st.Endpoints[0].Endpoint != want || st.Endpoints[0].EntryPoint != ends["tel-a"].EntryPoint ||
		st.Endpoints[0].Backend != "shared-ip" || st.Endpoints[0].Service != AppsNamespace+"/tel-a" {
		t.Errorf("GET /releases/%s/tel-a endpoints = %+v, want only %s on %s (shared-ip)", AppsNamespace, st.Endpoints, want, ends["tel-a"].EntryPoint)
	}
}

// pointValue is the latest value service reported for metric with attrs and
// berth.port.state state.
func pointValue(s *otlpsink.Sink, service, metric string, attrs map[string]string, state string) float64 {
	for _, p := range s.Points(metric) {
		if p.Service == service && p.Attrs["berth.port.state"] == state && matches(p.Attrs, attrs) {
			return p.Float
		}
	}
	return -1
}

// countOf is how many values service's histogram metric counted with attrs.
func countOf(s *otlpsink.Sink, service, metric string, attrs map[string]string) uint64 {
	var n uint64
	for _, p := range s.Points(metric) {
		if p.Service == service && matches(p.Attrs, attrs) {
			n += p.Count
		}
	}
	return n
}

func matches(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}
