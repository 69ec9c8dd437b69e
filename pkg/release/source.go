package release

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/repo"
	"oras.land/oras-go/v2/errdef"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/pkg/problem"
)

// ChartRef says where a chart comes from.
type ChartRef struct {
	// Name is "chart", "<repo>/<chart>" or "oci://host/path/chart".
	Name string
	// Repo is a repository (its base URL, or its index.yaml URL) for Name's
	// chart; the 2018 API's privateChartsRepo.
	Repo string
	// Version is an exact version or a semver constraint; "" is the latest.
	Version string
	// Credentials, when set, authenticate to the repository or registry.
	Credentials *Credentials
}

// Credentials authenticate to a chart source. They come from a Secret.
type Credentials struct {
	// Ref names where they came from (namespace/secret), for cache keys.
	Ref string
	// Source is the URL (a prefix, compared as with ALLOWED_CHART_SOURCES) the
	// credentials are for; they are sent nowhere else.
	Source   string
	Username string
	Password string
}

// credentialsKey carries a request's credentials to the redirect check.
type credentialsKey struct{}

// usableFor refuses credentials for a URL outside the source they are for.
func (c *Credentials) usableFor(raw string) error {
	if c == nil {
		return nil
	}
	u, err := ParseSource(raw)
	if err != nil {
		return err
	}
	if src, err := ParseSource(c.Source); err != nil || !Within(u, src) {
		return fmt.Errorf("%w: %s is for another source", ErrCredentialsSource, c.Ref)
	}
	return nil
}

// Source is where a loaded chart came from.
type Source struct {
	URL    string `json:"url"`
	Digest string `json:"digest,omitempty"`
}

// Fetcher loads charts from repositories and OCI registries, within a policy,
// caching repository indexes and chart archives in the instance.
type Fetcher struct {
	policy Policy
	// repos are named repositories from configuration: name → URL.
	repos         map[string]string
	plainHTTP     bool
	maxChartBytes int64
	maxIndexBytes int64
	log           *slog.Logger
	client        *http.Client
	indexes       *byteCache[*repo.IndexFile]
	archives      *byteCache[[]byte]
	// loaded are charts as loaded from their archives, by the archive's
	// digest; each install is given a copy of its own (copyChart).
	loaded *byteCache[*chart.Chart]
	// parsing lets one index be parsed at a time: parsing peaks at about 35
	// times the index's size in heap (TestHostileInputsHeap).
	parsing chan struct{}
}

// indexHeapFactor is what the index cache weighs a parsed repository index at,
// per byte of its YAML: about twice the 4.3 measured (TestHostileInputsHeap
// prints it), to be on the safe side.
const indexHeapFactor = 8

// FetcherOptions configure a Fetcher.
type FetcherOptions struct {
	Policy Policy
	// Repos are named repositories: "<name>/<chart>" resolves to Repos[name].
	Repos map[string]string
	// PlainHTTP talks to OCI registries without TLS (for registries on a
	// private network).
	PlainHTTP bool
	// MaxChartBytes bounds a chart archive as fetched.
	MaxChartBytes int64
	// MaxIndexBytes bounds a repository's index.yaml as fetched, before it is
	// parsed; MaxChartBytes when 0.
	MaxIndexBytes int64
	// MaxDecompressedBytes bounds a chart's files, decompressed; Helm's 100 MiB
	// when 0.
	MaxDecompressedBytes int64
	// CacheEntries and CacheBytes bound each cache (indexes, archives and
	// loaded charts).
	// CacheBytes is 4 × MaxChartBytes when 0.
	CacheEntries int
	CacheBytes   int64
	// IndexTTL is how long a repository index is reused.
	IndexTTL time.Duration
	// Log receives what a caller is not told (why a source did not answer);
	// slog's default logger when nil.
	Log *slog.Logger
}

