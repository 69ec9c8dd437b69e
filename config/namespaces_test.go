package config_test

import (
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/berth-dev/berth/pkg/release"
)

// TestDefaultNamespacesLineUp keeps install, getport and setingress agreeing
// on where a request that names no namespace acts (auth.DefaultNamespace over
// ALLOWED_NAMESPACES): a 2018 client's install, getport and setrule name
// none. Each function reads ALLOWED_NAMESPACES from the one berth-config and
// overrides nothing, and each allowed namespace is one where install's
// deployer and setingress have their RoleBindings, in config/ and in the
// chart with other app namespaces.
func TestDefaultNamespacesLineUp(t *testing.T) {
	manifest, err := release.Render("../charts/berth", "berth", "berth", map[string]any{"appNamespaces": []any{"team-a", "team-b"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, objs := range map[string][]*unstructured.Unstructured{
		"config/": objects(t), "charts/berth with appNamespaces team-a, team-b": decode(t, "chart", []byte(manifest)),
	} {
		t.Run(name, func(t *testing.T) { lineUp(t, objs) })
	}
}

func lineUp(t *testing.T, objs []*unstructured.Unstructured) {
	var allowed []string
	bound := map[string][]string{} // namespace → ServiceAccounts bound there
	for _, o := range objs {
		switch {
		case o.GetKind() == "ConfigMap" && o.GetName() == "berth-config":
			v, _, _ := unstructured.NestedString(o.Object, "data", "ALLOWED_NAMESPACES")
			allowed = strings.Split(v, ",")
		case o.GetKind() == "RoleBinding":
			subjects, _, _ := unstructured.NestedSlice(o.Object, "subjects")
			for _, s := range subjects {
				m, _ := s.(map[string]any)
				sns, _ := m["namespace"].(string)
				name, _ := m["name"].(string)
				if m["kind"] == "ServiceAccount" {
					bound[o.GetNamespace()] = append(bound[o.GetNamespace()], sns+"/"+name)
				}
			}
		case o.GetKind() == "Service" && o.GetAPIVersion() == "serving.knative.dev/v1":
			containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
			for _, c := range containers {
				m, _ := c.(map[string]any)
				from, _, _ := unstructured.NestedSlice(m, "envFrom")
				if len(from) != 1 || from[0].(map[string]any)["configMapRef"].(map[string]any)["name"] != "berth-config" {
					t.Errorf("%s: envFrom = %v, want berth-config alone", o.GetName(), from)
				}
				env, _, _ := unstructured.NestedSlice(m, "env")
				for _, e := range env {
					if n, _ := e.(map[string]any)["name"].(string); strings.Contains(n, "NAMESPACE") {
						t.Errorf("%s sets %s itself: the functions would disagree on namespaces", o.GetName(), n)
					}
				}
			}
		}
	}
	if len(allowed) == 0 || allowed[0] == "" {
		t.Fatal("berth-config has no ALLOWED_NAMESPACES")
	}
	for _, ns := range allowed {
		for _, sa := range []string{"berth/setingress", ns + "/berth-deployer"} {
			if !slices.Contains(bound[ns], sa) {
				t.Errorf("allowed namespace %s: no RoleBinding for %s (bound: %v)", ns, sa, bound[ns])
			}
		}
	}
}
