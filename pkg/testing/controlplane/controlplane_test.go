package controlplane

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingclient "knative.dev/serving/pkg/client/clientset/versioned"
)

var cp *ControlPlane

func TestMain(m *testing.M) { os.Exit(RunTests(m, &cp)) }

// TestStaleWriteConflicts proves the API server is real: a fake clientset never
// answers a stale resourceVersion with 409.
func TestStaleWriteConflicts(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	cms := cp.Client.CoreV1().ConfigMaps(ns)
	first, err := cms.Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "ledger"},
		Data:       map[string]string{"n": "0"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	second := first.DeepCopy()
	first.Data["n"] = "1"
	if _, err := cms.Update(ctx, first, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("first update: %v", err)
	}
	second.Data["n"] = "2"
	_, err = cms.Update(ctx, second, metav1.UpdateOptions{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("update with stale resourceVersion %s = %v, want 409 Conflict", second.ResourceVersion, err)
	}

	attempts := 0
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		attempts++
		cur, err := cms.Get(ctx, "ledger", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if attempts == 1 {
			cur.ResourceVersion = second.ResourceVersion // the first try is stale again
		}
		cur.Data["n"] = "2"
		_, err = cms.Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil || attempts != 2 {
		t.Fatalf("re-read and retry = %v after %d attempts, want success on the 2nd", err, attempts)
	}
	got, _ := cms.Get(ctx, "ledger", metav1.GetOptions{})
	if got.Data["n"] != "2" {
		t.Errorf("ledger n = %q, want 2", got.Data["n"])
	}
}

var (
	brokerGVR  = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "brokers"}
	triggerGVR = schema.GroupVersionResource{Group: "eventing.knative.dev", Version: "v1", Resource: "triggers"}
)

func TestKnativeObjects(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)

	serving, err := servingclient.NewForConfig(cp.Config)
	if err != nil {
		t.Fatal(err)
	}
	ksvc := &servingv1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "getport", Namespace: ns},
		Spec: servingv1.ServiceSpec{ConfigurationSpec: servingv1.ConfigurationSpec{
			Template: servingv1.RevisionTemplateSpec{Spec: servingv1.RevisionSpec{PodSpec: corev1.PodSpec{
				Containers: []corev1.Container{{Image: "example.com/getport:v1"}},
			}}},
		}},
	}
	if _, err := serving.ServingV1().Services(ns).Create(ctx, ksvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Knative Service: %v", err)
	}

	dyn := dynamic.NewForConfigOrDie(cp.Config)
	broker := obj("Broker", "default", ns, map[string]any{})
	if _, err := dyn.Resource(brokerGVR).Namespace(ns).Create(ctx, broker, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Broker: %v", err)
	}
	trigger := obj("Trigger", "port-reserved", ns, map[string]any{
		"broker": "default",
		"filter": map[string]any{"attributes": map[string]any{"type": "dev.berth.port.reserved"}},
		"subscriber": map[string]any{"ref": map[string]any{
			"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "getport",
		}},
	})
	if _, err := dyn.Resource(triggerGVR).Namespace(ns).Create(ctx, trigger, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Trigger: %v", err)
	}

	malformed := []struct {
		name string
		spec map[string]any
		want string
	}{
		{"broker not a string", map[string]any{"broker": 42}, "spec.broker"},
		{"retry not an integer", map[string]any{"broker": "default", "delivery": map[string]any{"retry": "three"}}, "spec.delivery.retry"},
		{"subscriber not an object", map[string]any{"broker": "default", "subscriber": "getport"}, "spec.subscriber"},
	}
	for _, tc := range malformed {
		t.Run(tc.name, func(t *testing.T) {
			bad := obj("Trigger", "bad", ns, tc.spec)
			_, err := dyn.Resource(triggerGVR).Namespace(ns).Create(ctx, bad, metav1.CreateOptions{})
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("create Trigger with %s = %v, want Invalid naming %s", tc.name, err, tc.want)
			}
		})
	}
	list, err := dyn.Resource(triggerGVR).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(list.Items) != 1 {
		t.Errorf("triggers after the malformed ones = %v (%v), want just the valid one", len(list.Items), err)
	}
}

func obj(kind, name, ns string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "eventing.knative.dev/v1",
		"kind":       kind,
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}
}

func TestGatewayAPICRDsServed(t *testing.T) {
	cp.Require(t)
	res, err := cp.Client.Discovery().ServerResourcesForGroupVersion("gateway.networking.k8s.io/v1")
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, r := range res.APIResources {
		served[r.Name] = true
	}
	for _, want := range []string{"gateways", "tcproutes", "udproutes", "listenersets"} {
		if !served[want] {
			t.Errorf("gateway.networking.k8s.io/v1 does not serve %s", want)
		}
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"TestX", "TestX"},
		{"TestX/sub case", "TestX_sub_case"},
		{"_a_", "a"},
		{strings.Repeat("a", 70), strings.Repeat("a", 63)},
	}
	for _, tc := range tests {
		if got := sanitize(tc.in); got != tc.want {
			t.Errorf("sanitize(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestReapOrphans: a process started from the control-plane bin folder whose
// parent is gone is killed; one whose parent lives is not.
func TestReapOrphans(t *testing.T) {
	dir := t.TempDir()
	sleep := filepath.Join(dir, "etcd")
	src, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skip("no /bin/sleep")
	}
	if err := os.WriteFile(sleep, src, 0o755); err != nil {
		t.Fatal(err)
	}
	// A child of ours: alive parent, so kept.
	kept := exec.Command(sleep, "30")
	if err := kept.Start(); err != nil {
		t.Fatal(err)
	}
	defer kept.Process.Kill()
	// An orphan: started by a shell that exits at once, so init adopts it.
	if out, err := exec.Command("sh", "-c", sleep+" 30 >/dev/null 2>&1 &").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	deadline := time.Now().Add(5 * time.Second)
	for reapOrphans(dir) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the orphan was never reaped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := kept.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("a process with a live parent was killed: %v", err)
	}
}

func TestFingerprint(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	cm, err := cp.Client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := cp.Fingerprint(t, ns)
	if again := cp.Fingerprint(t, ns); again != before || !strings.Contains(before, "configmaps/"+ns+"/x@") {
		t.Fatalf("fingerprint = %q then %q, want the ConfigMap, twice the same", before, again)
	}
	cm.Data = map[string]string{"k": "v"}
	if _, err := cp.Client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if after := cp.Fingerprint(t, ns); after == before {
		t.Error("an update left the fingerprint unchanged")
	}
}
