package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// MetalLBNamespace holds MetalLB's address pool.
const MetalLBNamespace = "metallb-system"

// startMetalLB installs MetalLB's CRDs and an address pool, and runs its
// controller (the part that assigns LoadBalancer addresses) on the node. No
// speaker runs: on one node, kube-proxy already answers for the addresses the
// controller assigns, for traffic from the node itself.
func (c *Cluster) startMetalLB(ctx context.Context) error {
	if c.opts.LoadBalancerRange == "" {
		return nil
	}
	crds, err := os.ReadFile(filepath.Join(c.opts.Assets, "src", "knative", "metallb-crds.yaml"))
	if err != nil {
		return err
	}
	pool := fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: berth-e2e
  namespace: %[1]s
spec:
  addresses: [%[2]s]
`, MetalLBNamespace, c.opts.LoadBalancerRange)
	if err := c.Apply(ctx, append(append(crds, "\n---\n"...), pool...), time.Minute); err != nil {
		return err
	}
	_, err = c.run("metallb", c.bin("metallb-controller"), []string{"KUBECONFIG=" + c.kubeconfig("metallb")},
		"--namespace="+MetalLBNamespace, "--webhook-mode=disabled", "--disable-cert-rotation",
		"--port=17472", "--log-level=warn")
	return err
}
