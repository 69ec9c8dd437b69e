package expose

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/testing/dataplane"
)

// TestThousandGatewayExposures exposes 1,000 Services at once through the
// Gateway API backend: exactly 1,000 listeners in berth's ListenerSets (none
// on the Gateway, none twice), each accepted by the data plane and routed by
// exactly one route; unexposing them all (100 at a time) leaves no
// listener, set or route.
func TestThousandGatewayExposures(t *testing.T) {
	cp.Require(t)
	const n = 1000
	ctx := context.Background()
	f := newFixture(t, entrypoint.BackendGatewayAPI)
	dctx, stop := context.WithCancel(ctx)
	defer stop()
	dp := &dataplane.DataPlane{Core: cp.Client, Gateway: f.gw, Namespace: f.ns, Every: 200 * time.Millisecond,
		Decide: func(int32, string) dataplane.Answer { return dataplane.Accept }}
	go dp.Run(dctx)
	for i := range n {
		f.app(t, fmt.Sprintf("tenant-%d", i))
	}
	ends, errs := f.exposeAll(ctx, n)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	checkListeners(t, f, n)
	// Each accepted by the data plane, as GET /exposures reads it.
	var pending []string
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if err := f.exp.Statuses(ctx, ends); err != nil {
			t.Fatal(err)
		}
		pending = pending[:0]
		for _, e := range ends {
			if e.State != StateExposed {
				pending = append(pending, fmt.Sprintf("%s %s %s %s", e, e.State, e.Condition, e.Reason))
			}
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(pending) > 0 {
		t.Fatalf("%d of %d not exposed, e.g. %v", len(pending), n, pending[:min(3, len(pending))])
	}

	// Unexposed 100 at a time, as many as a few instances' worth of
	// deliveries: all 1,000 at once made the API server time requests out
	// (its 60 s bound) on a 2-core machine running other tests beside it.
	var wg sync.WaitGroup
	slots := make(chan struct{}, 100)
	for _, e := range ends {
		wg.Go(func() {
			slots <- struct{}{}
			defer func() { <-slots }()
			if err := f.exp.Unexpose(ctx, f.ep, portalloc.Key{Protocol: e.Protocol, Port: e.Port}, ""); err != nil {
				t.Errorf("Unexpose %s: %v", e, err)
			}
		})
	}
	wg.Wait()
	checkListeners(t, f, 0)
	if left, _ := f.exp.List(ctx, reservation.Filter{}); len(left) != 0 {
		t.Errorf("ledger after unexposing all: %d entries, want none", len(left))
	}
}

// checkListeners asserts that the entry point "shared" carries exactly n
// listeners of berth's, all in berth's ListenerSets (each attached to the
// Gateway, at most 64 listeners, each of its own ports), none twice, each
// with exactly one route whose parent is that listener, and no other route.
func checkListeners(t *testing.T, f *fixture, n int) {
	t.Helper()
	ctx := context.Background()
	g, err := f.gw.GatewayV1().Gateways(f.ns).Get(ctx, "shared", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Spec.Listeners) != 1 {
		t.Errorf("the Gateway has %d listeners, want its own one only", len(g.Spec.Listeners))
	}
	sets, err := f.gw.GatewayV1().ListenerSets(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	where := map[string]string{} // listener -> set
	for _, s := range sets.Items {
		if s.Labels[kube.LabelManagedBy] != kube.ManagedBy || string(s.Spec.ParentRef.Name) != "shared" {
			t.Errorf("ListenerSet %s: labels %v, parent %s", s.Name, s.Labels, s.Spec.ParentRef.Name)
		}
		if len(s.Spec.Listeners) == 0 || len(s.Spec.Listeners) > 64 {
			t.Errorf("ListenerSet %s has %d listeners", s.Name, len(s.Spec.Listeners))
		}
		for _, l := range s.Spec.Listeners {
			if want := fmt.Sprintf("berth-shared-p%d", int(l.Port)/32*32); s.Name != want {
				t.Errorf("listener %s is in %s, want %s", l.Name, s.Name, want)
			}
			if other, dup := where[string(l.Name)]; dup {
				t.Errorf("listener %s is in %s and %s", l.Name, other, s.Name)
			}
			where[string(l.Name)] = s.Name
		}
	}
	if len(where) != n {
		t.Errorf("%d listeners in %d ListenerSets, want %d", len(where), len(sets.Items), n)
	}
	routes, err := f.gw.GatewayV1().TCPRoutes(f.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	routed := map[string]int{}
	for _, r := range routes.Items {
		p := r.Spec.ParentRefs[0]
		section := string(*p.SectionName)
		if len(r.Spec.ParentRefs) != 1 || *p.Kind != "ListenerSet" || where[section] != string(p.Name) {
			t.Errorf("route %s: parents %v, want its listener's ListenerSet %q", r.Name, r.Spec.ParentRefs, where[section])
		}
		routed[section]++
	}
	for l := range where {
		if routed[l] != 1 {
			t.Errorf("listener %s is routed by %d routes, want 1", l, routed[l])
		}
	}
	if len(routes.Items) != n {
		t.Errorf("%d TCPRoutes, want %d", len(routes.Items), n)
	}
}

// TestListenerPlacement: where an entry point's annotation puts berth's
// listeners, and what a Gateway that has no room, or admits no
// ListenerSets, answers (422, and the port is free again).
func TestListenerPlacement(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	edit := func(t *testing.T, f *fixture, change func(*gatewayv1.Gateway)) {
		t.Helper()
		g, err := f.gw.GatewayV1().Gateways(f.ns).Get(ctx, "shared", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		change(g)
		if _, err := f.gw.GatewayV1().Gateways(f.ns).Update(ctx, g, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	bound := func(t *testing.T, f *fixture) int {
		t.Helper()
		l, err := f.exp.List(ctx, reservation.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}

	t.Run("on the Gateway, 64 at most", func(t *testing.T) {
		const n = 70
		f := newFixture(t, entrypoint.BackendGatewayAPI)
		edit(t, f, func(g *gatewayv1.Gateway) {
			g.Annotations = map[string]string{entrypoint.AnnotationListeners: entrypoint.ListenersOnGateway}
		})
		for i := range n {
			f.app(t, fmt.Sprintf("tenant-%d", i))
		}
		_, errs := f.exposeAll(ctx, n)
		full := 0
		for _, err := range errs {
			switch {
			case err == nil:
			case errors.Is(err, ErrGatewayFull) && problem.Status(err) == http.StatusUnprocessableEntity:
				full++
			default:
				t.Errorf("Expose = %v, want success or ErrGatewayFull (422)", err)
			}
		}
		g, _ := f.gw.GatewayV1().Gateways(f.ns).Get(ctx, "shared", metav1.GetOptions{})
		sets, _ := f.gw.GatewayV1().ListenerSets(f.ns).List(ctx, metav1.ListOptions{})
		if full != n-63 || len(g.Spec.Listeners) != 64 || len(sets.Items) != 0 || bound(t, f) != 63 {
			t.Errorf("%d full, Gateway listeners %d, ListenerSets %d, ledger %d; want %d, 64, 0, 63",
				full, len(g.Spec.Listeners), len(sets.Items), bound(t, f), n-63)
		}
		// Unexposed, its listener leaves the Gateway.
		l := g.Spec.Listeners[len(g.Spec.Listeners)-1]
		if err := f.exp.Unexpose(ctx, f.ep, portalloc.Key{Protocol: portalloc.TCP, Port: int(l.Port)}, ""); err != nil {
			t.Fatal(err)
		}
		g, _ = f.gw.GatewayV1().Gateways(f.ns).Get(ctx, "shared", metav1.GetOptions{})
		if slices.ContainsFunc(g.Spec.Listeners, func(m gatewayv1.Listener) bool { return m.Name == l.Name }) || len(g.Spec.Listeners) != 63 {
			t.Errorf("after unexposing %s the Gateway has %d listeners, with it: want 63, without", l.Name, len(g.Spec.Listeners))
		}
	})

	for _, tc := range []struct {
		name   string
		change func(*gatewayv1.Gateway)
		want   error
		detail string
	}{
		{"a Gateway admitting no ListenerSets", func(g *gatewayv1.Gateway) { g.Spec.AllowedListeners = nil }, ErrSetsNotAdmitted, "allowedListeners"},
		{"a Gateway admitting ListenerSets from every namespace", func(g *gatewayv1.Gateway) {
			all := gatewayv1.NamespacesFromAll
			g.Spec.AllowedListeners.Namespaces.From = &all
		}, ErrSetsNotAdmitted, "allowedListeners"},
		{"a Gateway admitting ListenerSets from None", func(g *gatewayv1.Gateway) {
			none := gatewayv1.NamespacesFromNone
			g.Spec.AllowedListeners.Namespaces.From = &none
		}, ErrSetsNotAdmitted, "allowedListeners"},
		{"an unknown placement", func(g *gatewayv1.Gateway) {
			g.Annotations = map[string]string{entrypoint.AnnotationListeners: "everywhere"}
		}, ErrNoBackend, "everywhere"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, entrypoint.BackendGatewayAPI)
			edit(t, f, tc.change)
			f.app(t, "gw-1")
			before := cp.Fingerprint(t, f.ns)
			_, err := f.exp.Expose(ctx, f.request("gw-1", intstr.FromInt(1883), portalloc.TCP))
			if !errors.Is(err, tc.want) || problem.Status(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), tc.detail) {
				t.Errorf("Expose = %v, want %v (422) naming %s", err, tc.want, tc.detail)
			}
			if n := bound(t, f); n != 0 {
				t.Errorf("the ledger holds %d entries, want the port free again", n)
			}
			if after := cp.Fingerprint(t, f.ns); strings.Count(after, "listenersets") != strings.Count(before, "listenersets") ||
				strings.Count(after, "tcproutes") != strings.Count(before, "tcproutes") {
				t.Errorf("routing objects written:\n%s\nwas\n%s", after, before)
			}
		})
	}
}
