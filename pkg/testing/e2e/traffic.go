//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// tcpGreeting connects to addr, reads the gateway's greeting line, and checks
// that a line sent comes back.
func tcpGreeting(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	greeting, err := r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading greeting: %w", err)
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	echo, err := r.ReadString('\n')
	if err != nil || echo != "ping\n" {
		return "", fmt.Errorf("echo = %q, %v", echo, err)
	}
	return strings.TrimSpace(greeting), nil
}

// udpExchange sends one datagram to addr and returns the answer.
func udpExchange(addr string) (string, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	buf := make([]byte, 1500)
	for range 5 { // UDP may drop the first datagram while conntrack settles
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		n, err := c.Read(buf)
		if err == nil {
			return string(buf[:n]), nil
		}
	}
	return "", fmt.Errorf("no UDP answer from %s", addr)
}

// eventually retries f until it succeeds or timeout passes.
func eventually(ctx context.Context, timeout time.Duration, f func() error) error {
	var last error
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		last = f()
		return last == nil, nil
	})
	if err != nil && last != nil {
		return last
	}
	return err
}

// lbAddress waits for a LoadBalancer Service's address.
func lbAddress(ctx context.Context, cs kubernetes.Interface, ns, name string) (string, error) {
	var ip string
	err := eventually(ctx, time.Minute, func() error {
		s, err := cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("%s/%s has no address yet", ns, name)
		}
		ip = s.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	return ip, err
}

// waitDeployments waits until every Deployment in ns is available.
func waitDeployments(ctx context.Context, cs kubernetes.Interface, ns string, timeout time.Duration) error {
	return eventually(ctx, timeout, func() error {
		list, err := cs.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, d := range list.Items {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			if d.Status.AvailableReplicas < want {
				return fmt.Errorf("deployment %s/%s: %d of %d available", ns, d.Name, d.Status.AvailableReplicas, want)
			}
		}
		return nil
	})
}

// podProblems describes pods in ns that are not running, for failure messages.
func podProblems(ctx context.Context, cs kubernetes.Interface, ns string) string {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range list.Items {
		if p.Status.Phase == corev1.PodRunning {
			continue
		}
		fmt.Fprintf(&b, "%s: %s", p.Name, p.Status.Phase)
		for _, c := range p.Status.ContainerStatuses {
			if w := c.State.Waiting; w != nil {
				fmt.Fprintf(&b, " %s=%s %s", c.Name, w.Reason, w.Message)
			}
		}
		for _, c := range p.Status.Conditions {
			if c.Status != corev1.ConditionTrue && c.Message != "" {
				fmt.Fprintf(&b, " %s", c.Message)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
