package entrypoint

import (
	"encoding/json"
	"maps"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

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
	got, err := decodeGateways(raw)
	if err != nil || len(got) != 3 {
		t.Fatalf("decodeGateways = %d, %v; want 3", len(got), err)
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
	got, err = decodeGateways([]byte(`{"items":[{"metadata":{"Name":"x"},"spec":{"listeners":[{"Port":1}]}}]}`))
	if err != nil || len(got) != 1 || got[0].Metadata.Name != "" || got[0].Spec.Listeners[0].Port != 0 {
		t.Errorf("case-folded fields = %+v, %v; want them ignored", got, err)
	}
}
