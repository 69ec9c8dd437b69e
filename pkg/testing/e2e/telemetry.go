//go:build e2e

package e2e

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

// traces checks that each gateway's install.requested gave one trace through
// the Broker: install's, getport's and setingress's spans in it, each hop the
// child of the one before, and no gateway's Helm install in another trace.
func traces(t *testing.T, ctx context.Context, sink *otlpsink.Sink) {
	t0 := time.Now()
	hop := func(spans []otlpsink.Span, service, name string) (otlpsink.Span, bool) {
		i := slices.IndexFunc(spans, func(sp otlpsink.Span) bool { return sp.Service == service && sp.Name == "process "+name })
		if i < 0 {
			return otlpsink.Span{}, false
		}
		return spans[i], true
	}
	complete := func(s *otlpsink.Sink) bool {
		for i := 1; i <= gateways; i++ {
			spans := s.Trace(gatewayTrace(i))
			if _, ok := hop(spans, "setingress", events.PortReserved); !ok {
				return false
			}
		}
		return true
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := sink.WaitFor(wctx, complete); err != nil {
		for i := 1; i <= gateways; i++ {
			t.Logf("trace %s: %d spans", gatewayTrace(i), len(sink.Trace(gatewayTrace(i))))
		}
		t.Fatalf("the gateways' traces never reached setingress: %v", err)
	}
	spans := 0
	for i := 1; i <= gateways; i++ {
		id := gatewayTrace(i)
		trace := sink.Trace(id)
		spans += len(trace)
		in, _ := hop(trace, "install", events.InstallRequested)
		gp, okg := hop(trace, "getport", events.ReleaseInstalled)
		si, _ := hop(trace, "setingress", events.PortReserved)
		if !okg || in.ParentID != callerSpan || gp.ParentID != in.SpanID || si.ParentID != gp.SpanID {
			t.Errorf("trace %s: hops install (parent %s), getport (parent %s, found %v), setingress (parent %s): want each the child of the one before, the first of %s",
				id, in.ParentID, gp.ParentID, okg, si.ParentID, callerSpan)
		}
	}
	// A gateway's Helm install appears in its own trace only.
	release := map[string][]string{}
	for _, sp := range sink.Spans() {
		if sp.Name == "helm install" {
			if r := sp.Attrs["berth.release"]; !slices.Contains(release[r], sp.TraceID) {
				release[r] = append(release[r], sp.TraceID)
			}
		}
	}
	for i := 1; i <= gateways; i++ {
		r := fmt.Sprintf("%s/gw-%02d", appsNS, i)
		if got := release[r]; len(got) != 1 || got[0] != gatewayTrace(i) {
			t.Errorf("helm install of %s in traces %v, want only %s", r, got, gatewayTrace(i))
		}
	}
	if t.Failed() {
		var b strings.Builder
		sink.WriteTree(&b, gatewayTrace(1))
		t.Logf("trace of gw-01:\n%s", b.String())
		return
	}
	reportf("traces: %d gateways -> %d traces at the e2e's OTLP receiver, install -> getport -> setingress parent to child through the Broker, %d spans, complete %s after the UDP step",
		gateways, gateways, spans, time.Since(t0).Round(time.Millisecond))
}

// releaseEndpoints checks GET /releases/{ns}/{name} of the gateway behind
// tcp: its endpoints are the TCP and UDP ports the chain exposed.
func releaseEndpoints(t *testing.T, hc *http.Client, base, token string, tcp, udp events.EndpointExposedData) {
	req, _ := http.NewRequest(http.MethodGet, base+"/releases/"+tcp.Owner, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Name      string
		Status    string
		Endpoints []struct{ Endpoint, EntryPoint, Backend string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /releases/%s = %s, %v", tcp.Owner, resp.Status, err)
	}
	var got []string
	for _, e := range st.Endpoints {
		got = append(got, e.Endpoint+" "+e.EntryPoint+" "+e.Backend)
	}
	slices.Sort(got)
	want := []string{
		fmt.Sprintf("%s:%d/TCP %s %s", tcp.IP, tcp.Port, tcp.EntryPoint, tcp.Backend),
		fmt.Sprintf("%s:%d/UDP %s %s", udp.IP, udp.Port, udp.EntryPoint, udp.Backend),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("GET /releases/%s endpoints = %q, want %q", tcp.Owner, got, want)
	}
	reportf("GET /releases/%s: %s, endpoints %q", tcp.Owner, st.Status, got)
}
