// Package kube loads berth's Kubernetes client configuration the standard way:
// in-cluster when running in a Pod, else $KUBECONFIG (or ~/.kube/config).
package kube

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/telemetry"
)

// ClientSettings are the Kubernetes client part of a function's configuration.
type ClientSettings struct {
	// KubeQPS is the sustained rate of API requests a function instance may make.
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
	REST    *rest.Config
	Core    kubernetes.Interface
	Gateway gatewayclient.Interface
}

// Connect opens the clients' connection to the API server (the TLS
// handshake, HTTP/2) ahead of the first request that needs it, by one GET of
// /livez, which RBAC lets everyone read; its answer is not looked at. A
// request made meanwhile is handed this connection once it is up, if its
// own dial is not up first (HTTP/2 shares one connection).
func (c Clients) Connect(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = c.Core.Discovery().RESTClient().Get().AbsPath("/livez").Do(ctx).Error()
}

// Clients builds the clients for the configured cluster. No request is made.
func (c ClientSettings) Clients(userAgent string) (Clients, error) {
	rc, err := c.RESTConfig(userAgent)
	if err != nil {
		return Clients{}, err
	}
	core, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return Clients{}, err
	}
	gw, err := gatewayclient.NewForConfig(rc)
	if err != nil {
		return Clients{}, err
	}
	return Clients{REST: rc, Core: core, Gateway: gw}, nil
}