// NewFetcher returns a fetcher. Nothing is fetched until a chart is asked for.
func NewFetcher(o FetcherOptions) *Fetcher {
	f := &Fetcher{policy: o.Policy, repos: o.Repos, plainHTTP: o.PlainHTTP, maxChartBytes: o.MaxChartBytes, maxIndexBytes: o.MaxIndexBytes,
		log: o.Log, parsing: make(chan struct{}, 1)}
	if f.log == nil {
		f.log = slog.Default()
	}
	if f.maxIndexBytes == 0 {
		f.maxIndexBytes = o.MaxChartBytes
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 4 * o.MaxChartBytes
	}
	if o.MaxDecompressedBytes > 0 {
		// Helm's loader reads its bound from a package variable; install is
		// the one loader in the process.
		loader.MaxDecompressedChartSize = o.MaxDecompressedBytes
		loader.MaxDecompressedFileSize = min(loader.MaxDecompressedFileSize, o.MaxDecompressedBytes)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: f.control}
	f.client = &http.Client{
		Timeout: 2 * time.Minute,
		Transport: &http.Transport{
			DialContext: dialer.DialContext, ForceAttemptHTTP2: true, MaxIdleConns: 16,
			IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second, ResponseHeaderTimeout: 30 * time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			// Every hop is a source of its own: allowed, or refused. (The
			// address it resolves to is checked when it is dialled.)
			if err := f.checkSource(req.URL.String()); err != nil {
				return err
			}
			// Credentials go to their own source only, whatever the hop.
			if creds, _ := req.Context().Value(credentialsKey{}).(*Credentials); creds.usableFor(req.URL.String()) != nil {
				req.Header.Del("Authorization")
			}
			return nil
		},
	}
	f.indexes = newByteCache[*repo.IndexFile](o.CacheEntries, o.CacheBytes, o.IndexTTL)
	f.archives = newByteCache[[]byte](o.CacheEntries, o.CacheBytes, 24*time.Hour)
	f.loaded = newByteCache[*chart.Chart](o.CacheEntries, o.CacheBytes, 24*time.Hour)
	return f
}

// control refuses connections to addresses a chart source may not use. It runs
// on the address actually dialled, after DNS, so a name cannot smuggle one in.
func (f *Fetcher) control(_, address string, _ syscall.RawConn) error {
	if f.policy.AllowPrivateAddresses {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	if forbiddenAddress(net.ParseIP(host)) {
		return fmt.Errorf("%w: it resolves to %s", ErrSourceNotAllowed, host)
	}
	return nil
}

// sourceKind fetches charts from one kind of chart source.
type sourceKind struct {
	// chartInURL: a chart is named by its own URL (oci://host/path/chart), not
	// by a repository's base URL and the chart's name in the repository.
	chartInURL bool
	// fetch returns the archive of chart name at base (name is empty when
	// chartInURL), within the limits of f.
	fetch func(f *Fetcher, ctx context.Context, base, name string, ref ChartRef) ([]byte, Source, error)
}

// sourceKinds are the kinds of chart source by URL scheme: the one place a kind
// is registered. Every source URL, allowlist entry and configured repository
// is checked against it. (Filled in init: a fetch refers back to the checks
// that read the table.)
var sourceKinds map[string]sourceKind

func init() {
	sourceKinds = map[string]sourceKind{
		"https": {fetch: (*Fetcher).fromRepo},
		"http":  {fetch: (*Fetcher).fromRepo},
		"oci":   {chartInURL: true, fetch: (*Fetcher).pullOCI},
	}
}

// kindOf returns the kind of source raw's scheme names, and raw with its
// scheme in lower case (as url.Parse and the allowlist read it).
func kindOf(raw string) (sourceKind, string, bool) {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return sourceKind{}, raw, false
	}
	scheme = strings.ToLower(scheme)
	k, ok := sourceKinds[scheme]
	return k, scheme + "://" + rest, ok
}

