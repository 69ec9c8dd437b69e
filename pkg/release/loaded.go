package release

import (
	"slices"

	"helm.sh/helm/v3/pkg/chart"
)

// loadedHeapFactor is what the loaded-chart cache weighs a chart at, per
// byte of its files decompressed: parsed values and the chart's structure
// come on top of the files themselves: a loaded ingress-nginx 4.11 held 1.7
// times its files' bytes in heap, echo-gateway 1.4; about twice that, to be
// on the safe side.
const loadedHeapFactor = 4

// chartBytes is what a chart's files weigh decompressed, its subcharts' too.
func chartBytes(c *chart.Chart) int64 {
	var n int64
	for _, f := range c.Raw {
		n += int64(len(f.Data))
	}
	for _, d := range c.Dependencies() {
		n += chartBytes(d)
	}
	return n
}

// copyChart returns a copy of c that an install may change without changing
// c. Helm changes the chart it installs: which dependencies are enabled (on
// the chart, its metadata and each dependency), the values a parent imports
// from its subcharts, an upgrade's reused values. Those are copied, the
// subcharts too; the files, which nothing writes, are shared.
func copyChart(c *chart.Chart) *chart.Chart {
	out := *c
	if c.Metadata != nil {
		md := *c.Metadata
		md.Dependencies = make([]*chart.Dependency, len(c.Metadata.Dependencies))
		for i, d := range c.Metadata.Dependencies {
			dc := *d
			dc.Tags = slices.Clone(d.Tags)
			dc.ImportValues = copyList(d.ImportValues)
			md.Dependencies[i] = &dc
		}
		if c.Metadata.Dependencies == nil {
			md.Dependencies = nil
		}
		md.Maintainers = slices.Clone(c.Metadata.Maintainers)
		md.Keywords, md.Sources = slices.Clone(c.Metadata.Keywords), slices.Clone(c.Metadata.Sources)
		md.Annotations = cloneMap(c.Metadata.Annotations)
		out.Metadata = &md
	}
	if c.Lock != nil {
		l := *c.Lock
		l.Dependencies = slices.Clone(c.Lock.Dependencies)
		out.Lock = &l
	}
	out.Values = copyValues(c.Values)
	out.Raw, out.Templates, out.Files = slices.Clone(c.Raw), slices.Clone(c.Templates), slices.Clone(c.Files)
	deps := make([]*chart.Chart, 0, len(c.Dependencies()))
	for _, d := range c.Dependencies() {
		deps = append(deps, copyChart(d))
	}
	out.SetDependencies(deps...)
	return &out
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// copyValues copies values as YAML or JSON decode them: maps and lists
// copied all the way down, the scalars in them shared.
func copyValues(v map[string]any) map[string]any {
	if v == nil {
		return nil
	}
	out := make(map[string]any, len(v))
	for k, x := range v {
		out[k] = copyValue(x)
	}
	return out
}

func copyList(l []any) []any {
	if l == nil {
		return nil
	}
	out := make([]any, len(l))
	for i, x := range l {
		out[i] = copyValue(x)
	}
	return out
}

func copyValue(x any) any {
	switch t := x.(type) {
	case map[string]any:
		return copyValues(t)
	case []any:
		return copyList(t)
	case map[string]string:
		return cloneMap(t)
	}
	return x
}
