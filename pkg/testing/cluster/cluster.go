// Package cluster runs a whole single-node Kubernetes cluster on this machine,
// for berth's end-to-end test: etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler, containerd with runc and the CNI bridge (from Debian), kubelet,
// kube-proxy (iptables), CoreDNS, and MetalLB's controller for LoadBalancer
// addresses. Each part is a child process of the caller, built once from the Go
// module proxy by .ci/cluster.sh. Down removes every process, mount, iptables
// chain, cgroup and link the cluster made; Leftovers proves it.
//
// It needs root, cgroup v1 or v2 with the cgroupfs driver, and a non-loopback
// IPv4 address for the node.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

var (
	// apiServiceIP is the kubernetes Service's address, the first of ServiceCIDR.
	apiServiceIP = net.ParseIP("10.0.0.1")
)

const (
	// ServiceCIDR is the cluster's Service range; PodCIDR the CNI bridge's.
	ServiceCIDR = "10.0.0.0/16"
	PodCIDR     = "10.88.0.0/16"
	// NodeName is the one node's name.
	NodeName = "berth-node"

	etcdClientURL = "http://127.0.0.1:23790"
	etcdPeerURL   = "http://127.0.0.1:23800"
	apiPort       = 6443
)

// Options say where the cluster's parts and state live.
type Options struct {
	// Assets is the folder .ci/cluster.sh filled (bin/ holds the binaries).
	Assets string
	// State holds this run's files; Down removes it.
	State string
	// ImageCache is containerd's root, kept between runs so images are pulled once.
	ImageCache string
	// SandboxImage is the pod sandbox ("pause") image containerd runs.
	SandboxImage string
	// InsecureRegistries are host:port registries containerd pulls from over HTTP.
	InsecureRegistries []string
	// LoadBalancerRange is MetalLB's address pool, e.g. 198.51.100.10-198.51.100.20.
	LoadBalancerRange string
	// NodeIP is the node's address; empty picks the first global IPv4 address.
	NodeIP string
	// Logf reports progress; nil is silent.
	Logf func(format string, args ...any)
}

// Cluster is a running cluster.
type Cluster struct {
	opts       Options
	procs      []*process
	logs       string
	sysctls    map[string][]byte
	NodeIP     net.IP
	Config     *rest.Config
	Client     kubernetes.Interface
	Kubeconfig string // the admin kubeconfig's path
	// Timings holds how long each part took to become ready.
	Timings []Timing
}

// Timing is one step of Up.
type Timing struct {
	Step     string
	Duration time.Duration
}

func (o Options) logf(format string, args ...any) {
	if o.Logf != nil {
		o.Logf(format, args...)
	}
}

// Up starts the cluster and returns once its node is Ready, DNS answers and
// MetalLB's pool exists. On error, everything started is torn down again.
func Up(ctx context.Context, opts Options) (_ *Cluster, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("cluster: needs root (kubelet, containerd, iptables)")
	}
	for _, b := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "coredns", "metallb-controller"} {
		if _, err := os.Stat(filepath.Join(opts.Assets, "bin", b)); err != nil {
			return nil, fmt.Errorf("cluster: %s missing: run .ci/cluster.sh (make e2e does): %w", b, err)
		}
	}
	// A crashed run may have left its parts behind: clear them first.
	cleanHost(opts.State, opts.ImageCache)
	if err := os.RemoveAll(opts.State); err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, logs: filepath.Join(opts.State, "logs")}
	for _, d := range []string{c.logs, opts.ImageCache} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if c.NodeIP, err = nodeIP(opts.NodeIP); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w (logs in %s)", err, c.logs)
			c.Down()
		}
	}()
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"pki", c.writePKI},
		{"etcd", c.startEtcd},
		{"kube-apiserver", c.startAPIServer},
		{"controller-manager+scheduler", c.startControllers},
		{"containerd", c.startContainerd},
		{"kubelet", c.startKubelet},
		{"kube-proxy", c.startKubeProxy},
		{"coredns", c.startCoreDNS},
		{"metallb", c.startMetalLB},
	}
	for _, s := range steps {
		t0 := time.Now()
		if err := s.run(ctx); err != nil {
			return nil, fmt.Errorf("cluster: %s: %w", s.name, err)
		}
		c.Timings = append(c.Timings, Timing{s.name, time.Since(t0)})
		opts.logf("cluster: %s ready in %s", s.name, time.Since(t0).Round(time.Millisecond))
	}
	return c, nil
}

