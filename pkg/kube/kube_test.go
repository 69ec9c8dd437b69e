package kube_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) { os.Exit(controlplane.RunTests(m, &cp)) }

// recorder counts the connections a client dials, slowing each by delay,
// and records the content type of each answer by path.
type recorder struct {
	delay time.Duration
	dials atomic.Int32
	mu    sync.Mutex
	types map[string]string
}

func (r *recorder) config() *rest.Config {
	rc := rest.CopyConfig(cp.Config)
	d := &net.Dialer{}
	rc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		r.dials.Add(1)
		time.Sleep(r.delay)
		return d.DialContext(ctx, network, addr)
	}
	rc.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil {
				r.mu.Lock()
				r.types[req.URL.Path] = resp.Header.Get("Content-Type")
				r.mu.Unlock()
			}
			return resp, err
		})
	})
	return rc
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestConnectIsTheOnlyDial: requests made while Connect opens the connection
// ride on it, rather than each dialling and handshaking its own.
func TestConnectIsTheOnlyDial(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	ctx := context.Background()
	rec := &recorder{delay: 300 * time.Millisecond, types: map[string]string{}}
	c, err := kube.NewClients(rec.config())
	if err != nil {
		t.Fatal(err)
	}
	c.Connect(ctx)
	var g sync.WaitGroup
	for range 3 {
		g.Go(func() {
			if _, err := c.Core.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); err != nil {
				t.Error(err)
			}
		})
	}
	g.Go(func() {
		if err := c.Gateway.RESTClient().Get().Namespace(ns).Resource("gateways").Do(ctx).Error(); err != nil {
			t.Error(err)
		}
	})
	g.Wait()
	if n := rec.dials.Load(); n != 1 {
		t.Errorf("Connect and 4 requests made at once dialled %d connections, want 1", n)
	}
	// Built-in types travel as protobuf; the Gateway API's as JSON.
	if got := rec.types["/api/v1/namespaces/"+ns+"/configmaps"]; got != runtime.ContentTypeProtobuf {
		t.Errorf("ConfigMaps answered in %q, want %q", got, runtime.ContentTypeProtobuf)
	}
	if got := rec.types["/apis/gateway.networking.k8s.io/v1/namespaces/"+ns+"/gateways"]; got != runtime.ContentTypeJSON {
		t.Errorf("Gateways answered in %q, want %q", got, runtime.ContentTypeJSON)
	}
}

// TestRequestsDoNotWaitOnAFailedConnect: a Connect whose dial is refused
// holds no request past its own end: the request gets its own dial's error,
// not its deadline.
func TestRequestsDoNotWaitOnAFailedConnect(t *testing.T) {
	cp.Require(t)
	rc := rest.CopyConfig(cp.Config)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close() // nothing listens: every dial is refused
	rc.Host = "https://" + ln.Addr().String()
	c, err := kube.NewClients(rc)
	if err != nil {
		t.Fatal(err)
	}
	c.Connect(context.Background())
	rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer rcancel()
	_, err = c.Core.CoreV1().ConfigMaps("default").List(rctx, metav1.ListOptions{})
	if err == nil || rctx.Err() != nil {
		t.Errorf("a request after a failed Connect = %v (context: %v); want its own dial's error, not a wait", err, rctx.Err())
	}
}

// TestOneRateLimiter: the built-in types' client and the Gateway API's share
// one token bucket, so KUBE_QPS bounds the instance, not each client.
func TestOneRateLimiter(t *testing.T) {
	rc := &rest.Config{Host: "https://127.0.0.1:1", QPS: 7, Burst: 9}
	c, err := kube.NewClients(rc)
	if err != nil {
		t.Fatal(err)
	}
	core, gw := c.Core.CoreV1().RESTClient().GetRateLimiter(), c.Gateway.RESTClient().GetRateLimiter()
	if core == nil || core != gw || core.QPS() != 7 {
		t.Errorf("rate limiters: core %v, Gateway API %v; want one, at 7 QPS", core, gw)
	}
}
