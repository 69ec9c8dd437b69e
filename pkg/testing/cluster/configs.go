package cluster

import (
	"fmt"
	"strings"
)

// The configuration files of containerd, the CNI bridge, kubelet and CoreDNS.

func (c *Cluster) containerdConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %q

[ttrpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails
  # ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
`, c.opts.ImageCache, c.path("containerd", "state"), c.socket(), c.path("containerd", "ttrpc.sock"),
		c.path("containerd", "opt"), c.opts.SandboxImage, c.path("cni", "net.d"))
	for _, r := range c.opts.InsecureRegistries {
		fmt.Fprintf(&b, `  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.%q]
    endpoint = [%q]
`, r, "http://"+r)
	}
	return b.String()
}

func (c *Cluster) cniConfig() string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "berth-e2e",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}}
  ]
}
`, bridgeName, PodCIDR, c.path("cni", "ipam"))
}

// PodLogs is where kubelet writes containers' logs:
// <namespace>_<pod>_<uid>/<container>/<n>.log.
func (c *Cluster) PodLogs() string { return c.path("kubelet", "pods-logs") }

func (c *Cluster) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: %[1]s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %[2]s}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# This machine has cgroup v1, which kubelet refuses unless told.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[3]s
podLogsDir: %[4]s
resolvConf: %[5]s
clusterDNS: [%[1]s]
clusterDomain: cluster.local
registerNode: true
serializeImagePulls: false
maxPods: 250
imageMinimumGCAge: 24h
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "1%%"
  imagefs.available: "1%%"
`, c.NodeIP, c.pki("ca.crt"), c.socket(), c.PodLogs(), c.path("kubelet", "resolv.conf"))
}

// corefile serves cluster.local from the API server, on the node's address,
// which kubelet hands to pods as their DNS server.
func (c *Cluster) corefile() string {
	return fmt.Sprintf(`.:53 {
    bind %s
    errors
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s berth-e2e
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 5
}
`, c.NodeIP, c.kubeconfig("coredns"))
}
