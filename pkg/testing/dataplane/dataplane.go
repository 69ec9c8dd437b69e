// Package dataplane stands in for the data plane on a control plane that has
// none (make run, and the tests on a bare API server): a load-balancer
// controller that gives LoadBalancer Services the address MetalLB's
// loadBalancerIPs annotation asks for, and a Gateway controller that answers
// Gateway, ListenerSet, TCPRoute and UDPRoute status. It writes status as an
// implementation would, and carries no traffic. What it answers for a port
// is the caller's choice: accept, refuse (as Traefik refuses a port it was
// not started with), or stay silent.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"
	gatewayinformers "sigs.k8s.io/gateway-api/pkg/client/informers/externalversions"
	gatewaylisters "sigs.k8s.io/gateway-api/pkg/client/listers/apis/v1"
)

// Answer is what the data plane says of a port.
type Answer int

const (
	// Accept programs the port: an address given, a listener accepted and
	// programmed, its routes accepted.
	Accept Answer = iota
	// Refuse turns it down: a listener Accepted=False PortUnavailable (and,
	// as Traefik answers, its Gateway Accepted=False ListenersNotValid), a
	// Service LoadBalancerPortsError.
	Refuse
	// Silent never answers.
	Silent
)

// ControllerName is the Gateway controller name it writes in route status.
const ControllerName = "berth.dev/dataplane-stand-in"

// AnnotationLoadBalancerIPs is MetalLB's annotation asking for addresses.
const AnnotationLoadBalancerIPs = "metallb.io/loadBalancerIPs"

// DataPlane answers status until its context ends. Like a real controller it
// watches what it answers (informers) and writes only status that differs, so
// that it loads the API server as an implementation would, not with a list of
// every Service many times a second.
type DataPlane struct {
	Core    kubernetes.Interface
	Gateway gatewayclient.Interface
	// Decide says what to answer for a port; nil accepts every port.
	Decide func(port int32, protocol string) Answer
	// Every is how often it looks; 50 ms if zero.
	Every time.Duration
	// Namespace limits it to one namespace; "" is all.
	Namespace string

	services corelisters.ServiceLister
	gws      gatewaylisters.GatewayLister
	sets     gatewaylisters.ListenerSetLister
	tcp      gatewaylisters.TCPRouteLister
	udp      gatewaylisters.UDPRouteLister
}

// watch starts the informers and waits for their first lists.
func (d *DataPlane) watch(ctx context.Context) bool {
	core := informers.NewSharedInformerFactoryWithOptions(d.Core, 0, informers.WithNamespace(d.Namespace))
	d.services = core.Core().V1().Services().Lister()
	core.Start(ctx.Done())
	synced := []map[reflect.Type]bool{core.WaitForCacheSync(ctx.Done())}
	if d.Gateway != nil {
		gw := gatewayinformers.NewSharedInformerFactoryWithOptions(d.Gateway, 0, gatewayinformers.WithNamespace(d.Namespace))
		v1 := gw.Gateway().V1()
		d.gws, d.sets, d.tcp, d.udp = v1.Gateways().Lister(), v1.ListenerSets().Lister(), v1.TCPRoutes().Lister(), v1.UDPRoutes().Lister()
		gw.Start(ctx.Done())
		synced = append(synced, gw.WaitForCacheSync(ctx.Done()))
	}
	for _, m := range synced {
		for _, ok := range m {
			if !ok {
				return false
			}
		}
	}
	return true
}

func (d *DataPlane) decide(port int32, proto string) Answer {
	if d.Decide == nil {
		return Accept
	}
	return d.Decide(port, proto)
}

