package expose

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// State is what the data plane reports of an exposure.
type State string

const (
	// StateExposed: the data plane says traffic can flow (its listener or
	// address is programmed and the route attached).
	StateExposed State = "exposed"
	// StatePending: berth has written the exposure and the data plane has not
	// answered yet, or answers that it is still working on it.
	StatePending State = "pending"
	// StateFailed: the data plane refused the exposure, or what berth wrote is
	// gone.
	StateFailed State = "failed"
)

// Status is an exposure's state, with the data plane's words for it.
type Status struct {
	State State `json:"state"`
	// Condition names what decided the state: a condition ("listener tcp-20001
	// Accepted"), or a field ("Service status.loadBalancer").
	Condition string `json:"condition,omitempty"`
	// Reason and Message are the data plane's (a condition's reason and
	// message), or berth's where the data plane has none.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// String is the status as an error detail or a log line says it.
func (s Status) String() string {
	var b strings.Builder
	b.WriteString(string(s.State))
	if s.Condition != "" {
		b.WriteString(": " + s.Condition)
	}
	if s.Reason != "" {
		b.WriteString(" " + s.Reason)
	}
	if s.Message != "" {
		b.WriteString(": " + s.Message)
	}
	return b.String()
}

var exposed = Status{State: StateExposed}

// maxMessage bounds a data plane's message in a status, so that a problem
// body that quotes it stays small.
const maxMessage = 240

func pending(condition, reason, message string) Status {
	return Status{State: StatePending, Condition: condition, Reason: reason, Message: clipMessage(message)}
}

func failed(condition, reason, message string) Status {
	return Status{State: StateFailed, Condition: condition, Reason: reason, Message: clipMessage(message)}
}

func clipMessage(s string) string {
	if len(s) <= maxMessage {
		return s
	}
	return strings.ToValidUTF8(s[:maxMessage], "") + "…"
}

// reasonPending is the reason Gateway API conditions give while the
// implementation is still working.
const reasonPending = "Pending"

// conditionCheck is one condition a status must have, or must not have.
type conditionCheck struct {
	Type string
	// Required: absent (or not yet observed) means pending. Otherwise only a
	// bad value counts.
	Required bool
	// Bad is the status that means failure: False for most, True for
	// Conflicted.
	Bad metav1.ConditionStatus
	// Waiting are reasons that, with the bad status, still mean pending
	// (beside Pending).
	Waiting []string
}

// listenerChecks are the conditions of a Gateway API listener: Accepted and
// Programmed must be True; ResolvedRefs must not be False nor Conflicted
// True.
var (
	listenerChecks = []conditionCheck{
		{Type: "Accepted", Required: true, Bad: metav1.ConditionFalse},
		{Type: "Programmed", Required: true, Bad: metav1.ConditionFalse},
		{Type: "ResolvedRefs", Bad: metav1.ConditionFalse},
		{Type: "Conflicted", Bad: metav1.ConditionTrue},
	}
	// A route's Accepted=False NoMatchingParent or NotAllowedByListeners
	// may have been written before the implementation saw the listener
	// (adding one does not change the route's generation): pending.
	routeChecks = []conditionCheck{
		{Type: "Accepted", Required: true, Bad: metav1.ConditionFalse, Waiting: []string{"NoMatchingParent", "NotAllowedByListeners"}},
		{Type: "ResolvedRefs", Bad: metav1.ConditionFalse},
	}
	// parentChecks are a Gateway's or ListenerSet's own: only a refusal
	// counts, the listeners say the rest.
	parentChecks = []conditionCheck{
		{Type: "Accepted", Bad: metav1.ConditionFalse},
	}
)

// judge reads conds against checks, counting only conditions observed at
// generation gen or later (any, if gen is 0; a condition whose
// observedGeneration is unset, as some implementations leave it, counts). A
// failure wins over pending; a bad condition whose reason is Pending (or one
// of the check's Waiting) is pending.
func judge(what string, conds []metav1.Condition, gen int64, checks []conditionCheck) Status {
	var wait *Status
	hold := func(s Status) {
		if wait == nil {
			wait = &s
		}
	}
	for _, c := range checks {
		cond := meta.FindStatusCondition(conds, c.Type)
		name := what + " " + c.Type
		switch {
		case cond == nil || cond.ObservedGeneration != 0 && cond.ObservedGeneration < gen:
			if c.Required {
				hold(pending(name, "NotObserved", fmt.Sprintf("the data plane has not reported %s for generation %d", c.Type, gen)))
			}
		case cond.Status == c.Bad:
			if cond.Reason != reasonPending && !slices.Contains(c.Waiting, cond.Reason) {
				return failed(name+"="+string(cond.Status), cond.Reason, cond.Message)
			}
			hold(pending(name+"="+string(cond.Status), cond.Reason, cond.Message))
		case c.Required && cond.Status != metav1.ConditionTrue:
			hold(pending(name+"="+string(cond.Status), cond.Reason, cond.Message))
		}
	}
	if wait != nil {
		return *wait
	}
	return exposed
}

// judgeShared judges the conditions of an object that carries other
// tenants' exposures too (a Gateway, a ListenerSet): its refusal is not
// this exposure's own, so it is pending, never failed.
func judgeShared(what string, conds []metav1.Condition) Status {
	st := judge(what, conds, 0, parentChecks)
	if st.State == StateFailed {
		st.State = StatePending
	}
	return st
}

// loadBalancerStatus judges a LoadBalancer Service that should answer on ip
// at port k: its LoadBalancerPortsError condition, the error of its port in
// status, and whether ip is among its addresses. On a shared Service (an
// ingress controller's) the condition is not this port's own: pending.
func loadBalancerStatus(s *corev1.Service, ip string, port int32, proto corev1.Protocol, shared bool) Status {
	if c := meta.FindStatusCondition(s.Status.Conditions, corev1.LoadBalancerPortsError); c != nil && c.Status == metav1.ConditionTrue {
		if shared {
			return pending("Service "+corev1.LoadBalancerPortsError, c.Reason, c.Message)
		}
		return failed("Service "+corev1.LoadBalancerPortsError, c.Reason, c.Message)
	}
	var addrs []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		for _, p := range in.Ports {
			if p.Port == port && p.Protocol == proto && p.Error != nil {
				return failed("Service status.loadBalancer.ingress.ports", *p.Error, fmt.Sprintf("the load balancer reports an error on %s port %d", proto, port))
			}
		}
		a := in.IP
		if a == "" {
			a = in.Hostname
		}
		addrs = append(addrs, a)
	}
	switch {
	case slices.Contains(addrs, ip):
		return exposed
	case len(addrs) == 0:
		return pending("Service status.loadBalancer", "AddressNotAssigned", "the load balancer has not given the Service an address yet")
	default:
		return failed("Service status.loadBalancer", "AddressMismatch",
			fmt.Sprintf("the load balancer gave %s, not the entry point's %s", strings.Join(addrs, ","), ip))
	}
}
