package expose

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/testing/dataplane"
)

// standIn runs a data plane stand-in on f's namespace that answers a for
// every port berth exposes (20000 and up), and accepts the rest. The answer
// can be changed through the pointer it returns.
func standIn(t *testing.T, f *fixture, a dataplane.Answer) *atomic.Int32 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	answer := new(atomic.Int32)
	answer.Store(int32(a))
	dp := &dataplane.DataPlane{Core: cp.Client, Gateway: f.gw, Namespace: f.ns, Every: 20 * time.Millisecond,
		Decide: func(port int32, _ string) dataplane.Answer {
			if port >= 20000 {
				return dataplane.Answer(answer.Load())
			}
			return dataplane.Accept
		}}
	var wg sync.WaitGroup
	wg.Go(func() { dp.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return answer
}

// TestRetryOfExposedIsNotTakenBack: a retry of an exposure that was
// confirmed, read while the data plane now refuses it, reports the refusal
// and leaves the exposure as it is: only what a call itself wrote is taken
// back.
func TestRetryOfExposedIsNotTakenBack(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	f := newFixture(t, entrypoint.BackendGatewayAPI)
	f.app(t, "gw-1")
	answer := standIn(t, f, dataplane.Accept)
	req := f.request("gw-1", intstr.FromString("mqtt"), portalloc.TCP)
	req.Wait = 30 * time.Second
	end, err := f.exp.Expose(ctx, req)
	if err != nil || end.State != StateExposed {
		t.Fatalf("Expose = %+v, %v; want exposed", end, err)
	}
	answer.Store(int32(dataplane.Refuse))
	// Once the data plane has turned it down, retry it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		held, err := f.exp.List(ctx, reservation.Filter{EntryPoint: f.ep})
		if err == nil && len(held) == 1 && f.exp.Statuses(ctx, held) == nil && held[0].State == StateFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stand-in never refused the listener: %+v, %v", held, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	req.EntryPoint, req.Port, req.Owner = end.EntryPoint, end.Port, end.Owner
	if again, err := f.exp.Expose(ctx, req); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "left as it is") {
		t.Errorf("retry while refused = %+v, %v; want ErrRefused, left as it is", again, err)
	}
	checkRouted(t, f, entrypoint.BackendGatewayAPI, end, true)
	held, err := f.exp.List(ctx, reservation.Filter{EntryPoint: f.ep})
	if err != nil || len(held) != 1 || held[0].Port != end.Port {
		t.Errorf("after the retry List = %+v, %v; want the exposure still bound", held, err)
	}
	if err := f.exp.Statuses(ctx, held); err != nil || held[0].State != StateFailed || held[0].Reason != "PortUnavailable" {
		t.Errorf("Statuses = %+v, %v; want failed PortUnavailable", held, err)
	}
}

