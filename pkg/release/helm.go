// Package release is berth's only door to Helm: every helm.sh/helm/v3 import is
// in this package, so that moving to Helm 4 is a change to one package. It
// installs, upgrades, rolls back, uninstalls, lists and shows releases through
// the Helm SDK, in-process, with charts from repositories and OCI registries.
package release

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/kube"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/kubectl/pkg/validation"
)

// Configs gives the Helm action configuration for a namespace. Tests and
// production both pass NewConfigs; the parameter keeps the storage choice with
// the caller.
type Configs func(namespace string) (*action.Configuration, error)

// NewConfigs returns per-namespace action configurations on rc, storing
// releases with driver ("secret" as Helm's CLI does). They share one cached
// discovery client and REST mapper, built on first use. With deployer set,
// every Helm operation in a namespace (install, upgrade, rollback, uninstall,
// status, dry run, lookup, release records) runs as that namespace's
// ServiceAccount of that name, by impersonation, and so within what RBAC grants
// it there; discovery stays rc's own.
func NewConfigs(rc *rest.Config, driver, deployer string, log *slog.Logger) Configs {
	shared := &sharedDiscovery{rc: rc}
	var mu sync.Mutex
	cfgs := map[string]*action.Configuration{}
	return func(ns string) (*action.Configuration, error) {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := cfgs[ns]; ok {
			return c, nil
		}
		c := new(action.Configuration)
		debug := func(format string, v ...any) { log.Debug(fmt.Sprintf(format, v...), "namespace", ns) }
		g := &getter{shared: shared, namespace: ns}
		if deployer != "" {
			g.user = serviceaccount.MakeUsername(ns, deployer)
		}
		if err := c.Init(g, ns, driver, debug); err != nil {
			return nil, fmt.Errorf("helm configuration for %s: %w", ns, err)
		}
		grc, err := g.ToRESTConfig()
		if err != nil {
			return nil, err
		}
		rec, err := newRecords(c.Releases.Driver, driver, ns, grc)
		if err != nil {
			return nil, fmt.Errorf("helm configuration for %s: %w", ns, err)
		}
		if rec != nil {
			c.Releases.Driver = rec
		}
		if kc, ok := c.KubeClient.(*kube.Client); ok {
			kc.Factory = &keptValidators{Factory: kc.Factory}
		}
		cfgs[ns] = c
		return c, nil
	}
}

// keptValidators keeps the schema validators a Helm kube client asks its
// factory for, for a while. kubectl's factory builds one per call, with a
// fresh cache of which kinds the API server validates fields for, so every
// install parsed the OpenAPI v3 document of each group-version it touched
// again: two thirds of an install's CPU. Kept per namespace's configuration,
// each is built with that namespace's clients and parses each group-version
// once; it is built again after validatorTTL, so that a failure it cached
// (it caches them forever) or a CRD changed since does not stay.
type keptValidators struct {
	kube.Factory
	mu   sync.Mutex
	kept map[string]keptValidator
}

type keptValidator struct {
	v     validation.Schema
	since time.Time
}

const validatorTTL = 5 * time.Minute

func (k *keptValidators) Validator(directive string) (validation.Schema, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if kv, ok := k.kept[directive]; ok && time.Since(kv.since) < validatorTTL {
		return kv.v, nil
	}
	v, err := k.Factory.Validator(directive)
	if err != nil {
		return nil, err
	}
	if k.kept == nil {
		k.kept = map[string]keptValidator{}
	}
	v = &firstInTurn{Schema: v}
	k.kept[directive] = keptValidator{v: v, since: time.Now()}
	return v, nil
}

// firstInTurn lets one caller at a time make the first validation of each
// kind. The validator caches, per kind, whether the API server validates its
// fields, but every caller that misses the cache works that out itself,
// parsing the group-version's OpenAPI v3 document: 1,000 installs arriving at
// once made hundreds of such parses, three quarters of install's CPU. Callers
// of a kind already validated once go straight through.
type firstInTurn struct {
	validation.Schema
	mu    sync.Mutex
	kinds map[schema.GroupVersionKind]*kindTurn
}

type kindTurn struct {
	sync.Mutex
	done bool
}

