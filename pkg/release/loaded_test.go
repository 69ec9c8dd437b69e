package release

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/testing/chartrepo"
)

// parentChart writes a chart with a subchart that a value turns off and
// whose values the parent imports: what Helm changes on the chart it
// installs.
func parentChart(t *testing.T) chartrepo.Chart {
	t.Helper()
	return packageChart(t, map[string]string{
		"Chart.yaml": `apiVersion: v2
name: parent
version: 0.1.0
dependencies:
- name: sub
  version: 0.1.0
  condition: sub.enabled
  import-values: [data]
`,
		"values.yaml":                  "sub:\n  enabled: true\n",
		"templates/cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-parent\ndata:\n  imported: {{ .Values.greeting | default \"none\" | quote }}\n",
		"charts/sub/Chart.yaml":        "apiVersion: v2\nname: sub\nversion: 0.1.0\n",
		"charts/sub/values.yaml":       "exports:\n  data:\n    greeting: hello\n",
		"charts/sub/templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-sub\n",
	})
}

// packageChart writes files (by path in the chart) and packages them.
func packageChart(t testing.TB, files map[string]string) chartrepo.Chart {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c, err := chartrepo.Package(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A chart is loaded from its archive once, and every install gets a copy
// of its own: an install that turns a subchart off, or imports its values,
// changes nothing another install of the same chart sees.
func TestLoadedChartCopies(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	pc := parentChart(t)
	if err := charts.Add(pc); err != nil {
		t.Fatal(err)
	}
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	ref := ChartRef{Name: "berth/parent"}
	install := func(name string, sub bool) {
		req := Request{Chart: ref, ReleaseName: name, Namespace: ns}
		if !sub {
			req.ValuesObject = map[string]any{"sub": map[string]any{"enabled": false}}
		}
		if _, _, err := in.Install(ctx, req); err != nil {
			t.Errorf("Install %s: %v", name, err)
		}
	}
	check := func(name string, sub bool) {
		_, err := cp.Client.CoreV1().ConfigMaps(ns).Get(ctx, name+"-sub", metav1.GetOptions{})
		if sub && err != nil || !sub && !apierrors.IsNotFound(err) {
			t.Errorf("%s (subchart on: %v): its subchart's ConfigMap: %v", name, sub, err)
		}
		if !sub {
			return
		}
		cm, err := cp.Client.CoreV1().ConfigMaps(ns).Get(ctx, name+"-parent", metav1.GetOptions{})
		if err != nil || cm.Data["imported"] != "hello" {
			t.Errorf("%s: the parent's ConfigMap = %v, %v; want the value imported from the subchart", name, cm.Data, err)
		}
	}
	// One after the other first: the subchart turned off, then on.
	install("off", false)
	install("on", true)
	check("off", false)
	check("on", true)
	// Then at once (go test -race sees any write to what they share).
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() { install(fmt.Sprintf("at-once-%d", i), i%2 == 0) })
	}
	wg.Wait()
	for i := range 6 {
		check(fmt.Sprintf("at-once-%d", i), i%2 == 0)
	}
	// What the cache gives is still the chart as its archive has it.
	got, _, err := in.Fetcher.Load(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	want := load(t, pc)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("the cached chart changed:\n got %+v\nwant %+v", got.Metadata.Dependencies[0], want.Metadata.Dependencies[0])
	}
	if cached, ok := in.Fetcher.loaded.Get(digestOf(pc.Archive)); !ok || cached == got {
		t.Errorf("the chart was not cached (%v), or the cache handed out its own (%v)", ok, cached == got)
	}
}

// A chart is weighed as loaded, its values as parsed: a values.yaml of YAML
// aliases, small as a file, parses into a tree that would not fit the cache,
// and is not kept.
func TestLoadedChartWeighsItsValues(t *testing.T) {
	big := strings.Repeat("x", 64<<10)
	var values strings.Builder
	fmt.Fprintf(&values, "a: &a %q\nlist:\n", big)
	for range 300 {
		values.WriteString("- *a\n")
	}
	c := packageChart(t, map[string]string{
		"Chart.yaml":  "apiVersion: v2\nname: aliases\nversion: 0.1.0\n",
		"values.yaml": values.String(),
	})
	loaded := load(t, c)
	files, weight := filesOf(loaded), chartWeight(loaded)
	if parsed := int64(300 * len(big)); weight < parsed {
		t.Errorf("a chart of %d bytes of files whose values parse to %d bytes weighs %d", files, parsed, weight)
	}
	echo, err := chartrepo.Package(chartDir, "")
	if err != nil {
		t.Fatal(err)
	}
	e := load(t, echo)
	// echo-gateway held 1.4 times its files in heap, loaded.
	if w, f := chartWeight(e), filesOf(e); w < 2*f || w > 4*f {
		t.Errorf("echo-gateway, %d bytes of files, weighs %d: want between 2 and 4 times", f, w)
	}
}

// load loads a packaged chart as Helm does.
func load(t testing.TB, c chartrepo.Chart) *chart.Chart {
	t.Helper()
	l, err := loader.LoadArchive(bytes.NewReader(c.Archive))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// filesOf is what a chart's files weigh, its subcharts' too.
func filesOf(c *chart.Chart) int64 {
	var n int64
	for _, f := range c.Raw {
		n += int64(len(f.Data))
	}
	for _, d := range c.Dependencies() {
		n += filesOf(d)
	}
	return n
}

// A chart that brings CRDs renders with capabilities asked after Helm
// installed them, not with those the process kept from before.
func TestChartWithCRDsSeesThem(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	in := newInstaller(t, ns)
	c := packageChart(t, map[string]string{
		"Chart.yaml": "apiVersion: v2\nname: withcrd\nversion: 0.1.0\n",
		"crds/widgets.yaml": `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.crdtest.berth.dev
spec:
  group: crdtest.berth.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object}
`,
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\ndata:\n  has: {{ .Capabilities.APIVersions.Has \"crdtest.berth.dev/v1/Widget\" | quote }}\n",
	})
	if err := charts.Add(c); err != nil {
		t.Fatal(err)
	}
	// Capabilities are kept from an install before the CRD is there.
	if _, _, err := in.Install(ctx, Request{Chart: ChartRef{Name: "berth/echo-gateway"}, ReleaseName: "before", Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cp.Client.Discovery().RESTClient().Delete().AbsPath("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.crdtest.berth.dev").Do(ctx).Error()
	})
	if _, _, err := in.Install(ctx, Request{Chart: ChartRef{Name: "berth/withcrd"}, ReleaseName: "crd", Namespace: ns}); err != nil {
		t.Fatal(err)
	}
	cm, err := cp.Client.CoreV1().ConfigMaps(ns).Get(ctx, "crd", metav1.GetOptions{})
	if err != nil || cm.Data["has"] != "true" {
		t.Errorf("the chart's ConfigMap = %v, %v; want has: true (the CRD it brought among the capabilities)", cm.Data, err)
	}
}
