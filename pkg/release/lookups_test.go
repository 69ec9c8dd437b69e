package release

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// readingsOf counts the API requests that list release name's records.
type readingsOf struct {
	name string
	n    atomic.Int32
	next http.RoundTripper
}

func (c *readingsOf) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/secrets") &&
		strings.Contains(r.URL.Query().Get("labelSelector"), "name="+c.name) {
		c.n.Add(1)
	}
	return c.next.RoundTrip(r)
}

// An install reads its release's records once: Helm's own name check is
// answered from berth's reading. What was read is the operation's alone,
// and not kept past it: a release deleted behind berth's back is not found,
// and is installed again.
func TestInstallReadsItsRecordsOnce(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	reads := &readingsOf{name: "gw"}
	rc := rest.CopyConfig(cp.Config)
	rc.Wrap(func(next http.RoundTripper) http.RoundTripper { reads.next = next; return reads })
	in.Configs = NewConfigs(rc, "secret", "", in.Log)
	req := Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "gw", Namespace: ns}

	install := func(what string, wantCreated bool, wantReads int32) {
		t.Helper()
		reads.n.Store(0)
		_, created, err := in.Install(ctx, req)
		if err != nil || created != wantCreated {
			t.Fatalf("%s: Install = created %v, %v; want created %v", what, created, err, wantCreated)
		}
		if n := reads.n.Load(); n != wantReads {
			t.Errorf("%s: the release's records were listed %d times, want %d", what, n, wantReads)
		}
	}
	install("first install", true, 1)
	install("the same install again", false, 1)
	// The release goes, not through berth; the reading the second install
	// kept (Helm never asked for it) must answer nothing after it.
	err := cp.Client.CoreV1().Secrets(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "owner=helm,name=gw"})
	if err != nil {
		t.Fatal(err)
	}
	if d, err := in.Status(ctx, ns, "gw"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Status of a deleted release = %+v, %v; want ErrNotFound", d, err)
	}
	install("an install after the records were deleted", true, 1)
	if hist, err := in.History(ctx, ns, "gw"); err != nil || len(hist) != 1 {
		t.Errorf("history = %+v, %v; want one revision", hist, err)
	}

	// What Helm writes on a configuration goes to the operation's copy; the
	// cluster's capabilities are the process's, worked out once.
	req.Upgrade, req.Values = true, map[string]any{"replicas": 2}
	if r, _, err := in.Install(ctx, req); err != nil || r.Revision != 2 {
		t.Fatalf("upgrade: %+v, %v", r, err)
	}
	if _, err := in.Rollback(ctx, ns, "gw", 1, 0); err != nil {
		t.Fatal(err)
	}
	shared, _ := in.Configs(ns)
	if shared.Releases.MaxHistory != 0 {
		t.Errorf("the namespace's storage has MaxHistory %d: an upgrade or rollback wrote it there", shared.Releases.MaxHistory)
	}
	if _, ok := shared.Releases.Driver.(*lookups); ok {
		t.Error("the namespace's storage answers from an operation's reading")
	}
	if g, ok := shared.RESTClientGetter.(*getter); !ok || g.shared.caps == nil {
		t.Error("no capabilities kept for the process: every operation asks the cluster for them")
	}
}
