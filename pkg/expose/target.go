package expose

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// Target is the Service port an exposure routes to.
type Target struct {
	Namespace string
	Name      string
	// Port is the Service port, by number or name.
	Port     intstr.IntOrString
	Protocol portalloc.Protocol
}

// NamespacedName is namespace/name.
func (t Target) NamespacedName() string { return t.Namespace + "/" + t.Name }

// Validate checks a target's form before anything is read.
func (t Target) Validate() error {
	var problems []string
	if len(validation.IsDNS1123Label(t.Namespace)) != 0 {
		problems = append(problems, "serviceNamespace must be a DNS label")
	}
	if len(validation.IsDNS1035Label(t.Name)) != 0 {
		problems = append(problems, "serviceName must be a DNS-1035 label")
	}
	switch t.Port.Type {
	case intstr.Int:
		if t.Port.IntVal < 1 || t.Port.IntVal > 65535 {
			problems = append(problems, "servicePort must be 1-65535")
		}
	case intstr.String:
		if len(validation.IsValidPortName(t.Port.StrVal)) != 0 {
			problems = append(problems, "servicePort must be a port number or name")
		}
	}
	if _, err := portalloc.ParseProtocol(string(t.Protocol)); err != nil {
		problems = append(problems, "protocol must be TCP or UDP")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrBadRequest, strings.Join(problems, "; "))
	}
	return nil
}

// resolved is a target found in the cluster.
type resolved struct {
	Target
	Service *corev1.Service
	// ServicePort is the matching port of Service.
	ServicePort corev1.ServicePort
}

// resolve finds the target Service and its port of that number or name and
// protocol.
func resolve(ctx context.Context, core kubernetes.Interface, t Target) (resolved, error) {
	svc, err := core.CoreV1().Services(t.Namespace).Get(ctx, t.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return resolved{}, fmt.Errorf("%w: %s", ErrServiceNotFound, t.NamespacedName())
	}
	if err != nil {
		return resolved{}, fmt.Errorf("read Service %s: %w", t.NamespacedName(), err)
	}
	for _, p := range svc.Spec.Ports {
		proto := portalloc.Protocol(p.Protocol)
		if proto == "" {
			proto = portalloc.TCP
		}
		if proto != t.Protocol {
			continue
		}
		if t.Port.Type == intstr.Int && p.Port == t.Port.IntVal || t.Port.Type == intstr.String && p.Name == t.Port.StrVal {
			return resolved{Target: t, Service: svc, ServicePort: p}, nil
		}
	}
	return resolved{}, fmt.Errorf("%w: %s has no %s port %s", ErrNoSuchPort, t.NamespacedName(), t.Protocol, t.Port.String())
}

// TargetFor is the Service port a release event asks to expose: the Service the
// intent names, else the one Service of the release with a port of that number
// or name and protocol.
func TargetFor(r events.Release, x events.Expose) (Target, error) {
	proto, err := portalloc.ParseProtocol(x.Protocol)
	if err != nil {
		return Target{}, err
	}
	t := Target{Namespace: r.Namespace, Name: x.ServiceName, Port: x.ServicePort, Protocol: proto}
	if t.Name != "" {
		return t.checked()
	}
	var names []string
	for _, s := range r.Services {
		for _, p := range s.Ports {
			pp, _ := portalloc.ParseProtocol(p.Protocol)
			if pp == proto && (x.ServicePort.Type == intstr.Int && p.Port == x.ServicePort.IntVal || x.ServicePort.Type == intstr.String && p.Name == x.ServicePort.StrVal) {
				names = append(names, s.Name)
				break
			}
		}
	}
	switch len(names) {
	case 0:
		return Target{}, fmt.Errorf("%w: no Service of release %s has %s port %s", ErrNoSuchPort, r.Owner(), proto, x.ServicePort.String())
	case 1:
		t.Name = names[0]
		return t.checked()
	}
	return Target{}, fmt.Errorf("%w: %s of release %s; name one in expose.serviceName", ErrAmbiguous, strings.Join(names, ", "), r.Owner())
}

// checked returns t if it is valid, else the zero Target and the reason.
func (t Target) checked() (Target, error) {
	if err := t.Validate(); err != nil {
		return Target{}, err
	}
	return t, nil
}