// Logs is the folder of every part's log.
func (c *Cluster) Logs() string { return c.logs }

func nodeIP(want string) (net.IP, error) {
	if want != "" {
		if ip := net.ParseIP(want); ip != nil {
			return ip, nil
		}
		return nil, fmt.Errorf("cluster: node IP %q is not an address", want)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() && !strings.HasPrefix(n.IP.String(), "10.88.") {
			return n.IP, nil
		}
	}
	return nil, errors.New("cluster: no non-loopback IPv4 address for the node (kubelet refuses loopback)")
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.opts.Assets, "bin", name) }

func (c *Cluster) path(parts ...string) string {
	return filepath.Join(append([]string{c.opts.State}, parts...)...)
}

func (c *Cluster) run(name, bin string, env []string, args ...string) (*process, error) {
	p, err := start(c.logs, name, bin, env, args...)
	if err != nil {
		return nil, err
	}
	c.procs = append(c.procs, p)
	return p, nil
}

// poll calls ready until it says true, failing early if one of procs exits.
func poll(ctx context.Context, timeout time.Duration, ready func(context.Context) (bool, error), procs ...*process) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		for _, p := range procs {
			if err := p.exited(); err != nil {
				return false, err
			}
		}
		ok, err := ready(ctx)
		if err != nil {
			last = err
		}
		return ok, nil
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w; last: %v", err, last)
	}
	return err
}

const pkiDir = "pki"

func (c *Cluster) server() string {
	return fmt.Sprintf("https://%s", net.JoinHostPort(c.NodeIP.String(), fmt.Sprint(apiPort)))
}

func (c *Cluster) writePKI(context.Context) error {
	p, err := newPKI(c.path(pkiDir), c.NodeIP)
	if err != nil {
		return err
	}
	for _, k := range []struct{ name, user, group string }{
		{"admin", "berth-e2e-admin", "system:masters"},
		{"kcm", "system:kube-controller-manager", ""},
		{"scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + NodeName, "system:nodes"},
		{"kube-proxy", "system:kube-proxy", ""},
		{"coredns", "berth-e2e-coredns", "system:masters"},
		{"metallb", "berth-e2e-metallb", "system:masters"},
	} {
		var groups []string
		if k.group != "" {
			groups = []string{k.group}
		}
		path, err := p.kubeconfig(k.name, c.server(), k.user, groups...)
		if err != nil {
			return err
		}
		if k.name == "admin" {
			c.Kubeconfig = path
		}
	}
	return nil
}

func (c *Cluster) kubeconfig(name string) string { return c.path(name + ".kubeconfig") }

func (c *Cluster) pki(name string) string { return c.path(pkiDir, name) }

func (c *Cluster) startEtcd(ctx context.Context) error {
	p, err := c.run("etcd", c.bin("etcd"), nil,
		"--data-dir="+c.path("etcd"), "--listen-client-urls="+etcdClientURL, "--advertise-client-urls="+etcdClientURL,
		"--listen-peer-urls="+etcdPeerURL, "--initial-advertise-peer-urls="+etcdPeerURL,
		"--initial-cluster=default="+etcdPeerURL, "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	return poll(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(etcdClientURL, "http://"), time.Second)
		if err != nil {
			return false, err
		}
		conn.Close()
		return true, nil
	}, p)
}

