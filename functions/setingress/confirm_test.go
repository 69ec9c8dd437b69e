package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/testing/dataplane"
)

// TestRepliesFollowTheDataPlane drives a shared-IP entry point while a
// load balancer (the data plane stand-in) gives addresses, refuses them, or
// never answers, and checks each answer: port.reserved is answered
// endpoint.exposed only when confirmed, else endpoint.failed naming the
// condition, the exposure taken back (the port no longer the release's when
// refused, its reservation again when unconfirmed); POST /exposures answers
// 200, 422 or 202; GET /exposures shows each state.
func TestRepliesFollowTheDataPlane(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	cp.LoadBalancer(t, ns, "shared", "192.0.2.8", nil)
	var answer atomic.Int32 // what the load balancer answers berth's next Service
	dctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	dp := &dataplane.DataPlane{Core: cp.Client, Namespace: ns, Every: 20 * time.Millisecond,
		Decide: func(port int32, _ string) dataplane.Answer {
			if port < 20000 {
				return dataplane.Accept
			}
			return dataplane.Answer(answer.Load())
		}}
	wg.Go(func() { dp.Run(dctx) })
	t.Cleanup(func() { stop(); wg.Wait() })

	cfg := Config{
		Config: function.Config{MaxRequestBytes: 2048},
		Settings: reservation.Settings{LoadBalancerNamespace: ns, PortMin: 20000, PortMax: 30000, ReservationTTL: time.Minute,
			TCPServicesConfigMap: "tcp-services", UDPServicesConfigMap: "udp-services"},
		AllowedNamespaces:   []string{ns},
		ConfirmTimeout:      time.Second, // the pending case waits it out
		SharedIPAnnotations: map[string]string{"metallb.io/allow-shared-ip": "berth", dataplane.AnnotationLoadBalancerIPs: "{ip}"},
	}
	h := newHandler(cfg, cp.Client, nil, allowAll{})
	srv := httptest.NewServer(function.NewServer(cfg.Config, h.fn(), slog.New(slog.DiscardHandler)).Handler())
	t.Cleanup(srv.Close)
	c, _ := cloudevents.NewClientHTTP(cloudevents.WithTarget(srv.URL))
	ports := cfg.Settings.New(cp.Client, nil)

	for _, tc := range []struct {
		name   string
		answer dataplane.Answer
		reply  string
		detail string // in endpoint.failed's problem
		held   bool   // the release still holds the port (bound or reserved) after the reply
		state  string // GET /exposures
		post   int    // POST /exposures?wait=1s for a second port of the app
	}{
		{"confirmed", dataplane.Accept, events.EndpointExposed, "", true, "exposed", 200},
		{"refused", dataplane.Refuse, events.EndpointFailed, "AllocationFailed", false, "", 422},
		{"never answered", dataplane.Silent, events.EndpointFailed, "AddressNotAssigned", true, "", 202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer.Store(int32(tc.answer))
			app := strings.ReplaceAll(tc.name, " ", "-")
			_, err := cp.Client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
				ObjectMeta: metav1.ObjectMeta{Name: app},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"app": app}, Ports: []corev1.ServicePort{
					{Name: "mqtt", Port: 1883, Protocol: corev1.ProtocolTCP}, {Name: "amqp", Port: 5672, Protocol: corev1.ProtocolTCP},
				}},
			}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rel := events.Release{Name: app, Namespace: ns, Services: []events.Service{{Name: app, Ports: []events.ServicePort{{Name: "mqtt", Port: 1883, Protocol: "TCP"}}}}}
			res, err := ports.Reserve(ctx, reservation.Request{Owner: rel.Owner(), Protocol: "TCP", EntryPoint: "service.shared"})
			if err != nil {
				t.Fatal(err)
			}
			e := event.New()
			e.SetID("reserved-" + app)
			e.SetSource("/berth/getport")
			e.SetType(events.PortReserved)
			_ = e.SetData(cloudevents.ApplicationJSON, events.PortReservedData{EntryPoint: res.EntryPoint, IP: res.IP, Port: res.Port, Protocol: "TCP",
				Owner: res.Owner, Expose: &events.Expose{ServicePort: intstr.FromString("mqtt")}, Release: &rel})
			reply, result := c.Request(ctx, e)
			if !cloudevents.IsACK(result) || reply == nil || reply.Type() != tc.reply {
				t.Fatalf("port.reserved = %v, %v; want %s", reply, result, tc.reply)
			}
			if tc.detail != "" {
				var f function.Failure
				if err := reply.DataAs(&f); err != nil || f.Problem.Status != 422 || !strings.Contains(f.Problem.Detail, tc.detail) {
					t.Errorf("endpoint.failed = %+v, %v; want a 422 naming %s", f, err, tc.detail)
				}
			}
			held, _ := ports.List(ctx, reservation.Filter{Owner: rel.Owner()})
			if (len(held) == 1) != tc.held {
				t.Errorf("after the reply the release holds %+v, want held %v", held, tc.held)
			}

			status, b, _ := do(t, "GET", srv.URL+"/exposures?owner="+rel.Owner(), "", "")
			var list struct{ Items []map[string]any }
			if err := json.Unmarshal(b, &list); status != 200 || err != nil {
				t.Fatalf("GET /exposures = %d %s", status, b)
			}
			switch {
			case tc.state == "" && len(list.Items) != 0,
				tc.state != "" && (len(list.Items) != 1 || list.Items[0]["state"] != tc.state):
				t.Errorf("GET /exposures = %s, want state %q", b, tc.state)
			}

			status, b, _ = do(t, "POST", srv.URL+"/exposures?wait=1s", "application/json",
				`{"serviceNamespace":"`+ns+`","serviceName":"`+app+`","servicePort":"amqp","entryPoint":"service.shared"}`)
			if status != tc.post {
				t.Errorf("POST /exposures = %d %s, want %d", status, b, tc.post)
			}
		})
	}
	// Nothing refused is left: no Service of berth's for the refused app.
	l, _ := cp.Client.CoreV1().Services(ns).List(ctx, metav1.ListOptions{LabelSelector: "berth.dev/entry-point"})
	for _, s := range l.Items {
		if s.Spec.Selector["app"] == "refused" {
			t.Errorf("refused exposure left Service %s", s.Name)
		}
	}
}
