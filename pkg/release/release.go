package release

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	helmrelease "helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/storage/driver"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/yaml"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/keyed"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// Installer runs Helm operations within a policy.
type Installer struct {
	Configs Configs
	Fetcher *Fetcher
	Policy  Policy
	// DefaultTimeout bounds an operation that asks for none, and is how long a
	// pending release is left alone before it is taken for stuck.
	DefaultTimeout time.Duration
	Log            *slog.Logger

	locks keyed.Locks // namespace/name: one operation per release per instance
}

// Request asks for a release to be installed or upgraded.
type Request struct {
	Chart       ChartRef
	ReleaseName string
	Namespace   string
	// Values are dotted keys (see Values); ValuesObject structured values.
	Values       map[string]any
	ValuesObject map[string]any
	// ReuseValues (upgrade) starts from the release's current values.
	ReuseValues     bool
	CreateNamespace bool
	Wait            bool
	Atomic          bool
	Timeout         time.Duration
	DryRun          bool
	// Upgrade lets an install of an existing release with other chart, version
	// or values upgrade it instead of answering ErrExists.
	Upgrade bool
}

// Release is a release as berth answers it.
type Release struct {
	Name       string           `json:"name"`
	Namespace  string           `json:"namespace"`
	Revision   int              `json:"revision"`
	Status     string           `json:"status"`
	Chart      string           `json:"chart"`
	Version    string           `json:"version"`
	AppVersion string           `json:"appVersion,omitempty"`
	Updated    time.Time        `json:"updated"`
	Services   []events.Service `json:"services"`
	// Source is where the chart came from (installs and upgrades only).
	Source *Source `json:"source,omitempty"`
	// Manifest is set for dry runs only.
	Manifest string `json:"manifest,omitempty"`
}

// Detail is a release with what GET /releases/{ns}/{name} shows.
type Detail struct {
	Release
	Description string         `json:"description,omitempty"`
	Notes       string         `json:"notes,omitempty"`
	Values      map[string]any `json:"values"`
	Resources   []ResourceRef  `json:"resources"`
}

// ResourceRef names an object a release created.
type ResourceRef struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// lock waits for the release's lock: one operation at a time per release.
func (in *Installer) lock(ctx context.Context, ns, name string) (func(), error) {
	return in.locks.Lock(ctx, ns+"/"+name)
}

func (in *Installer) timeout(d time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return in.DefaultTimeout
}

// Check validates what a request names before anything is fetched or written.
func (in *Installer) Check(req Request) error {
	_, err := in.checked(req)
	return err
}

// checked is Check, answering the release's values as well: they are expanded
// once per operation.
func (in *Installer) checked(req Request) (map[string]any, error) {
	if err := CheckReleaseName(req.ReleaseName); err != nil {
		return nil, err
	}
	if err := in.Policy.CheckNamespace(req.Namespace); err != nil {
		return nil, err
	}
	if req.CreateNamespace && !in.Policy.AllowCreateNamespace {
		return nil, fmt.Errorf("%w: createNamespace (ALLOW_CREATE_NAMESPACE is off)", ErrNamespaceNotAllowed)
	}
	if req.Timeout < 0 || req.Timeout > time.Hour {
		return nil, fmt.Errorf("%w: timeout must be between 0 and 1h", ErrBadRequest)
	}
	if b, _ := json.Marshal([]any{req.Values, req.ValuesObject}); len(b) > in.Policy.MaxValuesBytes {
		return nil, fmt.Errorf("%w: values are %d bytes, over %d", ErrBadRequest, len(b), in.Policy.MaxValuesBytes)
	}
	if req.Chart.Version != "" && (len(req.Chart.Version) > 64 || strings.ContainsAny(req.Chart.Version, " /\\\n")) {
		return nil, fmt.Errorf("%w: version %q", ErrBadRequest, problem.Clip(req.Chart.Version))
	}
	vals, err := Values(req.Values, req.ValuesObject)
	if err != nil {
		return nil, err
	}
	// Dotted keys expand (list[9] is ten entries): bound what they became.
	if b, _ := json.Marshal(vals); len(b) > in.Policy.MaxValuesBytes {
		return nil, fmt.Errorf("%w: values expand to %d bytes, over %d", ErrBadRequest, len(b), in.Policy.MaxValuesBytes)
	}
	return vals, nil
}