// Run answers until ctx ends. A write that loses a race is made again on
// the next look.
func (d *DataPlane) Run(ctx context.Context) {
	every := d.Every
	if every == 0 {
		every = 50 * time.Millisecond
	}
	if !d.watch(ctx) {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		_ = d.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// once looks at everything once and writes the status that differs.
func (d *DataPlane) once(ctx context.Context) error {
	errs := []error{d.loadBalancers(ctx)}
	if d.Gateway != nil {
		errs = append(errs, d.gateways(ctx))
	}
	return errors.Join(errs...)
}

// loadBalancers gives each LoadBalancer Service that asks for an address by
// MetalLB's annotation, and has none, that address, or refuses it; and on
// one that has an address (an ingress controller's), reports an error on
// each port refused.
func (d *DataPlane) loadBalancers(ctx context.Context) error {
	all, err := d.services.List(labels.Everything())
	if err != nil {
		return err
	}
	for _, s := range all {
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer || len(s.Spec.Ports) == 0 {
			continue
		}
		if len(s.Status.LoadBalancer.Ingress) > 0 {
			if err := d.portErrors(ctx, s); err != nil {
				return err
			}
			continue
		}
		ip := s.Annotations[AnnotationLoadBalancerIPs]
		if ip == "" || len(s.Status.Conditions) > 0 {
			continue
		}
		s = s.DeepCopy() // the informer's copy is shared
		p := s.Spec.Ports[0]
		switch d.decide(p.Port, string(p.Protocol)) {
		case Accept:
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		case Refuse:
			meta.SetStatusCondition(&s.Status.Conditions, metav1.Condition{
				Type: corev1.LoadBalancerPortsError, Status: metav1.ConditionTrue, Reason: "AllocationFailed",
				Message: fmt.Sprintf("port %d/%s is not available on %s", p.Port, p.Protocol, ip), ObservedGeneration: s.Generation,
			})
		default:
			continue
		}
		if _, err := d.Core.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil && !apierrors.IsConflict(err) {
			return err
		}
	}
	return nil
}

// portErrors sets the error of each refused port of s in its first
// address's port status, as a cloud load balancer reports a port it cannot
// serve.
func (d *DataPlane) portErrors(ctx context.Context, s *corev1.Service) error {
	var ports []corev1.PortStatus
	for _, p := range s.Spec.Ports {
		if d.decide(p.Port, string(p.Protocol)) == Refuse {
			msg := "PortUnavailable"
			ports = append(ports, corev1.PortStatus{Port: p.Port, Protocol: p.Protocol, Error: &msg})
		}
	}
	if equality.Semantic.DeepEqual(s.Status.LoadBalancer.Ingress[0].Ports, ports) {
		return nil
	}
	s = s.DeepCopy() // the informer's copy is shared
	s.Status.LoadBalancer.Ingress[0].Ports = ports
	_, err := d.Core.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{})
	return ignoreConflict(err)
}

// listenerKey names a listener: its parent's kind, namespace and name, and
// its own name.
type listenerKey struct{ kind, namespace, name, section string }

// gateways answers listeners on Gateways and ListenerSets, then routes, and
// counts each listener's attached routes.
func (d *DataPlane) gateways(ctx context.Context) error {
	gv := d.Gateway.GatewayV1()
	gws, err := d.gws.List(labels.Everything())
	if err != nil {
		return err
	}
	sets, err := d.sets.List(labels.Everything())
	if err != nil {
		return err
	}
	tcp, err := d.tcp.List(labels.Everything())
	if err != nil {
		return err
	}
	udp, err := d.udp.List(labels.Everything())
	if err != nil {
		return err
	}
	// What each listener answered.
	answers := map[listenerKey]Answer{}
	for _, gw := range gws {
		for _, l := range gw.Spec.Listeners {
			answers[listenerKey{"Gateway", gw.Namespace, gw.Name, string(l.Name)}] = d.decide(int32(l.Port), string(l.Protocol))
		}
	}
	for _, s := range sets {
		for _, l := range s.Spec.Listeners {
			answers[listenerKey{"ListenerSet", s.Namespace, s.Name, string(l.Name)}] = d.decide(int32(l.Port), string(l.Protocol))
		}
	}
	attached := map[listenerKey]int32{}
	var errs []error
	for _, r := range tcp {
		if parents, changed := d.routeParents(r.Namespace, r.Spec.ParentRefs, r.Status.Parents, r.Generation, answers, attached); changed {
			r = r.DeepCopy() // the informer's copy is shared
			r.Status.Parents = parents
			_, err := gv.TCPRoutes(r.Namespace).UpdateStatus(ctx, r, metav1.UpdateOptions{})
			errs = append(errs, ignoreConflict(err))
		}
	}
	for _, r := range udp {
		if parents, changed := d.routeParents(r.Namespace, r.Spec.ParentRefs, r.Status.Parents, r.Generation, answers, attached); changed {
			r = r.DeepCopy() // the informer's copy is shared
			r.Status.Parents = parents
			_, err := gv.UDPRoutes(r.Namespace).UpdateStatus(ctx, r, metav1.UpdateOptions{})
			errs = append(errs, ignoreConflict(err))
		}
	}
	for _, gw := range gws {
		// The status is answered on a copy; the informer's object is shared.
		st := gw.Status.DeepCopy()
		accept(&st.Conditions, gw.Generation)
		old := map[gatewayv1.SectionName][]metav1.Condition{}
		var specs []listenerSpec
		for _, l := range st.Listeners {
			old[l.Name] = l.Conditions
		}
		for _, l := range gw.Spec.Listeners {
			specs = append(specs, listenerSpec{l.Name, l.Port})
		}
		st.Listeners = nil
		for _, a := range answerListeners(listenerKey{"Gateway", gw.Namespace, gw.Name, ""}, gw.Generation, specs, old, answers, attached) {
			st.Listeners = append(st.Listeners, gatewayv1.ListenerStatus{Name: a.name, AttachedRoutes: a.attached, Conditions: a.conds, SupportedKinds: routeKinds})
			if answers[listenerKey{"Gateway", gw.Namespace, gw.Name, string(a.name)}] == Refuse {
				// As Traefik answers: one refused listener and the whole
				// Gateway is not Accepted, with no Programmed condition.
				meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: "Accepted", Status: metav1.ConditionFalse,
					Reason: "ListenersNotValid", Message: "Some listeners are not valid", ObservedGeneration: gw.Generation})
				meta.RemoveStatusCondition(&st.Conditions, "Programmed")
			}
		}
		if !equality.Semantic.DeepEqual(st, &gw.Status) {
			gw = gw.DeepCopy()
			gw.Status = *st
			_, err := gv.Gateways(gw.Namespace).UpdateStatus(ctx, gw, metav1.UpdateOptions{})
			errs = append(errs, ignoreConflict(err))
		}
	}
	for _, s := range sets {
		st := s.Status.DeepCopy() // as for Gateways
		accept(&st.Conditions, s.Generation)
		old := map[gatewayv1.SectionName][]metav1.Condition{}
		var specs []listenerSpec
		for _, l := range st.Listeners {
			old[l.Name] = l.Conditions
		}
		for _, l := range s.Spec.Listeners {
			specs = append(specs, listenerSpec{l.Name, l.Port})
		}
		st.Listeners = nil
		for _, a := range answerListeners(listenerKey{"ListenerSet", s.Namespace, s.Name, ""}, s.Generation, specs, old, answers, attached) {
			st.Listeners = append(st.Listeners, gatewayv1.ListenerEntryStatus{Name: a.name, AttachedRoutes: a.attached, Conditions: a.conds, SupportedKinds: routeKinds})
		}
		if !equality.Semantic.DeepEqual(st, &s.Status) {
			s = s.DeepCopy()
			s.Status = *st
			_, err := gv.ListenerSets(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{})
			errs = append(errs, ignoreConflict(err))
		}
	}
	return errors.Join(errs...)
}

