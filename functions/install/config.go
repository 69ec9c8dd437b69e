package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/kube"
	"github.com/berth-dev/berth/pkg/release"
	"github.com/berth-dev/berth/pkg/reservation"
)

// Config is install's configuration, read from the environment.
type Config struct {
	function.Config
	kube.ClientSettings
	auth.GuardSettings
	// Settings name the entry points and their ledgers, which install reads
	// (never writes) to answer where a release is exposed.
	reservation.Settings
	// AllowedNamespaces are the namespaces releases may be installed in, comma
	// separated. The first is the default for requests that name none.
	AllowedNamespaces []string `split_words:"true" required:"true"`
	// AllowedChartSources are URL prefixes charts may come from, comma separated
	// (https://charts.example.com/, oci://registry.example.com/charts/).
	AllowedChartSources []string `split_words:"true"`
	// ChartRepositories are named repositories, "name=url" comma separated;
	// "<name>/<chart>" then resolves there. They are allowed by being named.
	ChartRepositories Repositories `split_words:"true"`
	// AllowPrivateChartSources lets chart sources resolve to loopback,
	// link-local and metadata addresses. Leave it off outside development.
	AllowPrivateChartSources bool `split_words:"true"`
	// AllowCreateNamespace lets requests ask for createNamespace; it also needs
	// RBAC to create namespaces, which config/ does not grant.
	AllowCreateNamespace bool `split_words:"true"`
	// OCIPlainHTTP talks to OCI registries without TLS.
	OCIPlainHTTP bool `envconfig:"OCI_PLAIN_HTTP"`
	// CredentialsNamespace holds the Secrets (keys username, password) that
	// requests name in credentialsSecret.
	CredentialsNamespace string `split_words:"true" default:"berth"`
	// MaxValuesBytes bounds a request's values, as JSON.
	MaxValuesBytes int `split_words:"true" default:"262144"`
	// MaxChartBytes bounds a chart archive as fetched.
	MaxChartBytes int64 `split_words:"true" default:"10485760"`
	// MaxIndexBytes bounds a repository's index.yaml as fetched, before it is
	// parsed (parsing peaks at about 35 times its size in heap; one index is
	// parsed at a time).
	MaxIndexBytes int64 `split_words:"true" default:"4194304"`
	// MaxChartDecompressedBytes bounds a chart's files, decompressed.
	MaxChartDecompressedBytes int64 `split_words:"true" default:"20971520"`
	// ChartCacheEntries and ChartCacheBytes bound the index, archive and
	// loaded-chart caches, each (a parsed index weighs 8 times its size, a
	// loaded chart twice its files plus its values as parsed).
	ChartCacheEntries int   `split_words:"true" default:"32"`
	ChartCacheBytes   int64 `split_words:"true" default:"67108864"`
	// IndexTTL is how long a repository index is reused.
	IndexTTL time.Duration `envconfig:"INDEX_TTL" default:"5m"`
	// ReleaseTimeout bounds an operation that asks for none; a release pending
	// longer is taken for stuck.
	ReleaseTimeout time.Duration `split_words:"true" default:"5m"`
	// DeployerServiceAccount is the ServiceAccount, in each release's namespace,
	// that every Helm operation runs as (by impersonation): a chart gets what
	// RBAC grants it there and nothing of install's own. Empty runs Helm as
	// install itself, which config/ does not grant: for development only.
	DeployerServiceAccount string `split_words:"true" default:"berth-deployer"`
	// HelmDriver is where Helm keeps release records: secret (as the helm CLI),
	// or configmap.
	HelmDriver string `split_words:"true" default:"secret"`
}

// Repositories are named chart repositories.
type Repositories map[string]string

// Decode implements envconfig.Decoder for "name=url,name2=url2".
func (r *Repositories) Decode(v string) error {
	out := Repositories{}
	for _, pair := range strings.Split(v, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		name, u, ok := strings.Cut(pair, "=")
		if _, err := release.ParseSource(u); !ok || len(validation.IsDNS1123Label(name)) > 0 || err != nil {
			return fmt.Errorf("want name=https://... or name=oci://..., got %q", pair)
		}
		out[name] = u
	}
	*r = out
	return nil
}

// Validate reports values that parse but cannot work.
func (c Config) Validate() error {
	errs := []error{c.Config.Validate(), c.ClientSettings.Validate(), c.GuardSettings.Validate(), c.Settings.Validate()}
	for _, ns := range c.AllowedNamespaces {
		if len(validation.IsDNS1123Label(ns)) > 0 {
			errs = append(errs, fmt.Errorf("ALLOWED_NAMESPACES: %q is not a namespace name", ns))
		}
	}
	if len(c.AllowedNamespaces) == 0 {
		errs = append(errs, errors.New("ALLOWED_NAMESPACES must name at least one namespace"))
	}
	for _, s := range c.AllowedChartSources {
		if _, err := release.ParseSource(s); err != nil {
			errs = append(errs, fmt.Errorf("ALLOWED_CHART_SOURCES: %q must be a URL with scheme (https, http or oci) and host, without credentials", s))
		}
	}
	if c.DeployerServiceAccount != "" && len(validation.IsDNS1123Subdomain(c.DeployerServiceAccount)) > 0 {
		errs = append(errs, fmt.Errorf("DEPLOYER_SERVICE_ACCOUNT=%q is not a ServiceAccount name", c.DeployerServiceAccount))
	}
	if c.HelmDriver != "secret" && c.HelmDriver != "configmap" {
		errs = append(errs, fmt.Errorf("HELM_DRIVER=%q: want secret or configmap", c.HelmDriver))
	}
	if c.MaxValuesBytes <= 0 || c.MaxChartBytes <= 0 || c.MaxIndexBytes <= 0 || c.MaxChartDecompressedBytes <= 0 ||
		c.ChartCacheEntries <= 0 || c.ChartCacheBytes <= 0 || c.IndexTTL <= 0 || c.ReleaseTimeout <= 0 {
		errs = append(errs, errors.New("MAX_VALUES_BYTES, MAX_CHART_BYTES, MAX_INDEX_BYTES, MAX_CHART_DECOMPRESSED_BYTES, CHART_CACHE_ENTRIES, CHART_CACHE_BYTES, INDEX_TTL and RELEASE_TIMEOUT must be positive"))
	}
	return errors.Join(errs...)
}
