package config_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
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

	"github.com/berth-dev/berth/pkg/expose"
	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/portalloc"
	"github.com/berth-dev/berth/pkg/release"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/localrun"
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
			case "Namespace", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
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
	cp.Require(t)
	applyRBAC(t)
	ctx := context.Background()
	rc := as("getport")
	core := kubernetes.NewForConfigOrDie(rc)
	svc := settings.New(core, gatewayClient(t, rc))
	for _, lbip := range []string{localrun.SharedIP, localrun.NginxIP, localrun.GatewayIP} {
		r, err := svc.Reserve(ctx, reservation.Request{Owner: "rbac/getport-" + lbip, Protocol: "TCP", LBIP: lbip})
		if err != nil {
			t.Fatalf("as getport, Reserve on %s: %v", lbip, err)
		}
		if lbip == localrun.SharedIP {
			// setingress would bind it; the sweep then asks whether its Service exists.
			admin := settings.New(cp.Client, nil)
			app(t, "swept")
			if _, _, err := admin.Bind(ctx, r.EntryPoint, portalloc.Key{Protocol: r.Protocol, Port: r.Port}, r.Owner, localrun.AppsNamespace+"/swept"); err != nil {
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
	cp.Require(t)
	applyRBAC(t)
	ctx := context.Background()
	rc := as("setingress")
	core := kubernetes.NewForConfigOrDie(rc)
	gw := gatewayClient(t, rc)
	s := settings
	s.TCPServicesConfigMap, s.UDPServicesConfigMap = "tcp-services", "udp-services"
	exp := &expose.Exposer{Core: core, Ports: s.New(core, gw), Backoff: kube.ConflictBackoff, Backends: expose.NewBackends(expose.Deps{Core: core, Gateway: gw, Backoff: kube.ConflictBackoff})}
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
			return gw.Gateways(localrun.IngressNamespace).Delete(ctx, "shared", metav1.DeleteOptions{})
		},
		"grant itself more": func() error {
			_, err := core.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"}}, metav1.CreateOptions{})
			return err
		},
	})
}

func TestRBACInstall(t *testing.T) {
	cp.Require(t)
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
	in := &release.Installer{Configs: release.NewConfigs(rc, "secret", "berth-deployer", log), Policy: p, DefaultTimeout: time.Minute, Log: log,
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
	// Where a release is exposed: every entry point's ledger, read.
	ports := &expose.Exposer{Ports: settings.New(core, gatewayClient(t, rc))}
	if _, err := ports.List(ctx, reservation.Filter{}); err != nil {
		t.Errorf("as install, list the exposures: %v", err)
	}
	mustBeForbidden(t, "install", map[string]func() error{
		"reserve a port": func() error {
			_, err := settings.New(core, nil).Reserve(ctx, reservation.Request{Owner: localrun.AppsNamespace + "/x", Protocol: "TCP", LBIP: localrun.SharedIP})
			return err
		},
		"write a ConfigMap in the entry points' namespace": func() error {
			_, err := core.CoreV1().ConfigMaps(localrun.IngressNamespace).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		},
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
		"create a Deployment in an allowed namespace as itself (only its deployer may)": func() error {
			_, err := core.AppsV1().Deployments(localrun.AppsNamespace).Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
			return err
		},
		"read Helm's release records as itself": func() error {
			_, err := core.CoreV1().Secrets(localrun.AppsNamespace).List(ctx, metav1.ListOptions{})
			return err
		},
		"impersonate another ServiceAccount of an allowed namespace": func() error {
			c := rest.CopyConfig(rc)
			c.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + localrun.AppsNamespace + ":default"}
			_, err := kubernetes.NewForConfigOrDie(c).CoreV1().ConfigMaps(localrun.AppsNamespace).List(ctx, metav1.ListOptions{})
			return err
		},
		"impersonate a deployer of a namespace it is not given": func() error {
			c := rest.CopyConfig(rc)
			c.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:kube-system:berth-deployer"}
			_, err := kubernetes.NewForConfigOrDie(c).CoreV1().ConfigMaps("kube-system").List(ctx, metav1.ListOptions{})
			return err
		},
		"write RBAC in an allowed namespace": func() error {
			_, err := core.RbacV1().RoleBindings(localrun.AppsNamespace).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "x"},
				RoleRef: rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "admin"}}, metav1.CreateOptions{})
			return err
		},
	})
}