// Install installs a release, or answers the existing one when it already has
// this chart, version and values (created is then false). An existing release
// with anything different is ErrExists unless req.Upgrade. A release left
// pending past its timeout is marked failed and installed or upgraded again.
func (in *Installer) Install(ctx context.Context, req Request) (_ Release, _ bool, err error) {
	name := "install"
	if req.DryRun {
		name = "install-dry-run"
	}
	ctx, done := observe(ctx, name, req.Namespace, req.ReleaseName)
	defer func() { done(err) }()
	op, err := in.begin(ctx, req)
	if err != nil {
		return Release{}, false, err
	}
	defer op.unlock()
	cfg, c, vals, src := op.cfg, op.chart, op.vals, op.src
	if req.DryRun {
		return in.install(ctx, cfg, req, c, vals, src, false)
	}
	cur, err := in.current(cfg, op.seen, req)
	if err != nil {
		return Release{}, false, err
	}
	switch {
	case cur == nil:
		return in.install(ctx, cfg, req, c, vals, src, false)
	case cur.Info.Status == helmrelease.StatusUninstalled || cur.Info.Status == helmrelease.StatusFailed && cur.Version == 1:
		return in.install(ctx, cfg, req, c, vals, src, true)
	case sameRelease(cur, c, vals) && cur.Info.Status == helmrelease.StatusDeployed:
		return toRelease(cur, req.Namespace), false, nil
	case cur.Info.Status == helmrelease.StatusDeployed && !req.Upgrade:
		return Release{}, false, fmt.Errorf("%w: %s/%s is %s %s", ErrExists, req.Namespace, req.ReleaseName, cur.Chart.Name(), cur.Chart.Metadata.Version)
	}
	r, err := in.upgrade(ctx, cfg, req, c, vals)
	if err != nil {
		return Release{}, false, err
	}
	r.Source = &src
	return r, false, nil
}

// operation is what Install and Upgrade hold once they begin: the request's
// checked values, its chart, the release's lock and its own copy of its
// namespace's Helm configuration (forOperation), whose storage is seen.
type operation struct {
	vals   map[string]any
	chart  *chart.Chart
	src    Source
	cfg    *action.Configuration
	seen   *lookups
	unlock func()
}

// begin checks req, loads its chart (before the lock: a slow source does not
// hold up other operations on the release) and takes the release's lock.
func (in *Installer) begin(ctx context.Context, req Request) (*operation, error) {
	vals, err := in.checked(req)
	if err != nil {
		return nil, err
	}
	lctx, span := telemetry.Tracer().Start(ctx, "load chart")
	c, src, err := in.Fetcher.Load(lctx, req.Chart)
	if err == nil {
		span.SetAttributes(telemetry.AttrChart.String(c.Name() + "-" + c.Metadata.Version))
	}
	telemetry.End(span, err)
	if err != nil {
		return nil, err
	}
	unlock, err := in.lock(ctx, req.Namespace, req.ReleaseName)
	if err != nil {
		return nil, err
	}
	shared, err := in.Configs(req.Namespace)
	if err != nil {
		unlock()
		return nil, err
	}
	cfg, seen := forOperation(shared)
	// Helm installs a chart's CRDs first: the capabilities such a chart
	// renders with are asked after, by Helm.
	if len(c.CRDObjects()) == 0 {
		if caps := capabilitiesOf(shared); caps != nil {
			cfg.Capabilities = caps
		}
	}
	return &operation{vals: vals, chart: c, src: src, cfg: cfg, seen: seen, unlock: unlock}, nil
}

// current returns the release's latest revision, nil when there is none. A
// release pending for longer than its timeout is marked failed first; one
// pending within it is ErrInProgress.
func (in *Installer) current(cfg *action.Configuration, seen *lookups, req Request) (*helmrelease.Release, error) {
	hist, err := seen.history(req.ReleaseName)
	if errors.Is(err, driver.ErrReleaseNotFound) || err == nil && len(hist) == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read release %s/%s: %w", req.Namespace, req.ReleaseName, err)
	}
	cur := slices.MaxFunc(hist, func(a, b *helmrelease.Release) int { return cmp.Compare(a.Version, b.Version) })
	if !cur.Info.Status.IsPending() {
		return cur, nil
	}
	since := cur.Info.LastDeployed.Time
	if since.IsZero() {
		since = cur.Info.FirstDeployed.Time
	}
	if time.Since(since) < in.timeout(req.Timeout) {
		return nil, fmt.Errorf("%w: %s/%s is %s", ErrInProgress, req.Namespace, req.ReleaseName, cur.Info.Status)
	}
	in.Log.Warn("release stuck pending past its timeout: marking it failed", "release", req.ReleaseName, "namespace", req.Namespace, "status", cur.Info.Status.String())
	cur.Info.Status = helmrelease.StatusFailed
	cur.Info.Description = "marked failed by berth: pending past its timeout"
	if err := cfg.Releases.Update(cur); err != nil {
		return nil, fmt.Errorf("mark %s/%s failed: %w", req.Namespace, req.ReleaseName, err)
	}
	return cur, nil
}