// resolve turns a reference into the source it names: a base URL, and the
// chart's name within it unless the kind names a chart by its URL.
func (f *Fetcher) resolve(ref ChartRef) (base, chartName string, kind sourceKind, err error) {
	if k, u, ok := kindOf(ref.Name); ok && k.chartInURL {
		if ref.Repo != "" {
			return "", "", k, fmt.Errorf("%w: a chart named by its URL (%s) takes no privateChartsRepo", ErrBadRequest, problem.Clip(ref.Name))
		}
		return u, "", k, nil
	}
	switch {
	case ref.Name == "" || strings.ContainsAny(ref.Name, " \t\n?#\\") || strings.Contains(ref.Name, ".."):
		return "", "", kind, fmt.Errorf("%w: chartName %q", ErrBadRequest, problem.Clip(ref.Name))
	case ref.Repo != "":
		base = strings.TrimSuffix(strings.TrimSuffix(ref.Repo, "index.yaml"), "/")
		chartName = ref.Name[strings.LastIndex(ref.Name, "/")+1:]
	default:
		repoName, name, ok := strings.Cut(ref.Name, "/")
		configured, known := f.repos[repoName]
		if !ok || !known || strings.Contains(name, "/") {
			return "", "", kind, fmt.Errorf("%w: chart %q names no configured repository; give privateChartsRepo or an oci:// reference", ErrBadRequest, problem.Clip(ref.Name))
		}
		base, chartName = strings.TrimSuffix(configured, "/"), name
	}
	kind, base, ok := kindOf(base)
	if !ok {
		return "", "", kind, fmt.Errorf("%w: %q is not a chart source (want %s)", ErrBadRequest, problem.Clip(base), schemes())
	}
	if kind.chartInURL {
		return base + "/" + chartName, "", kind, nil
	}
	return base, chartName, kind, nil
}

// Load fetches and loads the chart ref names, after checking its source
// against the policy. Configured repositories are allowed by being configured.
func (f *Fetcher) Load(ctx context.Context, ref ChartRef) (*chart.Chart, Source, error) {
	base, name, kind, err := f.resolve(ref)
	if err != nil {
		return nil, Source{}, err
	}
	if err := f.checkSource(base); err != nil {
		return nil, Source{}, err
	}
	data, src, err := kind.fetch(f, ctx, base, name, ref)
	if err != nil {
		return nil, Source{}, err
	}
	key := digestOf(data)
	if c, ok := f.loaded.Get(key); ok {
		return copyChart(c), src, nil
	}
	c, err := loader.LoadArchive(bytes.NewReader(data))
	if err != nil {
		return nil, Source{}, fmt.Errorf("%w: %s: %v", ErrNotInstallable, src.URL, err)
	}
	if c.Metadata.Type != "" && c.Metadata.Type != "application" {
		return nil, Source{}, fmt.Errorf("%w: %s is a %s chart", ErrNotInstallable, c.Name(), c.Metadata.Type)
	}
	// As helm install does: a chart missing a dependency it declares would
	// install partially.
	if deps := c.Metadata.Dependencies; len(deps) > 0 {
		if err := action.CheckDependencies(c, deps); err != nil {
			return nil, Source{}, fmt.Errorf("%w: %s: %v", ErrNotInstallable, c.Name(), err)
		}
	}
	// Loading an archive again for each install took ingress-nginx 4 ms,
	// most of what berth added to Helm's own install of it.
	f.loaded.Add(key, c, chartWeight(c))
	return copyChart(c), src, nil
}

// checkSource allows a source URL within a configured repository (allowed by
// being configured) or within ALLOWED_CHART_SOURCES, compared as URLs.
func (f *Fetcher) checkSource(raw string) error {
	u, err := ParseSource(raw)
	if err != nil {
		return err
	}
	for _, r := range f.repos {
		if ru, err := ParseSource(r); err == nil && Within(u, ru) {
			return nil
		}
	}
	return f.policy.allows(u)
}

