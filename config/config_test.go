// Package config_test checks berth's deployment YAML against Knative's own
// validation and a real API server, and keeps `make run`'s event routing equal
// to the Triggers here.
package config_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"knative.dev/pkg/apis"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/berth-dev/berth/pkg/testing/controlplane"
	"github.com/berth-dev/berth/pkg/testing/localrun"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) { os.Exit(controlplane.RunTests(m, &cp)) }

// objects reads every document of every config/*.yaml.
func objects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	files, _ := filepath.Glob("*.yaml")
	var out []*unstructured.Unstructured
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, decode(t, f, raw)...)
	}
	if len(out) < 20 {
		t.Fatalf("read %d objects from config/, want them all", len(out))
	}
	return out
}

// decode reads a multi-document YAML stream.
func decode(t *testing.T, name string, raw []byte) []*unstructured.Unstructured {
	t.Helper()
	var out []*unstructured.Unstructured
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(raw), 4096)
	for {
		var o unstructured.Unstructured
		if err := dec.Decode(&o.Object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(o.Object) > 0 {
			out = append(out, &o)
		}
	}
	return out
}

func TestKnativeServicesValidate(t *testing.T) {
	n := 0
	for _, o := range objects(t) {
		if o.GetKind() != "Service" || o.GetAPIVersion() != "serving.knative.dev/v1" {
			continue
		}
		n++
		var ksvc servingv1.Service
		if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, &ksvc, true); err != nil {
			t.Fatalf("%s: %v", o.GetName(), err)
		}
		ctx := apis.WithinCreate(context.Background())
		ksvc.SetDefaults(ctx)
		if err := ksvc.Validate(ctx); err != nil {
			t.Errorf("Knative rejects Service %s: %v", ksvc.Name, err)
		}
		spec := ksvc.Spec.Template.Spec
		if ksvc.Labels["networking.knative.dev/visibility"] != "cluster-local" || ksvc.Spec.Template.Annotations["autoscaling.knative.dev/min-scale"] != "0" ||
			spec.ServiceAccountName != ksvc.Name || spec.ContainerConcurrency == nil || spec.Containers[0].Resources.Limits.Memory().IsZero() ||
			spec.Containers[0].SecurityContext == nil || !*spec.Containers[0].SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("Service %s: want cluster-local, min-scale 0, its own ServiceAccount, containerConcurrency, limits and a restricted securityContext", ksvc.Name)
		}
	}
	if n != 3 {
		t.Errorf("%d Knative Services, want 3", n)
	}
}

// TestServerSideDryRun applies every object to the API server (with the
// Knative CRDs) as a server-side dry run: schemas, types and references.
func TestServerSideDryRun(t *testing.T) {
	cp.Require(t)
	dryRunApply(t, objects(t))
}

func dryRunApply(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := context.Background()
	for _, ns := range []string{"berth", "berth-ingress", "berth-apps"} {
		if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	dc := discovery.NewDiscoveryClientForConfigOrDie(cp.Config)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn := dynamic.NewForConfigOrDie(cp.Config)
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s %s: %v", gvk, o.GetName(), err)
			continue
		}
		data, _ := o.MarshalJSON()
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		_, err = ri.Patch(ctx, o.GetName(), types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: "berth-test", DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Errorf("server-side dry run of %s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
		}
	}
}

// TestTriggersMatchLocalRouting keeps make run's broker and config/'s
// Triggers the same wiring.
func TestTriggersMatchLocalRouting(t *testing.T) {
	var fromConfig []localrun.Trigger
	for _, o := range objects(t) {
		if o.GetKind() != "Trigger" {
			continue
		}
		attrs, _, _ := unstructured.NestedStringMap(o.Object, "spec", "filter", "attributes")
		sub, _, _ := unstructured.NestedString(o.Object, "spec", "subscriber", "ref", "name")
		tr := localrun.Trigger{Type: attrs["type"], Subscriber: sub}
		for k, v := range attrs {
			if k != "type" {
				tr.Extension, tr.Value = k, v
			}
		}
		fromConfig = append(fromConfig, tr)
	}
	key := func(t localrun.Trigger) string {
		return t.Type + "|" + t.Extension + "=" + t.Value + "|" + t.Subscriber
	}
	a := make([]string, 0, len(fromConfig))
	for _, tr := range fromConfig {
		a = append(a, key(tr))
	}
	b := make([]string, 0, len(localrun.Triggers))
	for _, tr := range localrun.Triggers {
		b = append(b, key(tr))
	}
	slices.Sort(a)
	slices.Sort(b)
	if !slices.Equal(a, b) {
		t.Errorf("config/ Triggers\n%v\nmake run routes\n%v", a, b)
	}
}
