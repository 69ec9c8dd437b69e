package expose

import (
	"errors"
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/portalloc"
)

func TestTargetFor(t *testing.T) {
	rel := events.Release{Name: "gw", Namespace: "tenant", Services: []events.Service{
		{Name: "gw-mqtt", Ports: []events.ServicePort{{Name: "mqtt", Port: 1883, Protocol: "TCP"}}},
		{Name: "gw-coap", Ports: []events.ServicePort{{Name: "coap", Port: 5683, Protocol: "UDP"}}},
		{Name: "gw-metrics", Ports: []events.ServicePort{{Name: "http", Port: 9090, Protocol: "TCP"}}},
		{Name: "gw-metrics2", Ports: []events.ServicePort{{Name: "http", Port: 9090, Protocol: "TCP"}}},
	}}
	tests := []struct {
		name     string
		x        events.Expose
		wantName string
		wantErr  error
	}{
		{"by number", events.Expose{ServicePort: intstr.FromInt(1883)}, "gw-mqtt", nil},
		{"by name and protocol", events.Expose{ServicePort: intstr.FromString("coap"), Protocol: "udp"}, "gw-coap", nil},
		{"named service wins", events.Expose{ServiceName: "gw-metrics", ServicePort: intstr.FromInt(9090)}, "gw-metrics", nil},
		{"protocol must match", events.Expose{ServicePort: intstr.FromInt(5683)}, "", ErrNoSuchPort},
		{"no such port", events.Expose{ServicePort: intstr.FromInt(1)}, "", ErrNoSuchPort},
		{"ambiguous", events.Expose{ServicePort: intstr.FromString("http")}, "", ErrAmbiguous},
		{"bad protocol", events.Expose{ServicePort: intstr.FromInt(1883), Protocol: "SCTP"}, "", portalloc.ErrBadProtocol},
		{"bad service name", events.Expose{ServiceName: "Gw!", ServicePort: intstr.FromInt(1883)}, "", ErrBadRequest},
	}
	for _, tc := range tests {
		got, err := TargetFor(rel, tc.x)
		if !errors.Is(err, tc.wantErr) || got.Name != tc.wantName {
			t.Errorf("TargetFor(%s) = %+v, %v; want %q, %v", tc.name, got, err, tc.wantName, tc.wantErr)
		}
		if err == nil && got.Namespace != "tenant" {
			t.Errorf("TargetFor(%s) namespace = %q, want tenant", tc.name, got.Namespace)
		}
	}
}
