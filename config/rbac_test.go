package config_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	gatewayclient "sigs.k8s.io/gateway-api/pkg/client/clientset/versioned"

	"github.com/berth-dev/berth/pkg/chartrepo"
	"github.com/berth-dev/berth/pkg/entrypoint"
	"github.com/berth-dev/berth/pkg/expose"
	"github.com/berth-dev/berth/pkg/localrun"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/release"
	"github.com/berth-dev/berth/pkg/reservation"
)

var applyOnce sync.Once

// applyRBAC creates config/'s namespace, ServiceAccounts and RBAC for real, and
// the demo entry points.
func applyRBAC(t *testing.T) {
	t.Helper()
	applyOnce.Do(func() {
		ctx := context.Background()
		if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "berth"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		if err := localrun.Seed(ctx, cp); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		dc := discovery.NewDiscoveryClientForConfigOrDie(cp.Config)
		mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
		dyn := dynamic.NewForConfigOrDie(cp.Config)
		for _, o := range objects(t) {
			switch o.GetKind() {
			case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			default:
				continue
			}
			gvk := o.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := o.MarshalJSON()
			var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
			if o.GetNamespace() != "" {
				ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
			}
			if _, err := ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "berth-test"}); err != nil {
				t.Fatalf("apply %s %s: %v", gvk.Kind, o.GetName(), err)
			}
		}
	})
}

// as returns a client configuration that impersonates a function's ServiceAccount.
func as(fn string) *rest.Config {
	c := rest.CopyConfig(cp.Config)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:berth:" + fn,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:berth", "system:authenticated"},
	}
	return c
}

// mustBeForbidden runs each call and expects 403 from RBAC.
func mustBeForbidden(t *testing.T, fn string, calls map[string]func() error) {
	t.Helper()
	for name, call := range calls {
		if err := call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s may %s (err %v), want Forbidden", fn, name, err)
		}
	}
}

func app(t *testing.T, name string) {
	t.Helper()
	_, err := cp.Client.CoreV1().Services(localrun.AppsNamespace).Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": name}, Ports: []corev1.ServicePort{
			{Name: "tcp", Port: 7000, Protocol: corev1.ProtocolTCP}, {Name: "udp", Port: 7001, Protocol: corev1.ProtocolUDP},
		}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

var settings = reservation.Settings{LoadBalancerNamespace: localrun.IngressNamespace, PortMin: 20000, PortMax: 30000, ReservationTTL: time.Minute}

