package localrun

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

// Who make run acts as.
const (
	// SystemNamespace is berth's own namespace, as config/ names it.
	SystemNamespace = "berth"
	// Audience is what callers' tokens are minted for (AUTH_AUDIENCE).
	Audience = "berth"
	// DemoTenant is the demo's ServiceAccount in AppsNamespace, bound to the
	// berth-tenant ClusterRole there.
	DemoTenant = "demo"
	// BrokerIdentity is the local broker's ServiceAccount in SystemNamespace,
	// standing for the identities Knative Eventing delivers with.
	BrokerIdentity = "local-broker"
)

// accessFiles are config/'s app namespaces (Pod Security labels), their
// deployers, the delivery Role, and the ClusterRoles tenants, viewers and
// operators are bound to.
var accessFiles = []string{"110-app-namespaces.yaml", "203-rbac-install.yaml", "204-rbac-access.yaml", "205-rbac-tenants.yaml"}

// Deployer is the ServiceAccount install runs Helm as, in each app namespace.
const Deployer = "berth-deployer"

// ApplyAccess applies config/'s access RBAC, as shipped.
func ApplyAccess(ctx context.Context, cp *controlplane.ControlPlane, root string) error {
	if err := ensureNamespace(ctx, cp.Client, SystemNamespace); err != nil {
		return err
	}
	for _, f := range accessFiles {
		raw, err := os.ReadFile(filepath.Join(root, "config", f))
		if err != nil {
			return err
		}
		if err := controlplane.Apply(ctx, cp.Config, raw, 30*time.Second); err != nil {
			return fmt.Errorf("apply %s: %w", f, err)
		}
	}
	return nil
}

func ensureNamespace(ctx context.Context, cs kubernetes.Interface, ns string) error {
	_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// ServiceAccount creates ServiceAccount ns/name if it is missing and, when role
// is set, binds that ClusterRole to it in ns.
func ServiceAccount(ctx context.Context, cs kubernetes.Interface, ns, name, role string) error {
	if err := ensureNamespace(ctx, cs, ns); err != nil {
		return err
	}
	_, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	if role == "" {
		return nil
	}
	_, err = cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name + "-" + role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// Token mints a token for ServiceAccount ns/name, for audience, valid for ttl:
// what `kubectl create token name -n ns --audience audience` does.
func Token(ctx context.Context, cs kubernetes.Interface, ns, name, audience string, ttl time.Duration) (string, error) {
	secs := int64(ttl.Seconds())
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token for %s/%s: %w", ns, name, err)
	}
	return tr.Status.Token, nil
}
