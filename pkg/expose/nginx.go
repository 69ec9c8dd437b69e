package expose

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/portalloc"
)

// IngressNginxBackend exposes a port through an ingress-nginx controller: an
// entry "<port>": "<ns>/<svc>:<port>[:PROXY[:PROXY]]" in its tcp- or
// udp-services ConfigMap, and the port on its LoadBalancer Service. Both writes
// are compare-and-swap; there is no helm upgrade and no controller rollout.
type IngressNginxBackend struct {
	Core    kubernetes.Interface
	Backoff wait.Backoff
}

// StreamEntry is the tcp/udp-services value for x.
func StreamEntry(x Exposure) string {
	v := fmt.Sprintf("%s/%s:%d", x.Namespace, x.Service, x.Port)
	switch {
	case x.Key.Protocol != portalloc.TCP:
	case x.Proxy.Encode:
		v += ":" + map[bool]string{true: "PROXY", false: ""}[x.Proxy.Decode] + ":PROXY"
	case x.Proxy.Decode:
		v += ":PROXY"
	}
	return v
}

func streamConfigMap(ep entrypoint.EntryPoint, proto portalloc.Protocol) (string, string, error) {
	ref := ep.StreamConfigMaps[proto]
	ns, name, ok := strings.Cut(ref, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: %s on %s", ErrNoStreamConfigMap, proto, ep.ID())
	}
	return ns, name, nil
}

// Expose writes the ConfigMap entry, then opens the port on the controller's Service.
func (n *IngressNginxBackend) Expose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) (int64, error) {
	ns, name, err := streamConfigMap(ep, x.Key.Protocol)
	if err != nil {
		return 0, err
	}
	pname := portName(x.Key)
	svcs := n.Core.CoreV1().Services(ep.Namespace)
	// The controller's Service first, read only: a port there that is not
	// berth's is refused before the ConfigMap is written.
	s, err := svcs.Get(ctx, ep.Name, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("read entry point %s: %w", ep.ID(), err)
	}
	if err := portTaken(s, pname, x.Key); err != nil {
		return 0, err
	}
	key, value := fmt.Sprint(x.Key.Port), StreamEntry(x)
	cms := n.Core.CoreV1().ConfigMaps(ns)
	err = casUpdate(ctx, "configmap/"+ns+"/"+name, n.Backoff,
		func(ctx context.Context) (*corev1.ConfigMap, error) { return cms.Get(ctx, name, metav1.GetOptions{}) },
		func(cm *corev1.ConfigMap) (bool, error) {
			switch cur, ok := cm.Data[key]; {
			case ok && cur == value:
				return false, nil
			case ok && serviceOf(cur) != serviceOf(value):
				return false, fmt.Errorf("%w: %s/%s maps %s to %s", ErrTaken, ns, name, key, serviceOf(cur))
			}
			if cm.Data == nil {
				cm.Data = map[string]string{}
			}
			cm.Data[key] = value
			return true, nil
		},
		func(ctx context.Context, cm *corev1.ConfigMap) error {
			_, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
			return err
		},
		func(ctx context.Context) error {
			_, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{key: value}}, metav1.CreateOptions{})
			return err
		})
	if err != nil {
		return 0, fmt.Errorf("ingress-nginx entry %s in %s/%s: %w", key, ns, name, err)
	}
	err = casUpdate(ctx, "service/"+ep.Namespace+"/"+ep.Name, n.Backoff,
		func(ctx context.Context) (*corev1.Service, error) {
			// The first attempt writes at the version checked above; a
			// conflict reads again.
			if read := s; read != nil {
				s = nil
				return read, nil
			}
			return svcs.Get(ctx, ep.Name, metav1.GetOptions{})
		},
		func(s *corev1.Service) (bool, error) {
			if slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == pname }) {
				return false, nil
			}
			if err := portTaken(s, pname, x.Key); err != nil {
				return false, err
			}
			s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{
				Name: pname, Port: int32(x.Key.Port), TargetPort: intstr.FromInt(x.Key.Port), Protocol: corev1.Protocol(x.Key.Protocol),
			})
			return true, nil
		},
		func(ctx context.Context, s *corev1.Service) error {
			_, err := svcs.Update(ctx, s, metav1.UpdateOptions{})
			return err
		},
		nil)
	if errors.Is(err, ErrTaken) {
		// A port that appeared on the controller's Service since the check
		// above: take back the entry, so that ErrTaken still means nothing
		// of this exposure is written.
		if rerr := n.removeEntry(ctx, ep, x); rerr != nil {
			return 0, fmt.Errorf("port %s on Service %s: %w (and removing the entry failed: %v)", pname, ep.ID(), err, rerr)
		}
	}
	if err != nil {
		return 0, fmt.Errorf("port %s on Service %s: %w", pname, ep.ID(), err)
	}
	return 0, nil
}