func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// routeKinds are the kinds a listener supports, with the group the CRD
// defaults, so that status read back equals status written.
var routeKinds = []gatewayv1.RouteGroupKind{{Group: &routeGroup, Kind: "TCPRoute"}, {Group: &routeGroup, Kind: "UDPRoute"}}

var routeGroup = gatewayv1.Group(gatewayv1.GroupName)

// listenerSpec is what the stand-in needs of a listener's spec.
type listenerSpec struct {
	name gatewayv1.SectionName
	port gatewayv1.PortNumber
}

// answered is a listener's status as the stand-in answers it.
type answered struct {
	name     gatewayv1.SectionName
	attached int32
	conds    []metav1.Condition
}

// answerListeners answers the listeners of parent (its section left empty)
// at generation gen, from their old conditions; silent ones get no status.
func answerListeners(parent listenerKey, gen int64, specs []listenerSpec, old map[gatewayv1.SectionName][]metav1.Condition,
	answers map[listenerKey]Answer, attached map[listenerKey]int32) []answered {
	var out []answered
	for _, l := range specs {
		k := parent
		k.section = string(l.name)
		if conds, ok := listenerConditions(old[l.name], answers[k], l.port, gen); ok {
			out = append(out, answered{l.name, attached[k], conds})
		}
	}
	return out
}