// TestConfirmedByStatus exposes through each backend while the data plane
// (written as an implementation would write it) confirms, refuses, or never
// answers, and checks what berth answers and what it leaves: exposed and
// routed; refused with the data plane's reason, and nothing left, the port
// free; pending, still written and held, and GET /exposures' statuses say
// the same.
func TestConfirmedByStatus(t *testing.T) {
	cp.Require(t)
	const wait = 30 * time.Second // a bound, never reached when the data plane answers
	for _, backend := range backends {
		for _, tc := range []struct {
			name   string
			answer dataplane.Answer
			want   State
			reason string // in the refusal's detail
		}{
			{"confirmed", dataplane.Accept, StateExposed, ""},
			{"refused", dataplane.Refuse, StateFailed, map[string]string{
				entrypoint.BackendGatewayAPI: "PortUnavailable", entrypoint.BackendSharedIP: "AllocationFailed", entrypoint.BackendIngressNginx: "PortUnavailable",
			}[backend]},
			{"never answered", dataplane.Silent, StatePending, ""},
		} {
			t.Run(backend+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				f := newFixture(t, backend)
				f.app(t, "gw-1")
				nginx := backend == entrypoint.BackendIngressNginx
				switch {
				case nginx && tc.answer != dataplane.Accept:
					// The controller's Service is the data plane, and its
					// load-balancer status has no generation to wait on: a
					// port error must be there when berth reads it, and a
					// Service without an address is no entry point at all.
					s, err := cp.Client.CoreV1().Services(f.ns).Get(ctx, "ingress-nginx-controller", metav1.GetOptions{})
					if err != nil {
						t.Fatal(err)
					}
					if tc.answer == dataplane.Refuse {
						msg := "PortUnavailable"
						s.Status.LoadBalancer.Ingress[0].Ports = []corev1.PortStatus{
							{Port: 20000, Protocol: corev1.ProtocolTCP, Error: &msg}, {Port: 20001, Protocol: corev1.ProtocolTCP, Error: &msg}}
					} else {
						s.Status = corev1.ServiceStatus{}
					}
					if _, err := cp.Client.CoreV1().Services(f.ns).UpdateStatus(ctx, s, metav1.UpdateOptions{}); err != nil {
						t.Fatal(err)
					}
				default:
					standIn(t, f, tc.answer)
				}
				before := cp.Fingerprint(t, f.ns)
				req := f.request("gw-1", intstr.FromString("mqtt"), portalloc.TCP)
				req.Wait = wait
				if tc.answer == dataplane.Silent {
					req.Wait = 500 * time.Millisecond
				}
				end, err := f.exp.Expose(ctx, req)
				if nginx && tc.answer == dataplane.Silent {
					if !errors.Is(err, reservation.ErrUnknownEntryPoint) {
						t.Errorf("Expose on a controller without an address = %+v, %v; want %v", end, err, reservation.ErrUnknownEntryPoint)
					}
					if after := cp.Fingerprint(t, f.ns); after != before {
						t.Errorf("Expose on a controller without an address wrote:\n%s\nwas\n%s", after, before)
					}
					return
				}
				held, lerr := f.exp.List(ctx, reservation.Filter{EntryPoint: f.ep})
				if lerr != nil {
					t.Fatal(lerr)
				}
				switch tc.want {
				case StateExposed, StatePending:
					if err != nil || end.State != tc.want {
						t.Fatalf("Expose = %+v, %v; want %s", end, err, tc.want)
					}
					checkRouted(t, f, backend, end, true)
					if err := f.exp.Statuses(ctx, held); err != nil || len(held) != 1 || held[0].State != tc.want {
						t.Errorf("List and Statuses = %+v, %v; want the one exposure %s", held, err, tc.want)
					}
					if tc.want == StatePending && (end.Reason == "" || end.Condition == "") {
						t.Errorf("pending exposure %+v names no condition and reason", end.Status)
					}
					if err := f.exp.Unexpose(ctx, end.EntryPoint, portalloc.Key{Protocol: end.Protocol, Port: end.Port}, end.Owner); err != nil {
						t.Fatal(err)
					}
				case StateFailed:
					if !errors.Is(err, ErrRefused) || problem.Status(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), tc.reason) {
						t.Fatalf("Expose = %+v, %v; want ErrRefused (422) naming %s", end, err, tc.reason)
					}
					ledger, err := f.exp.Ports.List(ctx, reservation.Filter{EntryPoint: f.ep})
					if err != nil || len(held) != 0 || len(ledger) != 1 || ledger[0].Owner != RefusedOwner || ledger[0].State != portalloc.Reserved || ledger[0].Port != 20000 {
						t.Errorf("after a refusal: exposures %+v, ledger %+v, %v; want none exposed, and port 20000 held a while by %s", held, ledger, err, RefusedOwner)
					}
					// The next exposure gets another port.
					f.app(t, "gw-2")
					req2 := f.request("gw-2", intstr.FromString("mqtt"), portalloc.TCP)
					req2.Wait = wait
					if next, err := f.exp.Expose(ctx, req2); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "port 20001") {
						t.Errorf("the next exposure = %+v, %v; want port 20001 (refused too)", next, err)
					}
					if err := cp.Client.CoreV1().Services(f.ns).Delete(ctx, "gw-2", metav1.DeleteOptions{}); err != nil {
						t.Fatal(err)
					}
				}
				// Refused, or unexposed: nothing of berth's is left, and
				// the target carries no endpoint.
				if backend == entrypoint.BackendIngressNginx {
					// The stand-in's port errors on the controller's Service
					// are its own status, and the ledger and stream
					// ConfigMaps stay, emptied.
					checkRouted(t, f, backend, Endpoint{Port: 20000, Protocol: portalloc.TCP}, false)
				} else if after := cp.Fingerprint(t, f.ns); !sameObjects(before, after) {
					t.Errorf("objects after:\n%s\nwant those before:\n%s", after, before)
				}
				if a := f.endpointAnnotation(t, "gw-1"); a != "" {
					t.Errorf("target still annotated %q", a)
				}
			})
		}
	}
}

// sameObjects compares two fingerprints by the objects they name, ignoring
// versions (status and the ledger change), but for the ledger ConfigMap,
// which exposing creates.
func sameObjects(a, b string) bool {
	names := func(s string) []string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			n, _, _ := strings.Cut(l, "@")
			if !strings.Contains(n, "configmaps/") || !strings.Contains(n, "berth-ports-") {
				out = append(out, n)
			}
		}
		return out
	}
	return strings.Join(names(a), "\n") == strings.Join(names(b), "\n")
}