// sameRelease reports whether cur has chart c's name and version and values vals.
func sameRelease(cur *helmrelease.Release, c *chart.Chart, vals map[string]any) bool {
	if cur.Chart == nil || cur.Chart.Name() != c.Name() || cur.Chart.Metadata.Version != c.Metadata.Version {
		return false
	}
	return reflect.DeepEqual(normalize(cur.Config), normalize(vals))
}

// normalize passes values through JSON, so that numbers and empty maps compare
// the way they are stored.
func normalize(v map[string]any) map[string]any {
	out := map[string]any{}
	if len(v) == 0 {
		return out // nil and empty are the same values; JSON null would make out nil
	}
	b, _ := json.Marshal(v)
	_ = json.Unmarshal(b, &out)
	return out
}

func (in *Installer) install(ctx context.Context, cfg *action.Configuration, req Request, c *chart.Chart, vals map[string]any, src Source, replace bool) (Release, bool, error) {
	inst := action.NewInstall(cfg)
	inst.ReleaseName, inst.Namespace = req.ReleaseName, req.Namespace
	inst.CreateNamespace, inst.Wait, inst.Atomic = req.CreateNamespace, req.Wait, req.Atomic
	inst.Timeout = in.timeout(req.Timeout)
	inst.Replace = replace
	if req.DryRun {
		inst.DryRun, inst.DryRunOption = true, "server"
	}
	rel, err := inst.RunWithContext(ctx, c, vals)
	if errors.Is(err, driver.ErrReleaseExists) {
		return Release{}, false, fmt.Errorf("%w: %s/%s was created meanwhile", ErrInProgress, req.Namespace, req.ReleaseName)
	}
	if err != nil {
		err = classify(err, "install", req)
		// A refusal leaves nothing; after a failure that may pass, the failed
		// record stays and the retry replaces it.
		if !req.DryRun && !replace && problem.Status(err) < 500 {
			in.purgeFailed(cfg, req)
		}
		return Release{}, false, err
	}
	r := toRelease(rel, req.Namespace)
	r.Source = &src
	if req.DryRun {
		r.Manifest = RedactSecrets(rel.Manifest)
	}
	return r, !req.DryRun, nil
}

// purgeFailed removes what a refused first install left: its failed release
// record and whatever objects it created, so that bad input changes nothing.
func (in *Installer) purgeFailed(cfg *action.Configuration, req Request) {
	if seen, ok := cfg.Releases.Driver.(*lookups); ok {
		seen.forget() // what the install left, not what was there before it
	}
	cur, err := cfg.Releases.Last(req.ReleaseName)
	if err != nil || cur.Version != 1 || cur.Info.Status != helmrelease.StatusFailed {
		return
	}
	un := action.NewUninstall(cfg)
	un.Timeout = in.timeout(req.Timeout)
	if _, err := un.Run(req.ReleaseName); err != nil {
		// Helm deleted what it could (what it could not, it could not have
		// created either); the record must not outlive the refusal.
		if _, derr := cfg.Releases.Delete(req.ReleaseName, cur.Version); derr != nil {
			in.Log.Warn("could not remove a failed first install", "release", req.ReleaseName, "namespace", req.Namespace,
				"error", err.Error(), "record", derr.Error())
		}
	}
}

func (in *Installer) upgrade(ctx context.Context, cfg *action.Configuration, req Request, c *chart.Chart, vals map[string]any) (Release, error) {
	up := action.NewUpgrade(cfg)
	up.Namespace = req.Namespace
	up.ReuseValues, up.Wait, up.Atomic = req.ReuseValues, req.Wait, req.Atomic
	up.Timeout = in.timeout(req.Timeout)
	up.MaxHistory = 10
	rel, err := up.RunWithContext(ctx, req.ReleaseName, c, vals)
	if err != nil {
		return Release{}, classify(err, "upgrade", req)
	}
	return toRelease(rel, req.Namespace), nil
}

