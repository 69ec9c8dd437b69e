package controlplane

import (
	"context"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
)

// LoadBalancer creates a LoadBalancer Service with the given labels and ports
// and, when ip is set, gives it that address in status, as a cloud or MetalLB
// controller would. It is how tests make shared-IP entry points.
func (cp *ControlPlane) LoadBalancer(t TB, ns, name, ip string, labels map[string]string, ports ...corev1.ServicePort) *corev1.Service {
	t.Helper()
	svc, err := cp.CreateLoadBalancer(context.Background(), ns, name, ip, labels, ports...)
	if err != nil {
		t.Fatalf("LoadBalancer Service %s: %v", name, err)
	}
	return svc
}

// CreateLoadBalancer is LoadBalancer for callers that are not tests (make run).
// Without ports it gets one, http 80.
func (cp *ControlPlane) CreateLoadBalancer(ctx context.Context, ns, name, ip string, labels map[string]string, ports ...corev1.ServicePort) (*corev1.Service, error) {
	if len(ports) == 0 {
		ports = []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}
	}
	for i := range ports {
		if ports[i].TargetPort.IntVal == 0 && ports[i].TargetPort.StrVal == "" {
			ports[i].TargetPort = intstr.FromInt32(ports[i].Port)
		}
	}
	svc, err := cp.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, Ports: ports,
			Selector: map[string]string{"app": name},
		},
	}, metav1.CreateOptions{})
	if err != nil || ip == "" {
		return svc, err
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
	return cp.Client.CoreV1().Services(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{})
}

// CreateGateway creates a Gateway API Gateway with the given listeners,
// admitting ListenerSets from its own namespace (as a platform team that lets
// berth add its own does) and, when ip is set, gives it that address in
// status, as a Gateway controller would: an entry point of the gateway-api
// backend.
func (cp *ControlPlane) CreateGateway(ctx context.Context, ns, name, ip string, listeners ...gatewayv1.Listener) (*gatewayv1.Gateway, error) {
	gws := gatewayclient.NewForConfigOrDie(cp.Config).GatewayV1().Gateways(ns)
	same := gatewayv1.NamespacesFromSame
	g, err := gws.Create(ctx, &gatewayv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: gatewayv1.GatewaySpec{GatewayClassName: "berth-test", Listeners: listeners,
			AllowedListeners: &gatewayv1.AllowedListeners{Namespaces: &gatewayv1.ListenerNamespaces{From: &same}}},
	}, metav1.CreateOptions{})
	if err != nil || ip == "" {
		return g, err
	}
	g.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Value: ip}}
	return gws.UpdateStatus(ctx, g, metav1.UpdateOptions{})
}

// fingerprinted are the kinds berth writes.
var fingerprinted = []schema.GroupVersionResource{
	{Version: "v1", Resource: "configmaps"},
	{Version: "v1", Resource: "services"},
	{Version: "v1", Resource: "secrets"},
	{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "gateways"},
	{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "listenersets"},
	{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "tcproutes"},
	{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "udproutes"},
}

// Fingerprint names every object of the kinds berth writes in namespaces, with
// its resourceVersion: two equal fingerprints mean nothing was written between
// them. Tests take one before and after what must change nothing.
func (cp *ControlPlane) Fingerprint(t TB, namespaces ...string) string {
	t.Helper()
	dyn, err := dynamic.NewForConfig(cp.Config)
	if err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	var parts []string
	for _, ns := range namespaces {
		for _, gvr := range fingerprinted {
			l, err := dyn.Resource(gvr).Namespace(ns).List(context.Background(), metav1.ListOptions{})
			if err != nil {
				t.Fatalf("fingerprint %s in %s: %v", gvr.Resource, ns, err)
			}
			for _, o := range l.Items {
				if o.GetName() == "kube-root-ca.crt" {
					continue // published by a controller, not berth
				}
				parts = append(parts, gvr.Resource+"/"+ns+"/"+o.GetName()+"@"+o.GetResourceVersion())
			}
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "\n")
}
