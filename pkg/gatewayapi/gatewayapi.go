// Package gatewayapi is berth's client of the Gateway API
// (gateway.networking.k8s.io/v1): the kinds berth reads and writes, on
// client-go's generic typed client.
//
// The Gateway API's generated clientset registers every kind of every
// version of the Gateway API in its scheme as its package initialises: each
// function that linked it paid that on every cold start (0.35 ms), whether
// or not it wrote a route. This client's scheme holds the four kinds berth
// uses, and is built when the client is.
package gatewayapi

import (
	"fmt"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Client reads and writes Gateways, ListenerSets, TCPRoutes and UDPRoutes.
type Client struct {
	rest   rest.Interface
	params runtime.ParameterCodec
}

// New builds a Client on rc, over hc (and so its connection); nil hc, over
// a client of its own. No request is made.
func New(rc *rest.Config, hc *http.Client) (*Client, error) {
	s := runtime.NewScheme()
	gv := gatewayv1.SchemeGroupVersion
	s.AddKnownTypes(gv,
		&gatewayv1.Gateway{}, &gatewayv1.GatewayList{},
		&gatewayv1.ListenerSet{}, &gatewayv1.ListenerSetList{},
		&gatewayv1.TCPRoute{}, &gatewayv1.TCPRouteList{},
		&gatewayv1.UDPRoute{}, &gatewayv1.UDPRouteList{})
	metav1.AddToGroupVersion(s, gv)
	cfg := rest.CopyConfig(rc)
	cfg.APIPath, cfg.GroupVersion = "/apis", &gv
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(s).WithoutConversion()
	// Custom resources have no protobuf encoding, whatever rc asks for.
	cfg.ContentType, cfg.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	var (
		c   *rest.RESTClient
		err error
	)
	if hc != nil {
		c, err = rest.RESTClientForConfigAndClient(cfg, hc)
	} else {
		c, err = rest.RESTClientFor(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("gateway API client: %w", err)
	}
	return &Client{rest: c, params: runtime.NewParameterCodec(s)}, nil
}

// RESTClient is the client's REST client, for reads that decode their
// answers themselves (entrypoint).
func (c *Client) RESTClient() rest.Interface { return c.rest }

// Gateways are the Gateways of namespace.
func (c *Client) Gateways(namespace string) *gentype.ClientWithList[*gatewayv1.Gateway, *gatewayv1.GatewayList] {
	return gentype.NewClientWithList("gateways", c.rest, c.params, namespace,
		func() *gatewayv1.Gateway { return &gatewayv1.Gateway{} },
		func() *gatewayv1.GatewayList { return &gatewayv1.GatewayList{} })
}

// ListenerSets are the ListenerSets of namespace.
func (c *Client) ListenerSets(namespace string) *gentype.ClientWithList[*gatewayv1.ListenerSet, *gatewayv1.ListenerSetList] {
	return gentype.NewClientWithList("listenersets", c.rest, c.params, namespace,
		func() *gatewayv1.ListenerSet { return &gatewayv1.ListenerSet{} },
		func() *gatewayv1.ListenerSetList { return &gatewayv1.ListenerSetList{} })
}

// TCPRoutes are the TCPRoutes of namespace.
func (c *Client) TCPRoutes(namespace string) *gentype.ClientWithList[*gatewayv1.TCPRoute, *gatewayv1.TCPRouteList] {
	return gentype.NewClientWithList("tcproutes", c.rest, c.params, namespace,
		func() *gatewayv1.TCPRoute { return &gatewayv1.TCPRoute{} },
		func() *gatewayv1.TCPRouteList { return &gatewayv1.TCPRouteList{} })
}

// UDPRoutes are the UDPRoutes of namespace.
func (c *Client) UDPRoutes(namespace string) *gentype.ClientWithList[*gatewayv1.UDPRoute, *gatewayv1.UDPRouteList] {
	return gentype.NewClientWithList("udproutes", c.rest, c.params, namespace,
		func() *gatewayv1.UDPRoute { return &gatewayv1.UDPRoute{} },
		func() *gatewayv1.UDPRouteList { return &gatewayv1.UDPRouteList{} })
}
