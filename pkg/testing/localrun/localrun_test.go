package localrun

import (
	"context"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/ledger"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// TestEndToEnd runs the three function binaries as processes against the
// harness API server. One install.requested event ends with the release
// installed, a port bound in the ledger, the routing objects written and the
// endpoint annotation set; the same event again changes nothing; an
// uninstall.requested event takes it all away.
func TestEndToEnd(t *testing.T) {
	ctx, env := startForTest(t, Options{})
	core := env.CP.Client.CoreV1()

	end, err := env.Demo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if end.IP != SharedIP || end.Service != AppsNamespace+"/demo-gateway" || end.Backend != "shared-ip" || end.Port < 20000 {
		t.Fatalf("endpoint = %+v", end)
	}
	svc, err := core.Services(AppsNamespace).Get(ctx, "demo-gateway", metav1.GetOptions{})
	if err != nil || !strings.Contains(svc.Annotations["berth.dev/endpoint"], SharedIP) {
		t.Errorf("demo Service annotation = %v, %v", svc.Annotations, err)
	}
	route := "berth-shared-ip-tcp-" + itoa(end.Port)
	if _, err := core.Services(AppsNamespace).Get(ctx, route, metav1.GetOptions{}); err != nil {
		t.Errorf("routing Service %s: %v", route, err)
	}
	books := ledger.NewBooks(core, kube.ConflictBackoff)
	book := ledger.BookFor(IngressNamespace, "service", "shared-ip")
	l, err := books.Entries(ctx, book)
	if err != nil || len(l.Entries) != 1 || l.Entries[portalloc.Key{Protocol: portalloc.TCP, Port: end.Port}].State != portalloc.Bound {
		t.Errorf("ledger = %v, %v", l, err)
	}

	before := env.CP.Fingerprint(t, IngressNamespace, AppsNamespace)
	if err := env.Post(ctx, InstallRequest("demo-1", "demo-gateway", SharedIP)); err != nil {
		t.Fatal(err)
	}
	again, err := env.Wait(ctx, "", events.EndpointExposed, events.EndpointFailed, events.PortFailed, events.InstallFailed)
	if err != nil || again.Type() != events.EndpointExposed {
		t.Fatalf("redelivery ended with %v, %v", again, err)
	}
	if after := env.CP.Fingerprint(t, IngressNamespace, AppsNamespace); after != before {
		t.Errorf("the same event twice changed the cluster:\n%s\nwas\n%s", after, before)
	}

	un := InstallRequest("demo-un-1", "demo-gateway", "")
	un.SetType(events.UninstallRequested)
	_ = un.SetData("application/json", map[string]string{"releaseName": "demo-gateway", "namespace": AppsNamespace})
	if err := env.Post(ctx, un); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		l, err := books.Entries(ctx, book)
		_, routeErr := core.Services(AppsNamespace).Get(ctx, route, metav1.GetOptions{})
		if err == nil && len(l.Entries) == 0 && routeErr != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after uninstall: ledger %v (%v), route %v", l, err, routeErr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// startForTest starts berth for a test (skipped under -short) with o, its
// root, directory and output filled in, and a ten-minute context; both stop
// when the test ends.
func startForTest(t testing.TB, o Options) (context.Context, *Env) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds three binaries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(cancel)
	o.Root, _ = filepath.Abs("../../..")
	o.Dir, o.Out = t.TempDir(), testWriter{t}
	if _, bench := t.(*testing.B); bench {
		// A benchmark's output keeps its first 10 lines: its figures.
		o.Out = io.Discard
	}
	env, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(env.Close)
	return ctx, env
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
