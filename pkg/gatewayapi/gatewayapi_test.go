package gatewayapi_test

import (
	"context"
	"os"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) { os.Exit(controlplane.RunTests(m, &cp)) }

// TestKinds: each kind is written, read, listed by label and deleted
// through the client, and the generated clientset (the test's own reads)
// sees what it wrote.
func TestKinds(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	ctx := context.Background()
	c, err := gatewayapi.New(cp.Config, nil)
	if err != nil {
		t.Fatal(err)
	}
	theirs := gatewayclient.NewForConfigOrDie(cp.Config).GatewayV1()
	meta := metav1.ObjectMeta{Name: "x", Labels: map[string]string{"berth.dev/test": "yes"}}
	sel := metav1.ListOptions{LabelSelector: "berth.dev/test=yes"}
	parent := []gatewayv1.ParentReference{{Name: "x"}}

	gw, err := c.Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: meta, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: "c", Listeners: []gatewayv1.Listener{{Name: "a", Port: 20000, Protocol: gatewayv1.TCPProtocolType}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stale := gw.DeepCopy()
	gw.Spec.Listeners = append(gw.Spec.Listeners, gatewayv1.Listener{Name: "b", Port: 20001, Protocol: gatewayv1.UDPProtocolType})
	if _, err := c.Gateways(ns).Update(ctx, gw, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server's refusals come back as its errors: compare-and-swap
	// (pkg/expose) retries on a conflict.
	if _, err := c.Gateways(ns).Update(ctx, stale, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Errorf("an update at a stale resourceVersion = %v, want a Conflict", err)
	}
	again := stale.DeepCopy()
	again.ResourceVersion = ""
	if _, err := c.Gateways(ns).Create(ctx, again, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Errorf("a second create = %v, want AlreadyExists", err)
	}
	rv := stale.ResourceVersion
	if err := c.Gateways(ns).Delete(ctx, "x", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}}); !apierrors.IsConflict(err) {
		t.Errorf("a delete preconditioned on a stale resourceVersion = %v, want a Conflict", err)
	}
	// One of each kind the label selector must leave out.
	other := metav1.ObjectMeta{Name: "unlabelled"}
	if _, err := c.Gateways(ns).Create(ctx, &gatewayv1.Gateway{ObjectMeta: other, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: "c", Listeners: []gatewayv1.Listener{{Name: "a", Port: 20009, Protocol: gatewayv1.TCPProtocolType}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got, err := theirs.Gateways(ns).Get(ctx, "x", metav1.GetOptions{}); err != nil || len(got.Spec.Listeners) != 2 {
		t.Errorf("the Gateway as written = %v, %v; want 2 listeners", got, err)
	}
	if _, err := c.ListenerSets(ns).Create(ctx, &gatewayv1.ListenerSet{ObjectMeta: meta, Spec: gatewayv1.ListenerSetSpec{
		ParentRef: gatewayv1.ParentGatewayReference{Name: "x"},
		Listeners: []gatewayv1.ListenerEntry{{Name: "c", Port: 20002, Protocol: gatewayv1.TCPProtocolType}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rule := []gatewayv1.TCPRouteRule{{BackendRefs: []gatewayv1.BackendRef{{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "svc", Port: new(gatewayv1.PortNumber(1883))}}}}}
	if _, err := c.TCPRoutes(ns).Create(ctx, &gatewayv1.TCPRoute{ObjectMeta: meta, Spec: gatewayv1.TCPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent}, Rules: rule}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	urule := []gatewayv1.UDPRouteRule{{BackendRefs: rule[0].BackendRefs}}
	for _, m := range []metav1.ObjectMeta{meta, other} {
		if _, err := c.UDPRoutes(ns).Create(ctx, &gatewayv1.UDPRoute{ObjectMeta: m, Spec: gatewayv1.UDPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent}, Rules: urule}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.TCPRoutes(ns).Create(ctx, &gatewayv1.TCPRoute{ObjectMeta: other, Spec: gatewayv1.TCPRouteSpec{
		CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: parent}, Rules: rule}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListenerSets(ns).Create(ctx, &gatewayv1.ListenerSet{ObjectMeta: other, Spec: gatewayv1.ListenerSetSpec{
		ParentRef: gatewayv1.ParentGatewayReference{Name: "x"},
		Listeners: []gatewayv1.ListenerEntry{{Name: "d", Port: 20003, Protocol: gatewayv1.TCPProtocolType}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	gws, err1 := c.Gateways(ns).List(ctx, sel)
	sets, err2 := c.ListenerSets(ns).List(ctx, sel)
	tcp, err3 := c.TCPRoutes(ns).List(ctx, sel)
	udp, err4 := c.UDPRoutes(ns).List(ctx, sel)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil || len(gws.Items) != 1 || len(sets.Items) != 1 || len(tcp.Items) != 1 || len(udp.Items) != 1 {
		t.Fatalf("lists by label = %v %v %v %v; want one of each", err1, err2, err3, err4)
	}
	if r, err := c.TCPRoutes(ns).Get(ctx, "x", metav1.GetOptions{}); err != nil || *r.Spec.Rules[0].BackendRefs[0].Port != 1883 {
		t.Errorf("the TCPRoute read back = %v, %v", r, err)
	}
	for _, del := range []func() error{
		func() error { return c.UDPRoutes(ns).Delete(ctx, "x", metav1.DeleteOptions{}) },
		func() error { return c.TCPRoutes(ns).Delete(ctx, "x", metav1.DeleteOptions{}) },
		func() error { return c.ListenerSets(ns).Delete(ctx, "x", metav1.DeleteOptions{}) },
		func() error { return c.Gateways(ns).Delete(ctx, "x", metav1.DeleteOptions{}) },
	} {
		if err := del(); err != nil {
			t.Error(err)
		}
	}
	if _, err := c.Gateways(ns).Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Gateway after its delete: %v, want NotFound", err)
	}
}
