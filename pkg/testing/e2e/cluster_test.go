//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestSharedIPTraffic checks the cluster's own path before berth uses it: two
// LoadBalancer Services that MetalLB puts on one address, and kube-proxy
// carrying TCP and UDP from the node to a pod behind each.
func TestSharedIPTraffic(t *testing.T) {
	ctx := context.Background()
	cs := env.cluster.Client
	ns := "e2e-smoke"
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "echo"}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "echo"}, Data: map[string]string{"settings.json": `{"greeting":"hello from smoke"}`}}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "echo", Image: env.echo,
						Args:         []string{"--settings=/etc/gateway/settings.json"},
						VolumeMounts: []corev1.VolumeMount{{Name: "s", MountPath: "/etc/gateway"}}}},
					Volumes: []corev1.Volume{{Name: "s", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "echo"}}}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for i, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
		target := 7000 + i
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "echo-" + strings.ToLower(string(proto)), Annotations: map[string]string{"metallb.io/allow-shared-ip": "smoke"}},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: labels,
				Ports: []corev1.ServicePort{{Name: "p", Protocol: proto, Port: 9000, TargetPort: intstr.FromInt(target)}}},
		}
		if _, err := cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitDeployments(ctx, cs, ns, 3*time.Minute); err != nil {
		t.Fatalf("%v\n%s", err, podProblems(ctx, cs, ns))
	}
	tcpIP, err := lbAddress(ctx, cs, ns, "echo-tcp")
	if err != nil {
		t.Fatal(err)
	}
	udpIP, err := lbAddress(ctx, cs, ns, "echo-udp")
	if err != nil {
		t.Fatal(err)
	}
	if tcpIP != udpIP {
		t.Fatalf("MetalLB gave %s and %s, want one shared address", tcpIP, udpIP)
	}
	addr := net.JoinHostPort(tcpIP, "9000")
	var greeting, answer string
	if err := eventually(ctx, time.Minute, func() (err error) { greeting, err = tcpGreeting(addr); return err }); err != nil {
		t.Fatalf("TCP %s: %v", addr, err)
	}
	if err := eventually(ctx, time.Minute, func() (err error) { answer, err = udpExchange(addr); return err }); err != nil {
		t.Fatalf("UDP %s: %v", addr, err)
	}
	if !strings.Contains(greeting, "hello from smoke") || !strings.Contains(answer, "hello from smoke") {
		t.Fatalf("greeting %q, UDP answer %q", greeting, answer)
	}
	reportf("smoke: MetalLB shared %s between a TCP and a UDP Service; kube-proxy carried both to the pod (%q)", tcpIP, fmt.Sprint(answer))
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}