// parseIndex reads a repository's index.yaml.
func parseIndex(raw []byte) (*repo.IndexFile, error) {
	idx := &repo.IndexFile{}
	if err := yaml.UnmarshalStrict(raw, idx); err != nil {
		if err := yaml.Unmarshal(raw, idx); err != nil {
			return nil, err
		}
	}
	idx.SortEntries()
	return idx, nil
}

func cacheKey(u string, creds *Credentials) string {
	if creds == nil {
		return u
	}
	return u + "\x00" + creds.Ref
}

// fromRepo reads the repository's index (cached), finds the version and
// fetches its archive (cached by URL and digest), verifying the digest.
func (f *Fetcher) fromRepo(ctx context.Context, base, name string, ref ChartRef) ([]byte, Source, error) {
	indexURL := base + "/index.yaml"
	idx, ok := f.indexes.Get(cacheKey(indexURL, ref.Credentials))
	if !ok {
		raw, err := f.getBounded(ctx, indexURL, ref.Credentials, f.maxIndexBytes)
		if err != nil {
			return nil, Source{}, err
		}
		select {
		case f.parsing <- struct{}{}:
		case <-ctx.Done():
			return nil, Source{}, fmt.Errorf("%w: waiting to parse %s: %v", ErrSourceUnavailable, indexURL, ctx.Err())
		}
		idx, err = parseIndex(raw)
		<-f.parsing
		if err != nil {
			return nil, Source{}, fmt.Errorf("%w: %s is not a repository index", ErrSourceUnavailable, indexURL)
		}
		f.indexes.Add(cacheKey(indexURL, ref.Credentials), idx, int64(len(raw))*indexHeapFactor)
	}
	cv, err := idx.Get(name, ref.Version)
	if err != nil || len(cv.URLs) == 0 {
		return nil, Source{}, fmt.Errorf("%w: %s %s in %s", ErrChartNotFound, name, versionOrLatest(ref.Version), base)
	}
	u, err := url.Parse(cv.URLs[0])
	if err != nil {
		return nil, Source{}, fmt.Errorf("%w: bad chart URL in %s", ErrSourceUnavailable, indexURL)
	}
	b, _ := url.Parse(base + "/")
	archiveURL := b.ResolveReference(u).String()
	// An index may point anywhere: the archive is a source of its own.
	if err := f.checkSource(archiveURL); err != nil {
		return nil, Source{}, err
	}
	key := cacheKey(archiveURL+"@"+cv.Digest, ref.Credentials)
	if data, ok := f.archives.Get(key); ok {
		return data, Source{URL: archiveURL, Digest: cv.Digest}, nil
	}
	data, err := f.get(ctx, archiveURL, ref.Credentials)
	if err != nil {
		return nil, Source{}, err
	}
	if cv.Digest != "" && digestOf(data) != cv.Digest {
		return nil, Source{}, fmt.Errorf("%w: %s does not match its digest in the index", ErrNotInstallable, archiveURL)
	}
	f.archives.Add(key, data, int64(len(data)))
	return data, Source{URL: archiveURL, Digest: cv.Digest}, nil
}

// digestOf is data's SHA-256, in hex.
func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func versionOrLatest(v string) string {
	if v == "" {
		return "(latest)"
	}
	return v
}

// get fetches u, bounded by MaxChartBytes.
func (f *Fetcher) get(ctx context.Context, u string, creds *Credentials) ([]byte, error) {
	return f.getBounded(ctx, u, creds, f.maxChartBytes)
}

