// Package kube loads berth's Kubernetes client configuration the standard way:
// in-cluster when running in a Pod, else $KUBECONFIG (or ~/.kube/config).
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// ClientSettings are the Kubernetes client part of a function's configuration.
type ClientSettings struct {
	// KubeQPS is the sustained rate of API requests a function instance may
	// make through its clients (install's Helm operations have their own).
	// client-go's default of 5 would throttle contended compare-and-swap writes.
	KubeQPS float32 `envconfig:"KUBE_QPS" default:"100"`
	// KubeBurst is the burst of API requests above KubeQPS.
	KubeBurst int `envconfig:"KUBE_BURST" default:"200"`
}

// Validate reports values that parse but cannot work.
func (c ClientSettings) Validate() error {
	if c.KubeQPS <= 0 || c.KubeBurst <= 0 {
		return fmt.Errorf("KUBE_QPS=%v, KUBE_BURST=%d: both must be positive", c.KubeQPS, c.KubeBurst)
	}
	return nil
}

// RESTConfig returns the client configuration, naming userAgent. It reads files
// but makes no request.
func (c ClientSettings) RESTConfig(userAgent string) (*rest.Config, error) {
	rc, err := rest.InClusterConfig()
	if errors.Is(err, rest.ErrNotInCluster) {
		rc, err = clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
			clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	rc.QPS, rc.Burst = c.KubeQPS, c.KubeBurst
	rc.UserAgent = "berth-" + userAgent
	rc.Wrap(telemetry.WrapKube)
	return rc, nil
}

// Clients are the API clients a function uses.
type Clients struct {
	REST *rest.Config
	Core kubernetes.Interface
	// Gateway reads and writes the Gateway API (gateway.networking.k8s.io/v1);
	// its RESTClient reads answers that the reader decodes itself
	// (entrypoint).
	Gateway *gatewayapi.Client

	connecting *connecting
}

// Connect starts opening the clients' connection to the API server (the TLS
// handshake, HTTP/2) ahead of the first request that needs it, by one GET of
// /livez, which RBAC lets everyone read; its answer is not looked at. It
// returns at once. Requests the clients make meanwhile wait for that
// connection instead of dialling their own: on a cold start, two handshakes
// at once share the CPU the request is waiting on, and HTTP/2 keeps only one
// of the connections. They go as soon as the connection is up (not when
// /livez answers), and at the latest when Connect's request ends, after at
// most 5 seconds; a failed Connect leaves them to dial as usual.
func (c Clients) Connect(ctx context.Context) {
	if c.connecting == nil {
		return // not built by NewClients: nothing waits
	}
	done := make(chan struct{})
	c.connecting.Store(&done)
	var once sync.Once
	up := func() {
		once.Do(func() {
			c.connecting.CompareAndSwap(&done, nil) // not a later Connect's
			close(done)
		})
	}
	go func() {
		defer up()
		ctx, cancel := context.WithTimeout(context.WithValue(ctx, connectKey{}, true), 5*time.Second)
		defer cancel()
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { up() }})
		_ = c.Core.Discovery().RESTClient().Get().AbsPath("/livez").Do(ctx).Error()
	}()
}

// connectKey marks the context of Connect's own request.
type connectKey struct{}

// connecting is the connection Connect is opening: its channel is closed
// when it is up or failed. Nil when none is being opened.
type connecting struct {
	atomic.Pointer[chan struct{}]
}

// wrap makes a request wait for the connection Connect is opening.
func (c *connecting) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
		if done := c.Load(); done != nil && r.Context().Value(connectKey{}) == nil {
			select {
			case <-*done:
			case <-r.Context().Done():
				if r.Body != nil {
					_ = r.Body.Close() // as a RoundTripper must, on errors too
				}
				return nil, r.Context().Err()
			}
		}
		return rt.RoundTrip(r)
	})
}

// roundTripperFunc is a function that is an http.RoundTripper.
type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Clients builds the clients for the configured cluster. No request is made.
func (c ClientSettings) Clients(userAgent string) (Clients, error) {
	rc, err := c.RESTConfig(userAgent)
	if err != nil {
		return Clients{}, err
	}
	return NewClients(rc)
}

// NewClients builds clients on rc, which it wraps: every client built on rc
// afterwards (Helm's, in install) waits for Connect too. No request is
// made. The built-in types' client speaks protobuf, as Kubernetes' own
// components do: it is the API server's native encoding, and decoding it
// needs no reflection, which a cold start pays for each JSON type it first
// meets. Custom resources (the Gateway API) have no protobuf encoding: their
// client speaks JSON.
func NewClients(rc *rest.Config) (Clients, error) {
	conn := &connecting{}
	rc.Wrap(conn.wrap)
	// One HTTP client, so one connection, whatever the encoding.
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return Clients{}, err
	}
	// One rate limiter for berth's own clients, so that KUBE_QPS bounds the
	// instance (Helm's clients, built on rc, keep their own).
	limiter := rc.RateLimiter
	if limiter == nil && rc.QPS > 0 {
		limiter = flowcontrol.NewTokenBucketRateLimiter(rc.QPS, rc.Burst)
	}
	pc := rest.CopyConfig(rc)
	pc.RateLimiter = limiter
	pc.ContentType = runtime.ContentTypeProtobuf
	pc.AcceptContentTypes = runtime.ContentTypeProtobuf + "," + runtime.ContentTypeJSON
	core, err := kubernetes.NewForConfigAndClient(pc, hc)
	if err != nil {
		return Clients{}, err
	}
	gc := rest.CopyConfig(rc)
	gc.RateLimiter = limiter
	gw, err := gatewayapi.New(gc, hc)
	if err != nil {
		return Clients{}, err
	}
	return Clients{REST: rc, Core: core, Gateway: gw, connecting: conn}, nil
}
