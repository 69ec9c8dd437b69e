// Package controlplane runs a real etcd and kube-apiserver on loopback, with the
// CRDs berth touches installed (Knative Serving and Eventing, Gateway API), for
// berth's integration tests and for `make run`. It is built on controller-runtime's
// envtest, pointed at binaries that `make controlplane` builds from the Go module
// proxy into a cache outside the repository.
package controlplane

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// KubernetesVersion is the version of the kube-apiserver the harness runs.
const KubernetesVersion = "v1.36.3"

// EnvAssets names the folder holding bin/ (etcd, kube-apiserver) and crds/.
const EnvAssets = "BERTH_CONTROLPLANE"

// CRDSets are the folders under crds/ that are installed, in order.
var CRDSets = []string{"knative-serving", "knative-eventing", "gateway-api"}

// ErrNoAssets means the binaries or CRDs have not been built yet.
var ErrNoAssets = errors.New("control-plane binaries not built: run `make controlplane`")

// ControlPlane is a running etcd + kube-apiserver.
type ControlPlane struct {
	env *envtest.Environment
	// Config reaches the API server as a cluster administrator.
	Config *rest.Config
	// Client is a clientset for Config.
	Client kubernetes.Interface
}

// AssetsDir returns where the binaries and CRDs are: $BERTH_CONTROLPLANE, else the
// per-user cache.
func AssetsDir() (string, error) {
	if d := os.Getenv(EnvAssets); d != "" {
		return d, nil
	}
	c, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(c, "berth", "controlplane-"+KubernetesVersion), nil
}

// Start starts a control plane and installs the CRDs. It takes about three seconds.
func Start() (*ControlPlane, error) {
	dir, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "bin")
	for _, b := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return nil, fmt.Errorf("%w (%s missing in %s)", ErrNoAssets, b, bin)
		}
	}
	if n := reapOrphans(bin); n > 0 {
		fmt.Fprintf(os.Stderr, "controlplane: killed %d orphaned etcd/kube-apiserver processes of earlier runs\n", n)
	}
	var crds []string
	for _, s := range CRDSets {
		p := filepath.Join(dir, "crds", s)
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("%w (%s CRDs missing in %s)", ErrNoAssets, s, p)
		}
		crds = append(crds, p)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    bin,
		CRDDirectoryPaths:        crds,
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	// Room for thousands of Services: tests make a LoadBalancer Service per
	// exposure. (The default /24 holds 254.)
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.0.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	// Contended tests make many requests at once; do not let client-side
	// throttling hide the server's behaviour.
	cfg.QPS, cfg.Burst = 1000, 2000
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &ControlPlane{env: env, Config: cfg, Client: cs}, nil
}

// Stop stops the API server, then etcd, and removes their data.
func (cp *ControlPlane) Stop() error { return cp.env.Stop() }

// KubeConfig returns a kubeconfig for the administrator, for processes that load
// their configuration from $KUBECONFIG.
func (cp *ControlPlane) KubeConfig() []byte { return cp.env.KubeConfig }

// Require skips t when the package runs without a control plane (-short).
func (cp *ControlPlane) Require(t TB) {
	if cp == nil {
		t.Helper()
		t.Skip("needs the real API server: not in -short (make test-unit)")
	}
}

// TB is the part of testing.TB the harness uses.
type TB interface {
	Skip(args ...any)
	Helper()
	Name() string
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Namespace creates a namespace for one test and deletes it when the test ends.
// (No namespace controller runs, so deleted namespaces stay Terminating; every
// test gets a fresh one.)
func (cp *ControlPlane) Namespace(t TB) string {
	t.Helper()
	ns, err := cp.Client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "t-", Labels: map[string]string{"berth.dev/test": sanitize(t.Name())}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create test namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = cp.Client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{})
	})
	return ns.Name
}

// sanitize makes s a valid label value.
func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	for len(b) > 0 && !isAlnum(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	for len(b) > 0 && !isAlnum(b[0]) {
		b = b[1:]
	}
	return string(b)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// M is the part of testing.M the harness uses.
type M interface{ Run() int }

// RunTests starts a control plane for a test package, stores it in *cp, runs the
// tests and stops it. TestMain calls it: os.Exit(controlplane.RunTests(m, &cp)).
// With -short (make test-unit) it starts none: *cp stays nil, and each test
// that needs one skips itself with cp.Require(t).
func RunTests(m M, cp **ControlPlane) int {
	if !flag.Parsed() {
		flag.Parse()
	}
	if testing.Short() {
		return m.Run()
	}
	c, err := Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*cp = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stop control plane:", err)
	}
	return code
}