func (f *firstInTurn) ValidateBytes(data []byte) error {
	var tm metav1.TypeMeta
	if json.Unmarshal(data, &tm) != nil {
		return f.Schema.ValidateBytes(data) // the validator reports it
	}
	gvk := tm.GroupVersionKind()
	f.mu.Lock()
	if f.kinds == nil {
		f.kinds = map[schema.GroupVersionKind]*kindTurn{}
	}
	t, ok := f.kinds[gvk]
	if !ok {
		t = &kindTurn{}
		f.kinds[gvk] = t
	}
	f.mu.Unlock()
	t.Lock()
	if t.done {
		t.Unlock()
		return f.Schema.ValidateBytes(data)
	}
	defer t.Unlock()
	err := f.Schema.ValidateBytes(data)
	t.done = true
	return err
}

type sharedDiscovery struct {
	rc     *rest.Config
	once   sync.Once
	dc     discovery.CachedDiscoveryInterface
	mapper meta.RESTMapper
	err    error

	capsMu sync.Mutex
	caps   *chartutil.Capabilities
	capsAt time.Time
}

// capabilitiesOf are the process's capabilities (sharedDiscovery), for an
// operation's copy of cfg that renders a chart: given them, Helm does not
// work them out, and empty the discovery cache, per operation.
func capabilitiesOf(cfg *action.Configuration) *chartutil.Capabilities {
	if g, ok := cfg.RESTClientGetter.(*getter); ok {
		return g.shared.capabilities()
	}
	return nil
}

// capabilitiesTTL is how long the cluster's capabilities (its version and
// API versions, which charts read) are reused before they are asked again.
const capabilitiesTTL = 5 * time.Minute

// capabilities are the cluster's, worked out as Helm does (its discovery
// cache invalidated, the server's version, every group-version), shared by
// every namespace: discovery is berth's own identity everywhere. Helm works
// them out once per configuration it is given and keeps them for good;
// every operation here is given a copy (forOperation), and two operations
// that begin at once wait for one answer. nil when the cluster does not
// answer: Helm then asks itself, and reports the error.
func (s *sharedDiscovery) capabilities() *chartutil.Capabilities {
	s.capsMu.Lock()
	defer s.capsMu.Unlock()
	if s.caps != nil && time.Since(s.capsAt) < capabilitiesTTL {
		return s.caps
	}
	if s.init(); s.err != nil {
		return nil
	}
	s.dc.Invalidate()
	kv, err := s.dc.ServerVersion()
	if err != nil {
		return nil
	}
	av, err := action.GetVersionSet(s.dc)
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		return nil
	}
	s.caps = &chartutil.Capabilities{
		APIVersions: av,
		KubeVersion: chartutil.KubeVersion{Version: kv.GitVersion, Major: kv.Major, Minor: kv.Minor},
		HelmVersion: chartutil.DefaultCapabilities.HelmVersion,
	}
	s.capsAt = time.Now()
	return s.caps
}

func (s *sharedDiscovery) init() {
	s.once.Do(func() {
		d, err := discovery.NewDiscoveryClientForConfig(s.rc)
		if err != nil {
			s.err = err
			return
		}
		s.dc = memory.NewMemCacheClient(d)
		s.mapper = restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(s.dc), s.dc, nil)
	})
}

// getter adapts a rest.Config to Helm's RESTClientGetter for one namespace.
type getter struct {
	shared    *sharedDiscovery
	namespace string
	// user, when set, is impersonated for everything but discovery.
	user string
}

var _ genericclioptions.RESTClientGetter = (*getter)(nil)

func (g *getter) ToRESTConfig() (*rest.Config, error) {
	c := rest.CopyConfig(g.shared.rc)
	if g.user != "" {
		// The API server adds the ServiceAccount's groups itself.
		c.Impersonate = rest.ImpersonationConfig{UserName: g.user}
	}
	return c, nil
}

func (g *getter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	g.shared.init()
	return g.shared.dc, g.shared.err
}

func (g *getter) ToRESTMapper() (meta.RESTMapper, error) {
	g.shared.init()
	return g.shared.mapper, g.shared.err
}

func (g *getter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return clientcmd.NewDefaultClientConfig(*clientcmdapi.NewConfig(), &clientcmd.ConfigOverrides{
		Context: clientcmdapi.Context{Namespace: g.namespace},
	})
}