func TestRBACGetport(t *testing.T) {
	applyRBAC(t)
	ctx := context.Background()
	rc := as("getport")
	core := kubernetes.NewForConfigOrDie(rc)
	svc := settings.New(core, gatewayclient.NewForConfigOrDie(rc))
	for _, lbip := range []string{localrun.SharedIP, localrun.NginxIP, localrun.GatewayIP} {
		r, err := svc.Reserve(ctx, reservation.Request{Owner: "rbac/getport-" + lbip, Protocol: "TCP", LBIP: lbip})
		if err != nil {
			t.Fatalf("as getport, Reserve on %s: %v", lbip, err)
		}
		if lbip == localrun.SharedIP {
			// setingress would bind it; the sweep then asks whether its Service exists.
			admin := settings.New(cp.Client, nil)
			app(t, "swept")
			if _, err := admin.Bind(ctx, r.EntryPoint, portalloc.Key{Protocol: r.Protocol, Port: r.Port}, r.Owner, localrun.AppsNamespace+"/swept"); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := svc.List(ctx, reservation.Filter{}); err != nil {
		t.Errorf("as getport, List: %v", err)
	}
	if _, err := svc.Sweep(ctx); err != nil {
		t.Errorf("as getport, Sweep: %v", err)
	}
	if _, err := svc.ReleaseUnbound(ctx, "rbac/getport-"+localrun.NginxIP); err != nil {
		t.Errorf("as getport, ReleaseUnbound: %v", err)
	}
	if _, err := svc.Release(ctx, "gateway.shared", portalloc.Key{Protocol: "TCP", Port: 20000}, ""); err != nil {
		t.Errorf("as getport, Release: %v", err)
	}
	mustBeForbidden(t, "getport", map[string]func() error{
		"update an entry point Service": func() error {
			s, err := cp.Client.CoreV1().Services(localrun.IngressNamespace).Get(ctx, "shared-ip", metav1.GetOptions{})
			if err != nil {
				return err
			}
			_, err = core.CoreV1().Services(localrun.IngressNamespace).Update(ctx, s, metav1.UpdateOptions{})
			return err
		},
		"read a Secret in berth": func() error {
			_, err := core.CoreV1().Secrets("berth").List(ctx, metav1.ListOptions{})
			return err
		},
		"write a ConfigMap in an app namespace": func() error {
			_, err := core.CoreV1().ConfigMaps(localrun.AppsNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		},
		"list Services cluster-wide": func() error {
			_, err := core.CoreV1().Services("").List(ctx, metav1.ListOptions{})
			return err
		},
		"delete a ConfigMap (a ledger)": func() error {
			return core.CoreV1().ConfigMaps(localrun.IngressNamespace).Delete(ctx, "tcp-services", metav1.DeleteOptions{})
		},
	})
}

func TestRBACSetingress(t *testing.T) {
	applyRBAC(t)
	ctx := context.Background()
	rc := as("setingress")
	core := kubernetes.NewForConfigOrDie(rc)
	gw := gatewayclient.NewForConfigOrDie(rc)
	s := settings
	s.TCPServicesConfigMap, s.UDPServicesConfigMap = "tcp-services", "udp-services"
	exp := &expose.Exposer{Core: core, Ports: s.New(core, gw), Backoff: expose.DefaultBackoff, Backends: map[string]expose.Backend{
		entrypoint.BackendGatewayAPI:   &expose.GatewayBackend{Client: gw, Backoff: expose.DefaultBackoff},
		entrypoint.BackendIngressNginx: &expose.IngressNginxBackend{Core: core, Backoff: expose.DefaultBackoff},
		entrypoint.BackendSharedIP:     &expose.SharedIPBackend{Core: core, Backoff: expose.DefaultBackoff},
	}}
	app(t, "exposed")
	for _, lbip := range []string{localrun.SharedIP, localrun.NginxIP, localrun.GatewayIP} {
		for _, proto := range []portalloc.Protocol{"TCP", "UDP"} {
			end, err := exp.Expose(ctx, expose.Request{Target: expose.Target{Namespace: localrun.AppsNamespace, Name: "exposed",
				Port: intstr.FromString(map[portalloc.Protocol]string{"TCP": "tcp", "UDP": "udp"}[proto]), Protocol: proto},
				Owner: "rbac/setingress-" + lbip + string(proto), LBIP: lbip})
			if err != nil {
				t.Fatalf("as setingress, Expose %s on %s: %v", proto, lbip, err)
			}
			if err := exp.Unexpose(ctx, end.EntryPoint, portalloc.Key{Protocol: end.Protocol, Port: end.Port}, ""); err != nil {
				t.Errorf("as setingress, Unexpose %s: %v", end, err)
			}
		}
	}
	mustBeForbidden(t, "setingress", map[string]func() error{
		"read Secrets": func() error {
			_, err := core.CoreV1().Secrets(localrun.AppsNamespace).List(ctx, metav1.ListOptions{})
			return err
		},
		"create a Deployment": func() error {
			_, err := core.AppsV1().Deployments(localrun.AppsNamespace).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		},
		"touch Services outside its namespaces": func() error {
			_, err := core.CoreV1().Services("kube-system").Get(ctx, "x", metav1.GetOptions{})
			return err
		},
		"delete the entry point's Gateway": func() error {
			return gw.GatewayV1().Gateways(localrun.IngressNamespace).Delete(ctx, "shared", metav1.DeleteOptions{})
		},
		"grant itself more": func() error {
			_, err := core.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"}}, metav1.CreateOptions{})
			return err
		},
	})
}

func TestRBACInstall(t *testing.T) {
	applyRBAC(t)
	ctx := context.Background()
	c, err := chartrepo.Package("../charts/echo-gateway", "")
	if err != nil {
		t.Fatal(err)
	}
	charts, err := chartrepo.Start(c)
	if err != nil {
		t.Fatal(err)
	}
	defer charts.Close()
	rc := as("install")
	core := kubernetes.NewForConfigOrDie(rc)
	log := slog.New(slog.DiscardHandler)
	p := release.Policy{Namespaces: []string{localrun.AppsNamespace}, Sources: []string{charts.RepoURL}, AllowPrivateAddresses: true, MaxValuesBytes: 1 << 16}
	in := &release.Installer{Configs: release.NewConfigs(rc, "secret", log), Policy: p, DefaultTimeout: time.Minute, Log: log,
		Fetcher: release.NewFetcher(release.FetcherOptions{Policy: p, MaxChartBytes: 1 << 20, CacheEntries: 4, IndexTTL: time.Minute})}
	req := release.Request{Chart: release.ChartRef{Name: "x/echo-gateway", Repo: charts.RepoURL}, ReleaseName: "rbac-gw", Namespace: localrun.AppsNamespace}
	if _, _, err := in.Install(ctx, req); err != nil {
		t.Fatalf("as install, Install: %v", err)
	}
	req.Values = map[string]any{"replicas": 2}
	if _, err := in.Upgrade(ctx, req); err != nil {
		t.Errorf("as install, Upgrade: %v", err)
	}
	if _, err := in.Rollback(ctx, localrun.AppsNamespace, "rbac-gw", 1, 0); err != nil {
		t.Errorf("as install, Rollback: %v", err)
	}
	if _, err := in.Status(ctx, localrun.AppsNamespace, "rbac-gw"); err != nil {
		t.Errorf("as install, Status: %v", err)
	}
	if _, err := in.List(ctx, ""); err != nil {
		t.Errorf("as install, List: %v", err)
	}
	if _, _, err := in.Uninstall(ctx, localrun.AppsNamespace, "rbac-gw", 0); err != nil {
		t.Errorf("as install, Uninstall: %v", err)
	}
	if _, err := core.CoreV1().Secrets("berth").Get(ctx, "chart-credentials", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("as install, get a credentials Secret: %v, want NotFound (allowed, absent)", err)
	}
	mustBeForbidden(t, "install", map[string]func() error{
		"create a Deployment outside the allowed namespaces": func() error {
			_, err := core.AppsV1().Deployments("default").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		},
		"list the credentials Secrets": func() error {
			_, err := core.CoreV1().Secrets("berth").List(ctx, metav1.ListOptions{})
			return err
		},
		"create a namespace": func() error {
			_, err := core.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		},
		"read Secrets in kube-system": func() error {
			_, err := core.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
			return err
		},
		"write RBAC in an allowed namespace": func() error {
			_, err := core.RbacV1().RoleBindings(localrun.AppsNamespace).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "admin"}}, metav1.CreateOptions{})
			return err
		},
	})
}