// Upgrade upgrades an existing release to the chart and values of req.
func (in *Installer) Upgrade(ctx context.Context, req Request) (_ Release, err error) {
	ctx, done := observe(ctx, "upgrade", req.Namespace, req.ReleaseName)
	defer func() { done(err) }()
	op, err := in.begin(ctx, req)
	if err != nil {
		return Release{}, err
	}
	defer op.unlock()
	cfg, c, vals, src := op.cfg, op.chart, op.vals, op.src
	cur, err := in.current(cfg, op.seen, req)
	if err != nil {
		return Release{}, err
	}
	if cur == nil || cur.Info.Status == helmrelease.StatusUninstalled {
		return Release{}, fmt.Errorf("%w: %s/%s", ErrNotFound, req.Namespace, req.ReleaseName)
	}
	if !req.ReuseValues && sameRelease(cur, c, vals) && cur.Info.Status == helmrelease.StatusDeployed {
		r := toRelease(cur, req.Namespace)
		r.Source = &src
		return r, nil
	}
	r, err := in.upgrade(ctx, cfg, req, c, vals)
	if err != nil {
		return Release{}, err
	}
	r.Source = &src
	return r, nil
}

// classify maps a failed Helm action to berth's errors. Helm gives no sentinel
// for a chart that does not render or a manifest the API server refuses; both
// can never succeed as asked. What is not the request's fault keeps its own
// status: a deadline, berth's own RBAC (500), an API server that is
// unavailable or shedding load (503).
func classify(err error, op string, req Request) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%w: %s %s/%s: %v", ErrRefused, op, req.Namespace, req.ReleaseName, err)
	case isRenderError(err):
		return fmt.Errorf("%w: %s %s/%s: %v", ErrRender, op, req.Namespace, req.ReleaseName, err)
	}
	// Anything else (a connection refused, an API server that failed) may
	// pass: answered 5xx, so that Knative retries it.
	return fmt.Errorf("%s %s/%s: %w", op, req.Namespace, req.ReleaseName, err)
}

// renderErrorTexts are how Helm words the errors of a chart that cannot render
// or validate with these values; Helm gives them no types.
var renderErrorTexts = []string{
	"template: ",         // text/template parse and execution errors
	"parse error",        // Helm's template parse errors
	"execution error at", // a template's fail
	"YAML parse error", "error converting YAML to JSON",
	"values don't meet the specifications of the schema",
	"rendered manifests contain a resource that already exists",
	"unable to build kubernetes objects",
	"chart requires kubeVersion",
}

// isRenderError reports a chart that cannot render or validate with these
// values: the API server refused its objects as invalid, a kind it does not
// serve, or one of Helm's render and validation errors.
func isRenderError(err error) bool {
	if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) || meta.IsNoMatchError(err) {
		return true
	}
	msg := err.Error()
	return slices.ContainsFunc(renderErrorTexts, func(s string) bool { return strings.Contains(msg, s) })
}

// Uninstall removes a release. A release that is not there is not an error:
// gone reports whether it was there.
func (in *Installer) Uninstall(ctx context.Context, ns, name string, timeout time.Duration) (_ Release, _ bool, err error) {
	ctx, done := observe(ctx, "uninstall", ns, name)
	defer func() { done(err) }()
	if err := in.checkName(ns, name); err != nil {
		return Release{}, false, err
	}
	unlock, err := in.lock(ctx, ns, name)
	if err != nil {
		return Release{}, false, err
	}
	defer unlock()
	shared, err := in.Configs(ns)
	if err != nil {
		return Release{}, false, err
	}
	cfg, _ := forOperation(shared)
	un := action.NewUninstall(cfg)
	un.Timeout = in.timeout(timeout)
	res, err := un.Run(name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return Release{Name: name, Namespace: ns, Status: helmrelease.StatusUninstalled.String()}, false, nil
	}
	if err != nil {
		return Release{}, false, fmt.Errorf("uninstall %s/%s: %w", ns, name, err)
	}
	r := toRelease(res.Release, ns)
	r.Name, r.Status = name, helmrelease.StatusUninstalled.String()
	return r, true, nil
}

