package config_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/berth-dev/berth/pkg/release"
)

func TestChartsLint(t *testing.T) {
	for _, dir := range []string{"../charts/berth", "../charts/echo-gateway"} {
		if findings := release.Lint(dir, nil); len(findings) > 0 {
			t.Errorf("helm lint %s:\n%s", dir, strings.Join(findings, "\n"))
		}
	}
}

func key(o *unstructured.Unstructured) string {
	return o.GetAPIVersion() + " " + o.GetKind() + " " + o.GetNamespace() + "/" + o.GetName()
}

// TestChartMatchesConfig: charts/berth with its default values renders
// config/, object for object and field for field.
func TestChartMatchesConfig(t *testing.T) {
	manifest, err := release.Render("../charts/berth", "berth", "berth", nil)
	if err != nil {
		t.Fatal(err)
	}
	rendered := map[string]*unstructured.Unstructured{}
	for _, o := range decode(t, "charts/berth", []byte(manifest)) {
		rendered[key(o)] = o
	}
	want := map[string]*unstructured.Unstructured{}
	for _, o := range objects(t) {
		want[key(o)] = o
	}
	for k, o := range want {
		r, ok := rendered[k]
		if !ok {
			t.Errorf("the chart does not render %s", k)
			continue
		}
		if !reflect.DeepEqual(o.Object, r.Object) {
			a, _ := json.MarshalIndent(o.Object, "", " ")
			b, _ := json.MarshalIndent(r.Object, "", " ")
			t.Errorf("%s differs:\nconfig/\n%s\nchart\n%s", k, a, b)
		}
	}
	for k := range rendered {
		if _, ok := want[k]; !ok {
			t.Errorf("the chart renders %s, which config/ lacks", k)
		}
	}
}

func TestChartValues(t *testing.T) {
	manifest, err := release.Render("../charts/berth", "berth", "platform", map[string]any{
		"namespace": "platform", "createNamespace": false, "createAppNamespaces": false, "ingressNamespace": "ingress-nginx",
		"appNamespaces": []any{"tenant-a", "tenant-b"},
		"images":        map[string]any{"getport": "registry.example.com/berth/getport@sha256:" + strings.Repeat("a", 64)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	var cm, getport *unstructured.Unstructured
	for _, o := range decode(t, "charts/berth", []byte(manifest)) {
		keys = append(keys, o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName())
		switch {
		case o.GetKind() == "ConfigMap":
			cm = o
		case o.GetKind() == "Service" && o.GetName() == "getport":
			getport = o
		}
	}
	for _, want := range []string{"RoleBinding tenant-a/berth-install", "RoleBinding tenant-b/berth-install",
		"RoleBinding tenant-b/berth-setingress", "Role ingress-nginx/berth-getport", "ServiceAccount platform/getport",
		"EventPolicy platform/berth-tenant-tenant-a", "EventPolicy platform/berth-tenant-tenant-b", "EventPolicy platform/berth-internal",
		"RoleBinding platform/berth-event-delivery"} {
		if !slices.Contains(keys, want) {
			t.Errorf("rendering lacks %s: %v", want, keys)
		}
	}
	if slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "Namespace ") }) {
		t.Error("createNamespace=false still renders a Namespace")
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	if data["ALLOWED_NAMESPACES"] != "tenant-a,tenant-b" || data["LOAD_BALANCER_NAMESPACE"] != "ingress-nginx" {
		t.Errorf("settings = %v", data)
	}
	containers, _, _ := unstructured.NestedSlice(getport.Object, "spec", "template", "spec", "containers")
	if img := containers[0].(map[string]any)["image"]; !strings.HasPrefix(img.(string), "registry.example.com/") {
		t.Errorf("getport image = %v", img)
	}
}