// portTaken refuses k when the controller's Service has it under a name other
// than berth's pname.
func portTaken(s *corev1.Service, pname string, k portalloc.Key) error {
	for _, p := range s.Spec.Ports {
		if p.Name != pname && int(p.Port) == k.Port && string(p.Protocol) == string(k.Protocol) {
			return fmt.Errorf("%w: Service port %s uses %d", ErrTaken, p.Name, p.Port)
		}
	}
	return nil
}

// Unexpose closes the port on the Service, then removes the entry if it still
// routes to the exposure's Service.
func (n *IngressNginxBackend) Unexpose(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) error {
	pname := portName(x.Key)
	svcs := n.Core.CoreV1().Services(ep.Namespace)
	err := casUpdate(ctx, "service/"+ep.Namespace+"/"+ep.Name, n.Backoff,
		func(ctx context.Context) (*corev1.Service, error) { return svcs.Get(ctx, ep.Name, metav1.GetOptions{}) },
		func(s *corev1.Service) (bool, error) {
			l := len(s.Spec.Ports)
			s.Spec.Ports = slices.DeleteFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == pname })
			return len(s.Spec.Ports) != l, nil
		},
		func(ctx context.Context, s *corev1.Service) error {
			_, err := svcs.Update(ctx, s, metav1.UpdateOptions{})
			return err
		},
		nil)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("close port %s on %s: %w", pname, ep.ID(), err)
	}
	return n.removeEntry(ctx, ep, x)
}

// removeEntry removes the exposure's stream entry if it still routes to the
// exposure's Service.
func (n *IngressNginxBackend) removeEntry(ctx context.Context, ep entrypoint.EntryPoint, x Exposure) error {
	ns, name, err := streamConfigMap(ep, x.Key.Protocol)
	if err != nil {
		return nil // nothing was ever written
	}
	key := fmt.Sprint(x.Key.Port)
	cms := n.Core.CoreV1().ConfigMaps(ns)
	err = casUpdate(ctx, "configmap/"+ns+"/"+name, n.Backoff,
		func(ctx context.Context) (*corev1.ConfigMap, error) { return cms.Get(ctx, name, metav1.GetOptions{}) },
		func(cm *corev1.ConfigMap) (bool, error) {
			cur, ok := cm.Data[key]
			if !ok || x.Service != "" && serviceOf(cur) != x.Namespace+"/"+x.Service {
				return false, nil
			}
			delete(cm.Data, key)
			return true, nil
		},
		func(ctx context.Context, cm *corev1.ConfigMap) error {
			_, err := cms.Update(ctx, cm, metav1.UpdateOptions{})
			return err
		},
		nil)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("remove entry %s from %s/%s: %w", key, ns, name, err)
	}
	return nil
}

// serviceOf is the namespace/name part of a stream entry.
func serviceOf(entry string) string {
	s, _, _ := strings.Cut(entry, ":")
	return s
}

// Status reads the entry's place in the stream ConfigMap, and the
// controller Service's status: exposed once the Service has the port and
// the entry point's address. ingress-nginx reports nothing per stream port,
// so this is as far as its data plane can say.
func (n *IngressNginxBackend) Status(ctx context.Context, ep entrypoint.EntryPoint, x Exposure, _ int64) (Status, error) {
	ns, name, err := streamConfigMap(ep, x.Key.Protocol)
	if err != nil {
		return failed("ConfigMap", "NoStreamConfigMap", err.Error()), nil
	}
	cm, err := n.Core.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return failed("ConfigMap "+ns+"/"+name, "NotFound", "the stream ConfigMap is gone"), nil
	case err != nil:
		return Status{}, fmt.Errorf("read %s/%s: %w", ns, name, err)
	}
	key := fmt.Sprint(x.Key.Port)
	if cur, ok := cm.Data[key]; !ok || x.Service != "" && serviceOf(cur) != x.Namespace+"/"+x.Service {
		return failed("ConfigMap "+ns+"/"+name, "EntryMissing", "the stream entry for port "+key+" is gone or routes elsewhere"), nil
	}
	pname := portName(x.Key)
	s, err := n.Core.CoreV1().Services(ep.Namespace).Get(ctx, ep.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return failed("Service "+ep.ID(), "NotFound", "the controller's Service is gone"), nil
	case err != nil:
		return Status{}, fmt.Errorf("read entry point %s: %w", ep.ID(), err)
	}
	if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == pname }) {
		return failed("Service "+ep.ID()+" port "+pname, "NotFound", "the port is not on the controller's Service"), nil
	}
	return loadBalancerStatus(s, ep.Address, int32(x.Key.Port), corev1.Protocol(x.Key.Protocol), true), nil
}