// getBounded fetches u, refusing a body over limit bytes.
func (f *Fetcher) getBounded(ctx context.Context, u string, creds *Credentials, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if err := creds.usableFor(u); err != nil {
		return nil, err
	}
	if creds != nil {
		req.SetBasicAuth(creds.Username, creds.Password)
		req = req.WithContext(context.WithValue(ctx, credentialsKey{}, creds))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrSourceNotAllowed) || errors.Is(err, ErrBadRequest) {
			return nil, fmt.Errorf("%w: %s, or a source it redirects to", ErrSourceNotAllowed, redact(u))
		}
		// Dial, TLS and protocol errors are logged, not answered: a caller
		// must not learn what listens where.
		f.log.Warn("chart source did not answer", "url", redact(u), "error", unwrapURLError(err).Error())
		return nil, fmt.Errorf("%w: %s did not answer", ErrSourceUnavailable, redact(u))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s answered 404", ErrChartNotFound, redact(u))
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("%w: %s refused the credentials (%d)", ErrSourceNotAllowed, redact(u), resp.StatusCode)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: %s answered %d", ErrSourceUnavailable, redact(u), resp.StatusCode)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: %s is %d bytes, over %d", ErrNotInstallable, redact(u), resp.ContentLength, limit)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		f.log.Warn("chart source stopped answering", "url", redact(u), "error", err.Error())
		return nil, fmt.Errorf("%w: %s stopped answering", ErrSourceUnavailable, redact(u))
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrNotInstallable, redact(u), limit)
	}
	return data, nil
}

// pullOCI pulls an oci:// chart through Helm's registry client, over the same
// guarded HTTP client.
func (f *Fetcher) pullOCI(ctx context.Context, ref, _ string, cr ChartRef) ([]byte, Source, error) {
	full := strings.TrimPrefix(ref, "oci://")
	if cr.Version != "" {
		if strings.ContainsAny(cr.Version, "<>=~^* ") {
			return nil, Source{}, fmt.Errorf("%w: an oci:// chart takes an exact version", ErrBadRequest)
		}
		full += ":" + cr.Version
	}
	key := cacheKey("oci://"+full, cr.Credentials)
	if data, ok := f.archives.Get(key); ok && cr.Version != "" {
		return data, Source{URL: "oci://" + full}, nil
	}
	opts := []registry.ClientOption{registry.ClientOptHTTPClient(f.client), registry.ClientOptEnableCache(false)}
	if f.plainHTTP {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	if err := cr.Credentials.usableFor("oci://" + full); err != nil {
		return nil, Source{}, err
	}
	if cr.Credentials != nil {
		opts = append(opts, registry.ClientOptBasicAuth(cr.Credentials.Username, cr.Credentials.Password))
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		return nil, Source{}, fmt.Errorf("%w: %v", ErrSourceUnavailable, err)
	}
	type result struct {
		data   []byte
		digest string
		err    error
	}
	done := make(chan result, 1)
	go func() { // the registry client takes no context
		r, err := client.Pull(full, registry.PullOptWithChart(true))
		if err != nil {
			done <- result{err: err}
			return
		}
		done <- result{data: r.Chart.Data, digest: r.Chart.Digest}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return nil, Source{}, fmt.Errorf("%w: oci://%s: %v", ErrSourceUnavailable, full, ctx.Err())
	}
	if r.err != nil {
		switch {
		case errors.Is(r.err, ErrSourceNotAllowed):
			return nil, Source{}, fmt.Errorf("%w: oci://%s", ErrSourceNotAllowed, full)
		case errors.Is(r.err, errdef.ErrNotFound):
			return nil, Source{}, fmt.Errorf("%w: oci://%s", ErrChartNotFound, full)
		}
		f.log.Warn("chart registry did not answer", "url", "oci://"+full, "error", r.err.Error())
		return nil, Source{}, fmt.Errorf("%w: oci://%s did not answer", ErrSourceUnavailable, full)
	}
	if int64(len(r.data)) > f.maxChartBytes {
		return nil, Source{}, fmt.Errorf("%w: oci://%s is over %d bytes", ErrNotInstallable, full, f.maxChartBytes)
	}
	f.archives.Add(key, r.data, int64(len(r.data)))
	return r.data, Source{URL: "oci://" + full, Digest: r.digest}, nil
}

func redact(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return "(bad URL)"
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