func (c *Cluster) startAPIServer(ctx context.Context) error {
	p, err := c.run("kube-apiserver", c.bin("kube-apiserver"), nil,
		"--etcd-servers="+etcdClientURL,
		"--bind-address="+c.NodeIP.String(), fmt.Sprintf("--secure-port=%d", apiPort), "--advertise-address="+c.NodeIP.String(),
		"--tls-cert-file="+c.pki("apiserver.crt"), "--tls-private-key-file="+c.pki("apiserver.key"),
		"--client-ca-file="+c.pki("ca.crt"),
		"--service-account-key-file="+c.pki("sa.pub"), "--service-account-signing-key-file="+c.pki("sa.key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--kubelet-client-certificate="+c.pki("admin.crt"), "--kubelet-client-key="+c.pki("admin.key"),
		"--service-cluster-ip-range="+ServiceCIDR,
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--profiling=false", "--v=1")
	if err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 100, 200
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		return err
	}
	return poll(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		return err == nil && string(body) == "ok", err
	}, p)
}

func (c *Cluster) startControllers(ctx context.Context) error {
	kcm, err := c.run("kube-controller-manager", c.bin("kube-controller-manager"), nil,
		"--kubeconfig="+c.kubeconfig("kcm"), "--authentication-kubeconfig="+c.kubeconfig("kcm"),
		"--authorization-kubeconfig="+c.kubeconfig("kcm"), "--bind-address=127.0.0.1", "--secure-port=10257",
		"--service-account-private-key-file="+c.pki("sa.key"), "--root-ca-file="+c.pki("ca.crt"),
		"--cluster-signing-cert-file="+c.pki("ca.crt"), "--cluster-signing-key-file="+c.pki("ca.key"),
		"--service-cluster-ip-range="+ServiceCIDR, "--use-service-account-credentials=true",
		"--leader-elect=false", "--v=1")
	if err != nil {
		return err
	}
	sched, err := c.run("kube-scheduler", c.bin("kube-scheduler"), nil,
		"--kubeconfig="+c.kubeconfig("scheduler"), "--authentication-kubeconfig="+c.kubeconfig("scheduler"),
		"--authorization-kubeconfig="+c.kubeconfig("scheduler"), "--bind-address=127.0.0.1", "--secure-port=10259",
		"--leader-elect=false", "--v=1")
	if err != nil {
		return err
	}
	// Pods are refused until the default ServiceAccount exists.
	return poll(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	}, kcm, sched)
}

func (c *Cluster) socket() string { return c.path("containerd", "containerd.sock") }

func (c *Cluster) startContainerd(ctx context.Context) error {
	if err := os.MkdirAll(c.path("cni", "net.d"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("cni", "net.d", "10-berth.conflist"), []byte(c.cniConfig()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("containerd.toml"), []byte(c.containerdConfig()), 0o644); err != nil {
		return err
	}
	p, err := c.run("containerd", "containerd", nil, "--config="+c.path("containerd.toml"))
	if err != nil {
		return err
	}
	return poll(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		return criReady(ctx, c.socket())
	}, p)
}

func (c *Cluster) startKubelet(ctx context.Context) error {
	if err := os.MkdirAll(c.path("kubelet"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("kubelet", "config.yaml"), []byte(c.kubeletConfig()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("kubelet", "resolv.conf"), []byte("nameserver "+c.NodeIP.String()+"\n"), 0o644); err != nil {
		return err
	}
	// kubelet and kube-proxy set kernel settings; remember them to put them back.
	c.sysctls = ReadSysctls()
	// Pods reach Services through the node.
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		return err
	}
	p, err := c.run("kubelet", c.bin("kubelet"), nil,
		"--config="+c.path("kubelet", "config.yaml"), "--kubeconfig="+c.kubeconfig("kubelet"),
		"--root-dir="+c.path("kubelet", "root"), "--cert-dir="+c.path("kubelet", "pki"),
		"--hostname-override="+NodeName, "--node-ip="+c.NodeIP.String(), "--v=1")
	if err != nil {
		return err
	}
	return poll(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status != corev1.ConditionTrue {
					return false, fmt.Errorf("node not ready: %s", cond.Message)
				}
				return true, nil
			}
		}
		return false, nil
	}, p)
}