func (in *Installer) checkName(ns, name string) error {
	if err := CheckReleaseName(name); err != nil {
		return err
	}
	return in.Policy.CheckNamespace(ns)
}

// Rollback rolls a release back to revision (0: the previous one).
func (in *Installer) Rollback(ctx context.Context, ns, name string, revision int, timeout time.Duration) (_ Release, err error) {
	ctx, done := observe(ctx, "rollback", ns, name)
	defer func() { done(err) }()
	if err := in.checkName(ns, name); err != nil {
		return Release{}, err
	}
	if revision < 0 {
		return Release{}, fmt.Errorf("%w: revision must be positive", ErrBadRequest)
	}
	unlock, err := in.lock(ctx, ns, name)
	if err != nil {
		return Release{}, err
	}
	defer unlock()
	shared, err := in.Configs(ns)
	if err != nil {
		return Release{}, err
	}
	cfg, _ := forOperation(shared)
	hist, err := cfg.Releases.History(name)
	if errors.Is(err, driver.ErrReleaseNotFound) || err == nil && len(hist) == 0 {
		return Release{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ns, name)
	}
	if err != nil {
		return Release{}, err
	}
	if revision != 0 && !slices.ContainsFunc(hist, func(r *helmrelease.Release) bool { return r.Version == revision }) {
		return Release{}, fmt.Errorf("%w: %s/%s has no revision %d", ErrNotFound, ns, name, revision)
	}
	if revision == 0 && len(hist) < 2 {
		return Release{}, fmt.Errorf("%w: %s/%s has no earlier revision", ErrBadRequest, ns, name)
	}
	rb := action.NewRollback(cfg)
	rb.Version, rb.Timeout, rb.MaxHistory = revision, in.timeout(timeout), 10
	if err := rb.Run(name); err != nil {
		return Release{}, classify(err, "rollback", Request{Namespace: ns, ReleaseName: name})
	}
	cur, err := cfg.Releases.Last(name)
	if err != nil {
		return Release{}, err
	}
	return toRelease(cur, ns), nil
}

// Status shows a release: its state, notes, values (secrets redacted),
// resources and Services.
func (in *Installer) Status(ctx context.Context, ns, name string) (Detail, error) {
	if err := in.checkName(ns, name); err != nil {
		return Detail{}, err
	}
	cfg, err := in.Configs(ns)
	if err != nil {
		return Detail{}, err
	}
	rel, err := cfg.Releases.Last(name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return Detail{}, fmt.Errorf("%w: %s/%s", ErrNotFound, ns, name)
	}
	if err != nil {
		return Detail{}, err
	}
	d := Detail{Release: toRelease(rel, ns), Description: rel.Info.Description, Notes: rel.Info.Notes, Values: Redact(rel.Config)}
	d.Resources = resources(rel.Manifest)
	return d, nil
}

// History lists a release's revisions, oldest first.
func (in *Installer) History(ctx context.Context, ns, name string) ([]Release, error) {
	if err := in.checkName(ns, name); err != nil {
		return nil, err
	}
	cfg, err := in.Configs(ns)
	if err != nil {
		return nil, err
	}
	hist, err := cfg.Releases.History(name)
	if errors.Is(err, driver.ErrReleaseNotFound) || err == nil && len(hist) == 0 {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, ns, name)
	}
	if err != nil {
		return nil, err
	}
	releaseutil.SortByRevision(hist)
	out := make([]Release, len(hist))
	for i, r := range hist {
		out[i] = toRelease(r, ns)
	}
	return out, nil
}

