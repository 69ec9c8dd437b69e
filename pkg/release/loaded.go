package release

import (
	"maps"
	"slices"

	"helm.sh/helm/v3/pkg/chart"
)

// chartWeight is what the loaded-chart cache weighs a chart at: its files
// (a loaded ingress-nginx 4.11 held 1.7 times its files' bytes in heap,
// echo-gateway 1.4; twice that), and its parsed values, its subcharts' too,
// weighed as parsed. Values are weighed apart from the files because YAML's
// aliases let a small values.yaml parse into a large tree: each alias is a
// copy of its own once parsed.
func chartWeight(c *chart.Chart) int64 {
	n := valuesWeight(c.Values)
	for _, f := range c.Raw {
		n += 2 * int64(len(f.Data))
	}
	for _, d := range c.Dependencies() {
		n += chartWeight(d)
	}
	return n
}

// valuesWeight is about what parsed values take in heap: each string's
// bytes, and a word or so per value, map entry and list element.
func valuesWeight(v any) int64 {
	switch t := v.(type) {
	case map[string]any:
		n := int64(48)
		for k, x := range t {
			n += 32 + int64(len(k)) + valuesWeight(x)
		}
		return n
	case []any:
		n := int64(24)
		for _, x := range t {
			n += 16 + valuesWeight(x)
		}
		return n
	case string:
		return 16 + int64(len(t))
	}
	return 16
}

// copyChart returns a copy of c that an install may change without changing
// c. Helm changes the chart it installs: which dependencies are enabled (on
// the chart, its metadata and each dependency), the values a parent imports
// from its subcharts, an upgrade's reused values. Those are copied, the
// subcharts too, and whatever a template could reach and change (a
// maintainer's Validate); the files, which nothing writes, are shared.
func copyChart(c *chart.Chart) *chart.Chart {
	out := *c
	if c.Metadata != nil {
		md := *c.Metadata
		md.Dependencies = cloneEach(c.Metadata.Dependencies)
		for _, d := range md.Dependencies {
			if d != nil {
				d.Tags, d.ImportValues = slices.Clone(d.Tags), copyList(d.ImportValues)
			}
		}
		// A template may call a maintainer's Validate, which rewrites it.
		md.Maintainers = cloneEach(c.Metadata.Maintainers)
		md.Keywords, md.Sources = slices.Clone(c.Metadata.Keywords), slices.Clone(c.Metadata.Sources)
		md.Annotations = maps.Clone(c.Metadata.Annotations)
		out.Metadata = &md
	}
	if c.Lock != nil {
		l := *c.Lock
		l.Dependencies = cloneEach(c.Lock.Dependencies)
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

// cloneEach copies each element of s.
func cloneEach[T any](s []*T) []*T {
	if s == nil {
		return nil
	}
	out := make([]*T, len(s))
	for i, p := range s {
		if p != nil {
			c := *p
			out[i] = &c
		}
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
		return maps.Clone(t)
	}
	return x
}
