package entrypoint

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// TestGatewayFields: what berth reads of a Gateway decoded in part is what
// it reads of the typed Gateway.
func TestGatewayFields(t *testing.T) {
	same, all := gatewayv1.NamespacesFromSame, gatewayv1.NamespacesFromAll
	hostname := gatewayv1.HostnameAddressType
	gw := func(name string, from *gatewayv1.FromNamespaces) gatewayv1.Gateway {
		g := gatewayv1.Gateway{
			TypeMeta:   metav1.TypeMeta{APIVersion: "gateway.networking.k8s.io/v1", Kind: "Gateway"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ingress", Annotations: map[string]string{AnnotationListeners: ListenersOnGateway, "x": "y"}, Labels: map[string]string{"a": "b"}},
			Spec: gatewayv1.GatewaySpec{
				GatewayClassName: "c",
				Listeners: []gatewayv1.Listener{
					{Name: "tcp", Port: 30000, Protocol: gatewayv1.TCPProtocolType},
					{Name: "udp", Port: 30001, Protocol: gatewayv1.UDPProtocolType},
				},
			},
			Status: gatewayv1.GatewayStatus{Addresses: []gatewayv1.GatewayStatusAddress{{Type: &hostname, Value: "lb.example"}, {Value: "192.0.2.9"}}},
		}
		if from != nil {
			g.Spec.AllowedListeners = &gatewayv1.AllowedListeners{Namespaces: &gatewayv1.ListenerNamespaces{From: from}}
		}
		return g
	}
	list := gatewayv1.GatewayList{Items: []gatewayv1.Gateway{gw("same", &same), gw("all", &all), gw("none", nil)}}
	raw, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	f, asked := serving(t, raw)
	got, err := f.listGateways(context.Background(), metav1.ListOptions{LabelSelector: "a=b", ResourceVersion: "0"})
	if err != nil || len(got) != 3 {
		t.Fatalf("listGateways = %d, %v; want 3", len(got), err)
	}
	if u := <-asked; u.Path != "/apis/gateway.networking.k8s.io/v1/namespaces/ingress/gateways" ||
		u.Query().Get("labelSelector") != "a=b" || u.Query().Get("resourceVersion") != "0" {
		t.Errorf("listGateways asked %s, want the Gateways of ingress with the list's options", u)
	}
	sets := []gatewayv1.ListenerSet{{Spec: gatewayv1.ListenerSetSpec{
		ParentRef: gatewayv1.ParentGatewayReference{Name: "same"},
		Listeners: []gatewayv1.ListenerEntry{{Name: "more", Port: 30002, Protocol: gatewayv1.TCPProtocolType}},
	}}}
	for i, admits := range []bool{true, false, false} {
		ep := fromGateway(&got[i], sets)
		want := list.Items[i]
		if ep.Name != want.Name || ep.Namespace != "ingress" || ep.Address != "lb.example" ||
			ep.Listeners != ListenersOnGateway || !maps.Equal(ep.Annotations, want.Annotations) || ep.AdmitsListenerSets != admits {
			t.Errorf("%s: entry point %+v; want its name, namespace, first address, annotations, listeners, admits sets %v", want.Name, ep, admits)
		}
		used := map[portalloc.Key]bool{{Protocol: portalloc.TCP, Port: 30000}: true, {Protocol: portalloc.UDP, Port: 30001}: true}
		if i == 0 {
			used[portalloc.Key{Protocol: portalloc.TCP, Port: 30002}] = true
		}
		if !maps.Equal(ep.Used, used) {
			t.Errorf("%s: Used = %v, want %v", want.Name, ep.Used, used)
		}
	}
	// A field named in another case is not the field (as the API server
	// decodes).
	f, _ = serving(t, []byte(`{"items":[{"metadata":{"Name":"x"},"spec":{"listeners":[{"Port":1}]}}]}`))
	got, err = f.listGateways(context.Background(), metav1.ListOptions{})
	if err != nil || len(got) != 1 || got[0].Metadata.Name != "" || got[0].Spec.Listeners[0].Port != 0 {
		t.Errorf("case-folded fields = %+v, %v; want them ignored", got, err)
	}
}

// serving is a Finder of namespace "ingress" whose Gateway API answers every
// request with body, and the URLs it was asked.
func serving(t *testing.T, body []byte) (*Finder, <-chan *url.URL) {
	asked := make(chan *url.URL, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked <- r.URL
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	c, err := gatewayapi.New(&rest.Config{Host: srv.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &Finder{Gateway: c, Namespace: "ingress"}, asked
}
