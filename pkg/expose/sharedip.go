package expose

import (
	"context"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/kube"
)

// SharedIPBackend exposes a port as a LoadBalancer Service of its own in the
// target's namespace, on the entry point's address, selecting the target's pods
// and carrying the provider's address-sharing annotations (MetalLB
// allow-shared-ip, Azure azure-load-balancer-ipv4, ...).
type SharedIPBackend struct {
	Core kubernetes.Interface
	// Annotations are set on every such Service; "{ip}" in a value becomes the
	// entry point's address.
	Annotations map[string]string
	Backoff     wait.Backoff
}

func (b *SharedIPBackend) desired(ep entrypoint.EntryPoint, x Exposure, lbClass *string) *corev1.Service {
	ann := map[string]string{AnnotationOwner: x.Owner}
	for k, v := range b.Annotations {
		ann[k] = strings.ReplaceAll(v, "{ip}", x.IP)
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name: objectName(ep, x.Key), Namespace: x.Namespace, Annotations: ann,
			Labels: map[string]string{kube.LabelManagedBy: kube.ManagedBy, LabelEntryPoint: ep.ID(), LabelPort: x.Key.String()},
		},
		Spec: corev1.ServiceSpec{
			Type:              corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass: lbClass,
			Selector:          maps.Clone(x.Selector),
			Ports: []corev1.ServicePort{{
				Name: portName(x.Key), Port: int32(x.Key.Port), TargetPort: x.TargetPort, Protocol: corev1.Protocol(x.Key.Protocol),
			}},
		},
	}
}

// Admit refuses a target without a selector: a shared-IP Service routes to the
// target's pods, so it needs the selector to copy.
func (b *SharedIPBackend) Admit(svc *corev1.Service) error {
	if len(svc.Spec.Selector) == 0 {
		return fmt.Errorf("%w: %s/%s", ErrNoSelector, svc.Namespace, svc.Name)
	}
	return nil
}

// Expose creates the Service, or brings it back to what it should be.
func (b *SharedIPBackend) Expose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) (int64, error) {
	if len(x.Selector) == 0 {
		return 0, fmt.Errorf("%w: %s/%s", ErrNoSelector, x.Namespace, x.Service)
	}
	// Same load-balancer implementation as the entry point, so the address can be shared.
	entry, err := b.Core.CoreV1().Services(ep.Namespace).Get(ctx, ep.Name, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("read entry point %s: %w", ep.ID(), err)
	}
	want := b.desired(ep, x, entry.Spec.LoadBalancerClass)
	svcs := b.Core.CoreV1().Services(x.Namespace)
	err = casUpdate(ctx, "service/"+x.Namespace+"/"+want.Name, b.Backoff,
		func(ctx context.Context) (*corev1.Service, error) {
			return svcs.Get(ctx, want.Name, metav1.GetOptions{})
		},
		func(s *corev1.Service) (bool, error) {
			if s.Labels[LabelEntryPoint] != ep.ID() {
				return false, fmt.Errorf("%w: Service %s/%s is not berth's", ErrTaken, s.Namespace, s.Name)
			}
			same := equality.Semantic.DeepEqual(s.Spec.Selector, want.Spec.Selector) &&
				len(s.Spec.Ports) == 1 && s.Spec.Ports[0].Port == want.Spec.Ports[0].Port &&
				s.Spec.Ports[0].TargetPort == want.Spec.Ports[0].TargetPort && s.Spec.Ports[0].Protocol == want.Spec.Ports[0].Protocol
			for k, v := range want.Annotations {
				same = same && s.Annotations[k] == v
			}
			if same {
				return false, nil
			}
			s.Spec.Selector, s.Spec.Ports = want.Spec.Selector, want.Spec.Ports
			if s.Annotations == nil {
				s.Annotations = map[string]string{}
			}
			maps.Copy(s.Annotations, want.Annotations)
			return true, nil
		},
		func(ctx context.Context, s *corev1.Service) error {
			_, err := svcs.Update(ctx, s, metav1.UpdateOptions{})
			return err
		},
		func(ctx context.Context) error { _, err := svcs.Create(ctx, want, metav1.CreateOptions{}); return err })
	if err != nil {
		return 0, fmt.Errorf("shared-IP Service %s/%s: %w", x.Namespace, want.Name, err)
	}
	return 0, nil
}

// Unexpose deletes the Service.
func (b *SharedIPBackend) Unexpose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) error {
	if x.Namespace == "" {
		return nil
	}
	name := objectName(ep, x.Key)
	err := b.Core.CoreV1().Services(x.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete shared-IP Service %s/%s: %w", x.Namespace, name, err)
	}
	return nil
}

// Status reads the shared-IP Service's status: it is exposed once the load
// balancer gives it the entry point's address, failed when it gives another
// or reports an error on the port.
func (b *SharedIPBackend) Status(ctx context.Context, ep entrypoint.EntryPoint, x Exposure, _ int64) (Status, error) {
	name := objectName(ep, x.Key)
	s, err := b.Core.CoreV1().Services(x.Namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return failed("Service "+x.Namespace+"/"+name, "NotFound", "the shared-IP Service is gone"), nil
	}
	if err != nil {
		return Status{}, fmt.Errorf("read shared-IP Service %s/%s: %w", x.Namespace, name, err)
	}
	return loadBalancerStatus(s, ep.Address, int32(x.Key.Port), corev1.Protocol(x.Key.Protocol), false), nil
}