// accept marks a Gateway or ListenerSet Accepted and Programmed.
func accept(conds *[]metav1.Condition, gen int64) {
	for _, t := range []string{"Accepted", "Programmed"} {
		meta.SetStatusCondition(conds, metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: t, ObservedGeneration: gen})
	}
}

// listenerConditions are a listener's conditions for answer; false for a
// silent one, which gets no status.
func listenerConditions(old []metav1.Condition, a Answer, port gatewayv1.PortNumber, gen int64) ([]metav1.Condition, bool) {
	conds := append([]metav1.Condition(nil), old...)
	switch a {
	case Accept:
		for _, t := range []string{"Accepted", "Programmed", "ResolvedRefs"} {
			meta.SetStatusCondition(&conds, metav1.Condition{Type: t, Status: metav1.ConditionTrue, Reason: t, ObservedGeneration: gen})
		}
	case Refuse:
		meta.SetStatusCondition(&conds, metav1.Condition{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "PortUnavailable",
			Message: fmt.Sprintf("no entry point is listening on port %d", port), ObservedGeneration: gen})
		meta.SetStatusCondition(&conds, metav1.Condition{Type: "Programmed", Status: metav1.ConditionFalse, Reason: "Invalid", ObservedGeneration: gen})
		meta.SetStatusCondition(&conds, metav1.Condition{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs", ObservedGeneration: gen})
	default:
		return nil, false
	}
	return conds, true
}

// routeParents is a route's parent status as the stand-in answers it: for
// each parentRef to a listener it knows, Accepted when the listener was,
// counting it in attached. Parents of other controllers are kept.
func (d *DataPlane) routeParents(ns string, refs []gatewayv1.ParentReference, have []gatewayv1.RouteParentStatus, gen int64,
	answers map[listenerKey]Answer, attached map[listenerKey]int32) ([]gatewayv1.RouteParentStatus, bool) {
	var out []gatewayv1.RouteParentStatus
	for _, p := range have {
		if p.ControllerName != ControllerName {
			out = append(out, p)
		}
	}
	for _, ref := range refs {
		kind, pns, section := "Gateway", ns, ""
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		if ref.Namespace != nil {
			pns = string(*ref.Namespace)
		}
		if ref.SectionName != nil {
			section = string(*ref.SectionName)
		}
		k := listenerKey{kind, pns, string(ref.Name), section}
		a, ok := answers[k]
		if !ok || a == Silent {
			continue
		}
		var old []metav1.Condition
		for _, p := range have {
			if p.ControllerName == ControllerName && equality.Semantic.DeepEqual(p.ParentRef, ref) {
				old = append(old, p.Conditions...)
			}
		}
		conds := append([]metav1.Condition(nil), old...)
		if a == Accept {
			attached[k]++
			meta.SetStatusCondition(&conds, metav1.Condition{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted", ObservedGeneration: gen})
		} else {
			meta.SetStatusCondition(&conds, metav1.Condition{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "NotAllowedByListeners",
				Message: "the listener is not accepted", ObservedGeneration: gen})
		}
		meta.SetStatusCondition(&conds, metav1.Condition{Type: "ResolvedRefs", Status: metav1.ConditionTrue, Reason: "ResolvedRefs", ObservedGeneration: gen})
		out = append(out, gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName, Conditions: conds})
	}
	return out, !equality.Semantic.DeepEqual(out, have)
}