// List lists the releases of the allowed namespaces (or of ns alone): each
// release's latest revision, by name, in any state Helm's list --all shows.
// It reads release storage alone (Helm's List action asks the API server's
// version first, a round trip the listing does not need), and decodes the
// latest records only (records.latest), where Helm's decodes every revision.
func (in *Installer) List(ctx context.Context, ns string) ([]Release, error) {
	nss := in.Policy.Namespaces
	if ns != "" {
		if err := in.Policy.CheckNamespace(ns); err != nil {
			return nil, err
		}
		nss = []string{ns}
	}
	out := []Release{}
	for _, n := range nss {
		cfg, err := in.Configs(n)
		if err != nil {
			return nil, err
		}
		var rels []*helmrelease.Release
		if rec, ok := cfg.Releases.Driver.(*records); ok {
			rels, err = rec.latest(ctx)
		} else {
			rels, err = cfg.Releases.List(func(*helmrelease.Release) bool { return true })
		}
		if err != nil {
			return nil, fmt.Errorf("list releases in %s: %w", n, err)
		}
		latest := map[string]*helmrelease.Release{}
		for _, r := range rels {
			if l, ok := latest[r.Name]; !ok || r.Version > l.Version {
				latest[r.Name] = r
			}
		}
		for _, name := range slices.Sorted(maps.Keys(latest)) {
			// As Helm's list --all: a latest record in a state it does not
			// know is left out.
			if r := latest[name]; r.Info != nil && action.ListAll&action.ListAll.FromName(r.Info.Status.String()) != 0 {
				out = append(out, toRelease(r, n))
			}
		}
	}
	return out, nil
}

// toRelease reads a release record found in namespace ns's storage. The
// record's own namespace is not trusted: whoever may write Secrets in ns may
// write a record claiming another.
func toRelease(r *helmrelease.Release, ns string) Release {
	out := Release{Name: r.Name, Namespace: ns, Revision: r.Version, Services: services(r.Manifest)}
	if r.Info != nil {
		out.Status = r.Info.Status.String()
		out.Updated = r.Info.LastDeployed.Time
	}
	if r.Chart != nil && r.Chart.Metadata != nil {
		out.Chart, out.Version, out.AppVersion = r.Chart.Metadata.Name, r.Chart.Metadata.Version, r.Chart.Metadata.AppVersion
	}
	return out
}

// manifestObject is what berth reads of a rendered object.
type manifestObject struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Ports []struct {
			Name     string `json:"name"`
			Port     int32  `json:"port"`
			Protocol string `json:"protocol"`
		} `json:"ports"`
	} `json:"spec"`
}

// objects are the objects of a manifest, sorted by kind and name; of kind
// alone when kind is set. A document whose text does not name the kind is
// not parsed: listing releases parsed every object of every release, where
// it needs their Services.
func objects(manifest, kind string) []manifestObject {
	var out []manifestObject
	for _, doc := range releaseutil.SplitManifests(manifest) {
		if kind != "" && !strings.Contains(doc, kind) {
			continue
		}
		var o manifestObject
		if yaml.Unmarshal([]byte(doc), &o) == nil && o.Kind != "" && (kind == "" || o.Kind == kind) {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b manifestObject) int {
		return strings.Compare(a.Kind+"/"+a.Metadata.Name, b.Kind+"/"+b.Metadata.Name)
	})
	return out
}

// services are the Services a manifest creates, with their ports: what a
// caller may expose.
func services(manifest string) []events.Service {
	out := []events.Service{}
	for _, o := range objects(manifest, "Service") {
		s := events.Service{Name: o.Metadata.Name, Ports: []events.ServicePort{}}
		for _, p := range o.Spec.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = "TCP"
			}
			s.Ports = append(s.Ports, events.ServicePort{Name: p.Name, Port: p.Port, Protocol: proto})
		}
		out = append(out, s)
	}
	return out
}

func resources(manifest string) []ResourceRef {
	out := []ResourceRef{}
	for _, o := range objects(manifest, "") {
		out = append(out, ResourceRef{Kind: o.Kind, Name: o.Metadata.Name})
	}
	return out
}

// RedactSecrets replaces the values of every Secret's data and stringData in a
// rendered manifest, so that a dry run answers the shape of what it would
// write and not the secrets in it. Other documents are kept as they are.
func RedactSecrets(manifest string) string {
	docs := strings.Split(manifest, "\n---")
	for i, doc := range docs {
		var o map[string]any
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil || o["kind"] != "Secret" {
			continue
		}
		for _, field := range []string{"data", "stringData"} {
			if m, ok := o[field].(map[string]any); ok {
				for k := range m {
					m[k] = "(redacted)"
				}
			}
		}
		out, err := yaml.Marshal(o)
		if err != nil {
			docs[i] = "\n# a Secret, redacted\n"
			continue
		}
		var comments []string
		for _, line := range strings.Split(doc, "\n") {
			if strings.HasPrefix(line, "#") {
				comments = append(comments, line)
			}
		}
		docs[i] = "\n" + strings.Join(append(comments, string(out)), "\n")
	}
	return strings.Join(docs, "\n---")
}