func TestJudge(t *testing.T) {
	cond := func(typ string, s metav1.ConditionStatus, reason string, gen int64) metav1.Condition {
		return metav1.Condition{Type: typ, Status: s, Reason: reason, Message: "m", ObservedGeneration: gen}
	}
	T, F, U := metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown
	for _, tc := range []struct {
		name   string
		conds  []metav1.Condition
		want   State
		reason string
	}{
		{"all true", []metav1.Condition{cond("Accepted", T, "Accepted", 3), cond("Programmed", T, "Programmed", 3)}, StateExposed, ""},
		{"none yet", nil, StatePending, "NotObserved"},
		{"older generation", []metav1.Condition{cond("Accepted", T, "Accepted", 2), cond("Programmed", T, "Programmed", 2)}, StatePending, "NotObserved"},
		{"generation unset", []metav1.Condition{cond("Accepted", T, "Accepted", 0), cond("Programmed", T, "Programmed", 0)}, StateExposed, ""},
		{"port unavailable", []metav1.Condition{cond("Accepted", F, "PortUnavailable", 3), cond("Programmed", F, "Invalid", 3)}, StateFailed, "PortUnavailable"},
		{"refusal beats pending", []metav1.Condition{cond("Accepted", U, "Pending", 3), cond("Programmed", F, "Invalid", 3)}, StateFailed, "Invalid"},
		{"false but pending", []metav1.Condition{cond("Accepted", T, "Accepted", 3), cond("Programmed", F, "Pending", 3)}, StatePending, "Pending"},
		{"unknown", []metav1.Condition{cond("Accepted", U, "Whatever", 3), cond("Programmed", T, "Programmed", 3)}, StatePending, "Whatever"},
		{"refs unresolved", []metav1.Condition{cond("Accepted", T, "Accepted", 3), cond("Programmed", T, "Programmed", 3), cond("ResolvedRefs", F, "InvalidRouteKinds", 3)}, StateFailed, "InvalidRouteKinds"},
		{"conflicted", []metav1.Condition{cond("Accepted", T, "Accepted", 3), cond("Programmed", T, "Programmed", 3), cond("Conflicted", T, "ProtocolConflict", 3)}, StateFailed, "ProtocolConflict"},
		{"stale refusal", []metav1.Condition{cond("Accepted", F, "PortUnavailable", 2), cond("Programmed", T, "Programmed", 3)}, StatePending, "NotObserved"},
		{"later generation", []metav1.Condition{cond("Accepted", T, "Accepted", 7), cond("Programmed", T, "Programmed", 7)}, StateExposed, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := judge("listener tcp-20000", tc.conds, 3, listenerChecks)
			if got.State != tc.want || got.Reason != tc.reason {
				t.Errorf("judge(%s) = %+v, want %s %s", tc.name, got, tc.want, tc.reason)
			}
		})
	}
	// A route refused before the listener was seen is pending.
	for _, reason := range []string{"NoMatchingParent", "NotAllowedByListeners"} {
		if got := judge("route", []metav1.Condition{cond("Accepted", F, reason, 1)}, 1, routeChecks); got.State != StatePending {
			t.Errorf("route Accepted=False %s = %+v, want pending", reason, got)
		}
	}
	// A Gateway not accepted holds every tenant's listeners: pending.
	if got := judgeShared("Gateway", []metav1.Condition{cond("Accepted", F, "ListenersNotValid", 1)}); got.State != StatePending || got.Reason != "ListenersNotValid" {
		t.Errorf("Gateway Accepted=False = %+v, want pending", got)
	}
}

func TestLoadBalancerStatus(t *testing.T) {
	perr := "PortUnavailable"
	for _, tc := range []struct {
		name   string
		status corev1.ServiceStatus
		want   State
		reason string
	}{
		{"address given", corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}}}, StateExposed, ""},
		{"by hostname", corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{Hostname: "192.0.2.1"}}}}, StateExposed, ""},
		{"no address", corev1.ServiceStatus{}, StatePending, "AddressNotAssigned"},
		{"another address", corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.9"}}}}, StateFailed, "AddressMismatch"},
		{"port error", corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.1",
			Ports: []corev1.PortStatus{{Port: 20000, Protocol: corev1.ProtocolTCP, Error: &perr}}}}}}, StateFailed, "PortUnavailable"},
		{"another port's error", corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "192.0.2.1",
			Ports: []corev1.PortStatus{{Port: 20001, Protocol: corev1.ProtocolTCP, Error: &perr}}}}}}, StateExposed, ""},
		{"ports error condition", corev1.ServiceStatus{Conditions: []metav1.Condition{{Type: corev1.LoadBalancerPortsError, Status: metav1.ConditionTrue, Reason: "AllocationFailed"}}}, StateFailed, "AllocationFailed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := loadBalancerStatus(&corev1.Service{Status: tc.status}, "192.0.2.1", 20000, corev1.ProtocolTCP, false)
			if got.State != tc.want || got.Reason != tc.reason {
				t.Errorf("loadBalancerStatus(%s) = %+v, want %s %s", tc.name, got, tc.want, tc.reason)
			}
			// On a shared Service (an ingress controller's), a condition
			// about the Service is not this port's: pending, not failed.
			shared := loadBalancerStatus(&corev1.Service{Status: tc.status}, "192.0.2.1", 20000, corev1.ProtocolTCP, true)
			if want := map[bool]State{true: StatePending, false: tc.want}[tc.name == "ports error condition"]; shared.State != want {
				t.Errorf("loadBalancerStatus(%s) on a shared Service = %+v, want %s", tc.name, shared, want)
			}
		})
	}
}