// TestRBACAccessReviews: each function may ask TokenReviews and
// SubjectAccessReviews, and gains nothing else by it.
func TestRBACAccessReviews(t *testing.T) {
	cp.Require(t)
	applyRBAC(t)
	ctx := context.Background()
	for _, fn := range []string{"install", "getport", "setingress"} {
		core := kubernetes.NewForConfigOrDie(as(fn))
		if _, err := core.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: "x", Audiences: []string{"berth"}}}, metav1.CreateOptions{}); err != nil {
			t.Errorf("as %s, create a TokenReview: %v", fn, err)
		}
		sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: "someone",
			ResourceAttributes: &authzv1.ResourceAttributes{Group: "berth.dev", Resource: "releases", Verb: "create", Namespace: localrun.AppsNamespace}}}
		if _, err := core.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{}); err != nil {
			t.Errorf("as %s, create a SubjectAccessReview: %v", fn, err)
		}
		mustBeForbidden(t, fn, map[string]func() error{
			"mint a token for a ServiceAccount": func() error {
				_, err := core.CoreV1().ServiceAccounts("berth").CreateToken(ctx, fn, &authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{Audiences: []string{"berth"}}}, metav1.CreateOptions{})
				return err
			},
			"list ServiceAccounts": func() error {
				_, err := core.CoreV1().ServiceAccounts("berth").List(ctx, metav1.ListOptions{})
				return err
			},
		})
	}
}

// TestRBACTenantRoles asks the API server what the shipped ClusterRoles grant:
// a tenant bound in its namespace, a viewer, the platform team, and Knative's
// delivery identities in berth.
func TestRBACTenantRoles(t *testing.T) {
	cp.Require(t)
	applyRBAC(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	for _, b := range []struct{ user, role string }{{"alice", "berth-tenant"}, {"vera", "berth-viewer"}} {
		_, err := cp.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: b.user},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: b.role},
			Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: b.user}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err := cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "test-operator-" + ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "berth-operator"},
		Subjects: []rbacv1.Subject{{Kind: "User", APIGroup: "rbac.authorization.k8s.io", Name: "olga"}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Client.RbacV1().ClusterRoleBindings().Delete(ctx, "test-operator-"+ns, metav1.DeleteOptions{})
	})
	tests := []struct {
		user                      string
		groups                    []string
		verb, resource, sub, inNS string
		want                      bool
	}{
		{"alice", nil, "create", "releases", "", ns, true},
		{"alice", nil, "update", "releases", "", ns, true},
		{"alice", nil, "delete", "exposures", "", ns, true},
		{"alice", nil, "list", "ports", "", ns, true},
		{"alice", nil, "create", "releases", "", localrun.AppsNamespace, false},
		{"alice", nil, "create", "ports", "sweep", "", false},
		{"alice", nil, "create", "events", "", "berth", false},
		{"vera", nil, "list", "releases", "", ns, true},
		{"vera", nil, "get", "exposures", "", ns, true},
		{"vera", nil, "create", "releases", "", ns, false},
		{"vera", nil, "delete", "ports", "", ns, false},
		{"olga", nil, "create", "ports", "sweep", "", true},
		{"olga", nil, "delete", "releases", "", localrun.AppsNamespace, true},
		{"system:serviceaccount:berth:oidc-trigger", []string{"system:serviceaccounts", "system:serviceaccounts:berth"}, "create", "events", "", "berth", true},
		{"system:serviceaccount:berth:oidc-trigger", []string{"system:serviceaccounts", "system:serviceaccounts:berth"}, "create", "releases", "", ns, false},
		{"system:serviceaccount:" + ns + ":app", []string{"system:serviceaccounts", "system:serviceaccounts:" + ns}, "create", "events", "", "berth", false},
	}
	for _, tc := range tests {
		sar, err := cp.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User: tc.user, Groups: tc.groups, ResourceAttributes: &authzv1.ResourceAttributes{
				Group: "berth.dev", Resource: tc.resource, Subresource: tc.sub, Verb: tc.verb, Namespace: tc.inNS}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if sar.Status.Allowed != tc.want {
			t.Errorf("may %s %s %s/%s in %q = %v, want %v", tc.user, tc.verb, tc.resource, tc.sub, tc.inNS, sar.Status.Allowed, tc.want)
		}
	}
}

// gatewayClient is berth's Gateway API client, as rc.
func gatewayClient(t *testing.T, rc *rest.Config) *gatewayapi.Client {
	t.Helper()
	c, err := gatewayapi.New(rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