func (c *Cluster) startKubeProxy(ctx context.Context) error {
	p, err := c.run("kube-proxy", c.bin("kube-proxy"), nil, c.kubeProxyArgs()...)
	if err != nil {
		return err
	}
	return poll(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		return httpOK(ctx, "http://127.0.0.1:10256/healthz")
	}, p)
}

func (c *Cluster) kubeProxyArgs(extra ...string) []string {
	return append([]string{"--kubeconfig=" + c.kubeconfig("kube-proxy"), "--proxy-mode=iptables",
		"--cluster-cidr=" + PodCIDR, "--hostname-override=" + NodeName, "--conntrack-max-per-core=0",
		"--metrics-bind-address=127.0.0.1:10249", "--healthz-bind-address=127.0.0.1:10256", "--v=1"}, extra...)
}

func (c *Cluster) startCoreDNS(ctx context.Context) error {
	if err := os.WriteFile(c.path("Corefile"), []byte(c.corefile()), 0o644); err != nil {
		return err
	}
	p, err := c.run("coredns", c.bin("coredns"), nil, "-conf", c.path("Corefile"))
	if err != nil {
		return err
	}
	r := c.Resolver()
	return poll(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		addrs, err := r.LookupHost(ctx, "kubernetes.default.svc.cluster.local")
		return err == nil && len(addrs) == 1 && addrs[0] == apiServiceIP.String(), err
	}, p)
}

// Resolver asks the cluster's DNS, as pods do: Services by their cluster.local
// names. kube-proxy carries the node's connections to their addresses.
func (c *Cluster) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, net.JoinHostPort(c.NodeIP.String(), "53"))
	}}
}

// Down stops every part and removes every trace of the cluster from the host.
// It is safe to call more than once.
func (c *Cluster) Down() {
	byName := map[string]*process{}
	for _, p := range c.procs {
		byName[p.name] = p
	}
	stop := func(names ...string) {
		for _, n := range names {
			if p := byName[n]; p != nil {
				p.stop(15 * time.Second)
				delete(byName, n)
			}
		}
	}
	stop("metallb", "coredns", "kubelet")
	if _, ok := byName["containerd"]; ok {
		// Pods go through CRI, so their networks and mounts are released too.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if err := removePods(ctx, c.socket()); err != nil {
			c.opts.logf("cluster: removing pods: %v", err)
		}
		cancel()
	}
	stop("containerd", "kube-proxy")
	if _, err := os.Stat(c.kubeconfig("kube-proxy")); err == nil {
		if p, err := start(c.logs, "kube-proxy-cleanup", c.bin("kube-proxy"), nil, c.kubeProxyArgs("--cleanup")...); err == nil {
			<-p.done
			p.log.Close()
		}
	}
	stop("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd")
	for _, p := range byName {
		p.stop(5 * time.Second)
	}
	c.procs = nil
	cleanHost(c.opts.State, c.opts.ImageCache)
	for k, v := range c.sysctls {
		_ = os.WriteFile(filepath.Join("/proc/sys", k), v, 0o644)
	}
	c.sysctls = nil
	// Keep the logs of a run for reading; the rest of the state goes.
	entries, _ := os.ReadDir(c.opts.State)
	for _, e := range entries {
		if e.Name() != "logs" {
			_ = os.RemoveAll(filepath.Join(c.opts.State, e.Name()))
		}
	}
}

// Sysctls are the kernel settings the cluster changes: ip_forward (for pods to
// reach Services), kubelet's defaults (protectKernelDefaults off) and
// kube-proxy's route_localnet. Down puts back what Up found.
var Sysctls = []string{
	"net/ipv4/ip_forward",
	"net/ipv4/conf/all/route_localnet",
	"kernel/panic",
	"kernel/panic_on_oops",
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// ReadSysctls reads the current values of Sysctls.
func ReadSysctls() map[string][]byte {
	out := map[string][]byte{}
	for _, k := range Sysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", k)); err == nil {
			out[k] = v
		}
	}
	return out
}
