package release

import (
	"context"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sync/errgroup"
	helmrelease "helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	v1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
)

// records is a namespace's release storage, with a way to read each
// release's latest record without decoding its history: Helm's List decodes
// every record of every release (each holds the whole chart), 38 MB and 105
// ms for 100 small releases of 5 revisions each.
type records struct {
	driver.Driver
	// labels lists the records' metadata alone.
	labels metadata.ResourceInterface
	// narrowed lists and decodes, as Helm does (a record it cannot decode is
	// skipped), the records a further label selector picks.
	narrowed func(selector string) driver.Driver
}

// newRecords wraps storage d of namespace ns, kept as kind says ("secret"
// or "configmap", as Helm names its drivers), read as rc reads it; nil for
// another driver.
func newRecords(d driver.Driver, kind, ns string, rc *rest.Config) (*records, error) {
	var gvr schema.GroupVersionResource
	switch kind {
	case "secret", "secrets", "":
		gvr = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}
	case "configmap", "configmaps":
		gvr = schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}
	default:
		return nil, nil
	}
	md, err := metadata.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	core, err := v1.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	r := &records{Driver: d, labels: md.Resource(gvr).Namespace(ns)}
	if gvr.Resource == "secrets" {
		r.narrowed = func(sel string) driver.Driver { return driver.NewSecrets(narrowedSecrets{core.Secrets(ns), sel}) }
	} else {
		r.narrowed = func(sel string) driver.Driver {
			return driver.NewConfigMaps(narrowedConfigMaps{core.ConfigMaps(ns), sel})
		}
	}
	return r, nil
}

// missingAtOnce is how many releases whose latest record is not among those
// not superseded are read by name; past it, every record is read, as Helm's
// List reads them. Honest releases seldom end superseded; records that only
// look like Helm's (labels, no record) would.
const missingAtOnce = 100

// latest returns each release's latest record it can decode. It lists the
// records' labels beside the records not superseded (by their status label):
// most releases' latest records. A release whose labels name a later
// revision than was decoded (its latest is superseded, as Helm leaves some,
// or was written meanwhile) is read again by name, with its history; the
// decoded revisions decide, as in Helm's List, not the labels.
func (r *records) latest(ctx context.Context) ([]*helmrelease.Release, error) {
	var (
		labels *metav1.PartialObjectMetadataList
		some   []*helmrelease.Release
	)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		labels, err = r.labels.List(gctx, metav1.ListOptions{LabelSelector: "owner=helm"})
		return err
	})
	g.Go(func() (err error) {
		some, err = r.narrowed("status!=superseded").List(everyRelease)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	best := map[string]*helmrelease.Release{}
	keep := func(rels []*helmrelease.Release) {
		for _, rel := range rels {
			if b, ok := best[rel.Name]; !ok || rel.Version > b.Version {
				best[rel.Name] = rel
			}
		}
	}
	keep(some)
	seen := map[string]bool{}
	var missing []string
	for _, m := range labels.Items {
		name := m.Labels["name"]
		v, err := strconv.Atoi(m.Labels["version"])
		if err != nil || name == "" || seen[name] {
			continue
		}
		if b, ok := best[name]; !ok || b.Version < v {
			seen[name] = true
			missing = append(missing, name)
		}
	}
	switch {
	case len(missing) == 0:
	case len(missing) > missingAtOnce:
		all, err := r.Driver.List(everyRelease)
		if err != nil {
			return nil, err
		}
		keep(all)
	default:
		for chunk := range slices.Chunk(missing, 25) {
			rels, err := r.narrowed("name in (" + strings.Join(chunk, ",") + ")").List(everyRelease)
			if err != nil {
				return nil, err
			}
			keep(rels)
		}
	}
	out := make([]*helmrelease.Release, 0, len(best))
	for _, rel := range best {
		out = append(out, rel)
	}
	return out, nil
}

func everyRelease(*helmrelease.Release) bool { return true }

// narrowed adds a label selector to a listing of release records.
func narrowed(o metav1.ListOptions, sel string) metav1.ListOptions {
	if o.LabelSelector != "" {
		o.LabelSelector += ","
	}
	o.LabelSelector += sel
	return o
}

type narrowedSecrets struct {
	v1.SecretInterface
	sel string
}

func (n narrowedSecrets) List(ctx context.Context, o metav1.ListOptions) (*corev1.SecretList, error) {
	return n.SecretInterface.List(ctx, narrowed(o, n.sel))
}

type narrowedConfigMaps struct {
	v1.ConfigMapInterface
	sel string
}

func (n narrowedConfigMaps) List(ctx context.Context, o metav1.ListOptions) (*corev1.ConfigMapList, error) {
	return n.ConfigMapInterface.List(ctx, narrowed(o, n.sel))
}
