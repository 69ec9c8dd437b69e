package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/expose"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/gatewayapi"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/release"
	"github.com/berth-dev/berth/pkg/reservation"
	"github.com/berth-dev/berth/pkg/seed"
)

// AnnotationChartSource on a credentials Secret names the chart source (a URL,
// compared as ALLOWED_CHART_SOURCES entries are) its credentials are for; they
// are sent nowhere else.
const AnnotationChartSource = "berth.dev/chart-source"

// AnnotationNamespaces on a credentials Secret lists the namespaces whose
// releases may use it (comma separated, or "*"): the platform team's say, so
// that one tenant cannot install with another's credentials.
const AnnotationNamespaces = "berth.dev/namespaces"

var (
	errUnexpectedEvent      = problem.New(problem.ErrInvalid, "install does not consume this event type")
	errCredentialsNamespace = problem.New(problem.ErrForbidden, "the credentials Secret is not for this namespace")
	errNoCredentials        = problem.New(problem.ErrUnprocessable, "the credentials Secret is missing, lacks username and password, or names no chart source")
)

type handler struct {
	// exposures reads where releases are exposed: the entry points' ledgers.
	exposures *expose.Exposer
	access    auth.Access
	allowed   []string
	in        *release.Installer
	core      kubernetes.Interface
	emit      *function.Emitter
	credsNS   string
	log       *slog.Logger
}

func newHandler(cfg Config, rc *rest.Config, core kubernetes.Interface, gw *gatewayapi.Client, ac auth.Access, log *slog.Logger) *handler {
	p := release.Policy{
		Namespaces: cfg.AllowedNamespaces, Sources: cfg.AllowedChartSources,
		AllowPrivateAddresses: cfg.AllowPrivateChartSources, MaxValuesBytes: cfg.MaxValuesBytes,
		AllowCreateNamespace: cfg.AllowCreateNamespace,
	}
	return &handler{
		in: &release.Installer{
			Configs: release.NewConfigs(rc, cfg.HelmDriver, cfg.DeployerServiceAccount, log),
			Fetcher: release.NewFetcher(release.FetcherOptions{
				Policy: p, Repos: cfg.ChartRepositories, PlainHTTP: cfg.OCIPlainHTTP,
				MaxChartBytes: cfg.MaxChartBytes, MaxIndexBytes: cfg.MaxIndexBytes, MaxDecompressedBytes: cfg.MaxChartDecompressedBytes,
				CacheEntries: cfg.ChartCacheEntries, CacheBytes: cfg.ChartCacheBytes, IndexTTL: cfg.IndexTTL, Log: log,
			}),
			Policy: p, DefaultTimeout: cfg.ReleaseTimeout, Log: log,
		},
		exposures: &expose.Exposer{Ports: cfg.Settings.New(core, gw)},
		access:    ac, allowed: cfg.AllowedNamespaces,
		core: core, emit: function.NewEmitter(cfg.Config, "install"),
		credsNS: cfg.CredentialsNamespace, log: log,
	}
}

// seedRoutes are install's routes of the 2018 API.
var seedRoutes = []string{"/install", "/upgrade", "/delete"}

// fn is install's function, but for its Gate.
func (h *handler) fn() function.Function {
	return function.Function{Name: "install", API: h.routes(), Events: h.event, Seed: seedRoutes}
}

func (h *handler) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /install", h.seedInstall)
	mux.HandleFunc("POST /upgrade", h.upgrade)
	mux.HandleFunc("POST /delete", h.deleteSeed)
	mux.HandleFunc("POST /releases", h.create)
	mux.HandleFunc("GET /releases", h.list)
	mux.HandleFunc("GET /releases/{namespace}/{name}", h.status)
	mux.HandleFunc("GET /releases/{namespace}/{name}/history", h.history)
	mux.HandleFunc("POST /releases/{namespace}/{name}/rollback", h.rollback)
	mux.HandleFunc("DELETE /releases/{namespace}/{name}", h.deleteRelease)
	mux.HandleFunc("/", function.NoRoute)
	return mux
}

// installRequest is the body of POST /releases, /install and /upgrade, and
// the data of dev.berth.install.requested. The first four fields are the 2018
// API's.
type installRequest struct {
	ChartName         string         `json:"chartName"`
	ReleaseName       string         `json:"releaseName"`
	PrivateChartsRepo string         `json:"privateChartsRepo"`
	Values            map[string]any `json:"values"`
	Namespace         string         `json:"namespace"`
	Version           string         `json:"version"`
	ValuesObject      map[string]any `json:"valuesObject"`
	ReuseValues       bool           `json:"reuseValues"`
	CreateNamespace   bool           `json:"createNamespace"`
	Timeout           timeout        `json:"timeout"`
	Wait              bool           `json:"wait"`
	Atomic            bool           `json:"atomic"`
	Upgrade           bool           `json:"upgrade"`
	CredentialsSecret string         `json:"credentialsSecret"`
	Expose            *events.Expose `json:"expose"`
}

// upgradeSchema reads a 2018 /upgrade request: its fields under their 2018
// names beside berth's.
var upgradeSchema = seed.Schema{
	{Name: "chartName"}, {Name: "releaseName"}, {Name: "privateChartsRepo"},
	{Name: "values", Kind: seed.Object},
	{Name: "reuseValues", Kind: seed.Flag, Aliases: []string{"reuseValue"}},
	{Name: "namespace"}, {Name: "version"}, {Name: "valuesObject", Kind: seed.Object},
	{Name: "createNamespace", Kind: seed.Flag}, {Name: "timeout"}, {Name: "wait", Kind: seed.Flag},
	{Name: "atomic", Kind: seed.Flag}, {Name: "upgrade", Kind: seed.Flag}, {Name: "credentialsSecret"},
	{Name: "expose", Kind: seed.JSON},
}

// installSchema reads a 2018 /install request, which may be a dry run.
var installSchema = append(slices.Clip(upgradeSchema), seed.Field{Name: "dryRun", Skip: true})

// deleteSchema reads a 2018 /delete request.
var deleteSchema = seed.Schema{{Name: "releaseName"}, {Name: "namespace"}}

// decodeSeed reads a 2018 install or upgrade request, lowercasing the chart's
// and the release's names as 2018 did ("sampleApp1" is release sampleapp1).
// A chart named by its URL keeps its case.
func decodeSeed(r *http.Request, schema seed.Schema) (installRequest, error) {
	var b installRequest
	if err := seed.Decode(r, schema, &b); err != nil {
		return b, err
	}
	if !strings.Contains(b.ChartName, "://") {
		b.ChartName = strings.ToLower(b.ChartName)
	}
	b.ReleaseName = strings.ToLower(b.ReleaseName)
	return b, nil
}

// seedRelease is a release as the 2018 routes answer it: berth's fields,
// with the Helm status as releaseStatus (status is the 2018 outcome), and
// the 2018 releaseName and serviceName (the release's first Service, which
// a 2018 client names in its next setrule).
type seedRelease struct {
	release.Release
	Status        string         `json:"status"`
	ReleaseStatus string         `json:"releaseStatus"`
	ReleaseName   string         `json:"releaseName"`
	ServiceName   string         `json:"serviceName,omitempty"`
	Expose        *events.Expose `json:"expose,omitempty"`
}

func seedAnswer(rel release.Release, x *events.Expose) seedRelease {
	a := seedRelease{Release: rel, Status: seed.Success, ReleaseStatus: rel.Status, ReleaseName: rel.Name, Expose: x}
	if len(rel.Services) > 0 {
		a.ServiceName = rel.Services[0].Name
	}
	return a
}

// namespace is where a request that names none acts: the caller's own
// namespace if releases may live there, else the first allowed namespace.
func (h *handler) namespace(ctx context.Context, ns string) string {
	if ns != "" {
		return ns
	}
	return auth.DefaultNamespace(ctx, h.allowed)
}

// authorize checks that the caller may do each of verbs on releases in ns.
func (h *handler) authorize(ctx context.Context, ns, name string, verbs ...string) error {
	for _, v := range verbs {
		if err := h.access.Check(ctx, auth.Attributes{Verb: v, Resource: auth.Releases, Namespace: ns, Name: name}); err != nil {
			return err
		}
	}
	return nil
}

// toRequest builds the Helm request, after checking that the caller may do
// verbs on the release, reading credentials from their Secret.
func (h *handler) toRequest(ctx context.Context, b installRequest, verbs ...string) (release.Request, error) {
	b.Namespace = h.namespace(ctx, b.Namespace)
	req := release.Request{
		Chart:       release.ChartRef{Name: b.ChartName, Repo: b.PrivateChartsRepo, Version: b.Version},
		ReleaseName: b.ReleaseName, Namespace: b.Namespace, Values: b.Values, ValuesObject: b.ValuesObject,
		ReuseValues: b.ReuseValues, CreateNamespace: b.CreateNamespace, Wait: b.Wait, Atomic: b.Atomic,
		Timeout: time.Duration(b.Timeout), Upgrade: b.Upgrade,
	}
	if err := h.in.Check(req); err != nil {
		return release.Request{}, err
	}
	if err := h.authorize(ctx, req.Namespace, req.ReleaseName, verbs...); err != nil {
		return release.Request{}, err
	}
	if b.CredentialsSecret != "" {
		creds, err := h.credentials(ctx, b.CredentialsSecret, req.Namespace)
		if err != nil {
			return release.Request{}, err
		}
		req.Chart.Credentials = creds
	}
	return req, nil
}

// credentials reads username and password from a Secret in the credentials
// namespace. They are never logged or answered.
func (h *handler) credentials(ctx context.Context, name, namespace string) (*release.Credentials, error) {
	if len(validation.IsDNS1123Subdomain(name)) > 0 {
		return nil, fmt.Errorf("%w: credentialsSecret must be a Secret name", release.ErrBadRequest)
	}
	s, err := h.core.CoreV1().Secrets(h.credsNS).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %s/%s", errNoCredentials, h.credsNS, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read credentials Secret %s/%s: %w", h.credsNS, name, err)
	}
	u, p := string(s.Data["username"]), string(s.Data["password"])
	if u == "" || p == "" {
		return nil, fmt.Errorf("%w: %s/%s", errNoCredentials, h.credsNS, name)
	}
	if allowed := strings.Split(s.Annotations[AnnotationNamespaces], ","); !slices.Contains(allowed, namespace) && !slices.Contains(allowed, "*") {
		return nil, fmt.Errorf("%w: %s/%s is not for releases in %s (annotation %s)", errCredentialsNamespace, h.credsNS, name, namespace, AnnotationNamespaces)
	}
	src := s.Annotations[AnnotationChartSource]
	if _, err := release.ParseSource(src); err != nil {
		return nil, fmt.Errorf("%w: %s/%s has no %s annotation naming the source it is for", errNoCredentials, h.credsNS, name, AnnotationChartSource)
	}
	return &release.Credentials{Ref: h.credsNS + "/" + name, Source: src, Username: u, Password: p}, nil
}

// derivedName names a release after its chart and a key, within Helm's 53
// characters: chart-<8 hex of sha256(key)>.
func derivedName(chartName, key string) string {
	base := chartName[strings.LastIndex(chartName, "/")+1:]
	base = strings.ToLower(base)
	if i := strings.IndexAny(base, ":@"); i >= 0 {
		base = base[:i]
	}
	clean := make([]byte, 0, len(base))
	for _, c := range []byte(base) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' {
			clean = append(clean, c)
		}
	}
	base = strings.Trim(string(clean), "-")
	if len(base) > 44 {
		base = strings.TrimRight(base[:44], "-")
	}
	if base == "" || base[0] < 'a' || base[0] > 'z' {
		base = "r" + base
	}
	sum := sha256.Sum256([]byte(key))
	return base + "-" + hex.EncodeToString(sum[:4])
}

// installAnswer is a release with the expose intent it was asked with.
type installAnswer struct {
	release.Release
	Expose *events.Expose `json:"expose,omitempty"`
}

// create is berth's own POST /releases[?dryRun=true]: 201 when it installed,
// 200 when the release was already there with this chart, version and values.
func (h *handler) create(w http.ResponseWriter, r *http.Request) {
	var b installRequest
	if err := function.DecodeJSON(r, &b); err != nil {
		problem.Write(w, err)
		return
	}
	rel, status, err := h.install(r, b)
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, status, installAnswer{Release: rel, Expose: b.Expose})
}

// seedInstall is the 2018 POST /install[?dryRun=true]: create, read and
// answered as 2018 did.
func (h *handler) seedInstall(w http.ResponseWriter, r *http.Request) {
	b, err := decodeSeed(r, installSchema)
	if err != nil {
		seed.WriteError(w, err)
		return
	}
	rel, status, err := h.install(r, b)
	if err != nil {
		seed.WriteError(w, err)
		return
	}
	seed.Write(w, status, seedAnswer(rel, b.Expose))
}

// install installs b and answers the release and the status to answer.
func (h *handler) install(r *http.Request, b installRequest) (release.Release, int, error) {
	dry, err := function.QueryBool(r, "dryRun")
	if err != nil {
		return release.Release{}, 0, err
	}
	if b.ReleaseName == "" && b.ChartName != "" {
		b.ReleaseName = derivedName(b.ChartName, uuid.NewString())
	}
	verbs := installVerbs(b)
	if dry {
		// A dry run answers the rendered manifest: what reading the release shows.
		verbs = append(verbs, "get")
	}
	req, err := h.toRequest(r.Context(), b, verbs...)
	if err != nil {
		return release.Release{}, 0, err
	}
	req.DryRun = dry
	rel, created, err := h.in.Install(r.Context(), req)
	if err != nil {
		return release.Release{}, 0, h.chartMessage(r.Context(), req.Namespace, err)
	}
	if created {
		return rel, http.StatusCreated, nil
	}
	return rel, http.StatusOK, nil
}

// errChartMessageHidden stands for a chart's own message (a template error, a
// fail) to a caller who may not read the release.
var errChartMessageHidden = problem.New(problem.ErrUnprocessable,
	"the chart cannot be installed with these values; its message is shown to callers who may get releases in the namespace")

// chartMessage keeps a chart's render and fail messages, which may quote what
// the chart looked up, from a caller who may not get releases in ns.
func (h *handler) chartMessage(ctx context.Context, ns string, err error) error {
	if !errors.Is(err, release.ErrRender) {
		return err
	}
	if ok, aerr := h.access.Allowed(ctx, auth.Attributes{Verb: "get", Resource: auth.Releases, Namespace: ns}); aerr != nil || !ok {
		return errChartMessageHidden
	}
	return err
}

// installVerbs are what an install request needs: create, and update when it
// may upgrade a release that is there.
func installVerbs(b installRequest) []string {
	if b.Upgrade {
		return []string{"create", "update"}
	}
	return []string{"create"}
}

// upgrade is the 2018 POST /upgrade.
func (h *handler) upgrade(w http.ResponseWriter, r *http.Request) {
	b, err := decodeSeed(r, upgradeSchema)
	if err != nil {
		seed.WriteError(w, err)
		return
	}
	req, err := h.toRequest(r.Context(), b, "update")
	if err != nil {
		seed.WriteError(w, err)
		return
	}
	rel, err := h.in.Upgrade(r.Context(), req)
	if err != nil {
		seed.WriteError(w, h.chartMessage(r.Context(), req.Namespace, err))
		return
	}
	seed.Write(w, http.StatusOK, seedAnswer(rel, nil))
}

// deleteRequest is the body of the 2018 POST /delete, and the data of
// dev.berth.uninstall.requested.
type deleteRequest struct {
	ReleaseName string `json:"releaseName"`
	Namespace   string `json:"namespace"`
}

// deleteSeed is the 2018 POST /delete. The release name is lowercased, as
// 2018 lowercased it when it installed.
func (h *handler) deleteSeed(w http.ResponseWriter, r *http.Request) {
	var b deleteRequest
	if err := seed.Decode(r, deleteSchema, &b); err != nil {
		seed.WriteError(w, err)
		return
	}
	b.ReleaseName = strings.ToLower(b.ReleaseName)
	rel, err := h.uninstall(r, b)
	if err != nil {
		seed.WriteError(w, err)
		return
	}
	seed.Write(w, http.StatusOK, seedAnswer(rel, nil))
}

func (h *handler) deleteRelease(w http.ResponseWriter, r *http.Request) {
	rel, err := h.uninstall(r, deleteRequest{Namespace: r.PathValue("namespace"), ReleaseName: r.PathValue("name")})
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, rel)
}

// uninstall removes the release (idempotently) and emits release.uninstalled to
// K_SINK, so that the release's ports are freed whichever way it was asked.
func (h *handler) uninstall(r *http.Request, b deleteRequest) (release.Release, error) {
	b.Namespace = h.namespace(r.Context(), b.Namespace)
	if err := h.authorize(r.Context(), b.Namespace, b.ReleaseName, "delete"); err != nil {
		return release.Release{}, err
	}
	rel, _, err := h.in.Uninstall(r.Context(), b.Namespace, b.ReleaseName, 0)
	if err != nil {
		return release.Release{}, err
	}
	if err := h.emit.Emit(r.Context(), uninstalledEvent(rel, "")); err != nil {
		// The release is gone; a repeat of this request emits again.
		return release.Release{}, fmt.Errorf("%w: release.uninstalled: %v", function.ErrSink, err)
	}
	return rel, nil
}

func uninstalledEvent(rel release.Release, cause string) event.Event {
	e := event.New()
	e.SetType(events.ReleaseUninstalled)
	e.SetSubject(rel.Namespace + "/" + rel.Name)
	e.SetExtension(events.ExtensionTenant, rel.Namespace)
	if cause != "" {
		e.SetExtension(events.ExtensionCause, cause)
	}
	_ = e.SetData(cloudevents.ApplicationJSON, events.ReleaseUninstalledData{Release: eventRelease(rel)})
	return e
}

func eventRelease(r release.Release) events.Release {
	return events.Release{Name: r.Name, Namespace: r.Namespace, Revision: r.Revision, Status: r.Status,
		Chart: r.Chart, Version: r.Version, Services: r.Services}
}

// list answers the releases of the namespaces the caller may list releases in,
// asking before any release record is read.
func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	nss := h.allowed
	if ns := r.URL.Query().Get("namespace"); ns != "" {
		if err := h.authorize(r.Context(), ns, "", "list"); err != nil {
			problem.Write(w, err)
			return
		}
		nss = []string{ns}
	}
	// The namespaces are asked about and read at once, a few at a time.
	lists := make([][]release.Release, len(nss))
	g, ctx := errgroup.WithContext(r.Context())
	g.SetLimit(8)
	for i, ns := range nss {
		g.Go(func() (err error) {
			// The server recovers the handler's goroutine only.
			defer func() {
				if v := recover(); v != nil {
					err = fmt.Errorf("listing the releases of %s panicked: %v", ns, v)
				}
			}()
			ok, err := h.access.Allowed(ctx, auth.Attributes{Verb: "list", Resource: auth.Releases, Namespace: ns})
			if err != nil || !ok {
				return err
			}
			lists[i], err = h.in.List(ctx, ns)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		problem.Write(w, err)
		return
	}
	items := append([]release.Release{}, slices.Concat(lists...)...)
	function.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}

func (h *handler) status(w http.ResponseWriter, r *http.Request) {
	if err := h.authorize(r.Context(), r.PathValue("namespace"), r.PathValue("name"), "get"); err != nil {
		problem.Write(w, err)
		return
	}
	d, err := h.in.Status(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	ends, err := h.endpoints(r.Context(), d.Release)
	if err != nil {
		// The release is answered all the same; endpoints null says they
		// could not be read, where [] says there are none.
		function.Logger(r.Context()).Warn("endpoints not read", "error", err.Error())
	}
	function.WriteJSON(w, http.StatusOK, releaseStatus{Detail: d, Endpoints: ends})
}

// releaseStatus is GET /releases/{namespace}/{name}'s answer: the release,
// and where it is exposed.
type releaseStatus struct {
	release.Detail
	// Endpoints is null when the ledgers could not be read.
	Endpoints []endpoint `json:"endpoints"`
}

// endpoint is one exposed port of a release's Services: ip:port/protocol,
// and the entry point, backend, owner and Service behind it.
type endpoint struct {
	Address string `json:"endpoint"`
	expose.Endpoint
}

// endpoints are the ports bound, in the entry points' ledgers, to rel's
// Services: what the event chain (or setingress) exposed. The caller may
// read rel, in its namespace; a ledger entry names its Service's namespace,
// so nothing of another namespace is answered.
func (h *handler) endpoints(ctx context.Context, rel release.Release) ([]endpoint, error) {
	out := []endpoint{}
	if len(rel.Services) == 0 {
		return out, nil
	}
	all, err := h.exposures.List(ctx, reservation.Filter{})
	if err != nil {
		return nil, fmt.Errorf("read the entry points' ledgers: %w", err)
	}
	for _, e := range all {
		ns, name, _ := strings.Cut(e.Service, "/")
		if ns == rel.Namespace && slices.ContainsFunc(rel.Services, func(s events.Service) bool { return s.Name == name }) {
			out = append(out, endpoint{Address: e.String(), Endpoint: e})
		}
	}
	return out, nil
}

func (h *handler) history(w http.ResponseWriter, r *http.Request) {
	if err := h.authorize(r.Context(), r.PathValue("namespace"), r.PathValue("name"), "get"); err != nil {
		problem.Write(w, err)
		return
	}
	items, err := h.in.History(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
	if err != nil {
		problem.Write(w, err)
		return
	}
	function.WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}

// rollbackRequest is the body of POST /releases/{ns}/{name}/rollback; revision
// 0 or absent is the previous one.
type rollbackRequest struct {
	Revision int     `json:"revision"`
	Timeout  timeout `json:"timeout"`
}

// timeout is a request's duration ("90s", "5m"), checked as the body is read.
type timeout time.Duration

func (d *timeout) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timeout must be a duration such as \"90s\"")
	}
	if s == "" { // absent: the default
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return fmt.Errorf("timeout %q is not a duration such as \"90s\"", problem.Clip(s))
	}
	*d = timeout(v)
	return nil
}

func (h *handler) rollback(w http.ResponseWriter, r *http.Request) {
	if err := h.authorize(r.Context(), r.PathValue("namespace"), r.PathValue("name"), "update"); err != nil {
		problem.Write(w, err)
		return
	}
	var b rollbackRequest
	if r.ContentLength != 0 {
		if err := function.DecodeJSON(r, &b); err != nil {
			problem.Write(w, err)
			return
		}
	}
	rel, err := h.in.Rollback(r.Context(), r.PathValue("namespace"), r.PathValue("name"), b.Revision, time.Duration(b.Timeout))
	if err != nil {
		problem.Write(w, h.chartMessage(r.Context(), r.PathValue("namespace"), err))
		return
	}
	function.WriteJSON(w, http.StatusOK, rel)
}

// event consumes install.requested (replying release.installed or
// install.failed) and uninstall.requested (replying release.uninstalled).
func (h *handler) event(ctx context.Context, e event.Event) (*event.Event, error) {
	switch e.Type() {
	case events.InstallRequested:
		var b installRequest
		if err := function.DecodeData(e.Data(), &b); err != nil {
			return function.Reply(e, events.InstallFailed, err)
		}
		if b.ReleaseName == "" && b.ChartName != "" {
			// A redelivery of the same event names the same release.
			b.ReleaseName = derivedName(b.ChartName, e.Source()+"\x00"+e.ID())
		}
		req, err := h.toRequest(ctx, b, installVerbs(b)...)
		if err != nil {
			return function.Reply(e, events.InstallFailed, err)
		}
		rel, _, err := h.in.Install(ctx, req)
		if err != nil {
			return function.Reply(e, events.InstallFailed, err)
		}
		out := event.New()
		out.SetType(events.ReleaseInstalled)
		out.SetSubject(rel.Namespace + "/" + rel.Name)
		out.SetExtension(events.ExtensionCause, e.ID())
		if b.Expose != nil {
			out.SetExtension(events.ExtensionExpose, "true")
		}
		err = out.SetData(cloudevents.ApplicationJSON, events.ReleaseInstalledData{Release: eventRelease(rel), Expose: b.Expose})
		return &out, err
	case events.UninstallRequested:
		var b deleteRequest
		if err := function.DecodeData(e.Data(), &b); err != nil {
			return function.Reply(e, events.InstallFailed, err)
		}
		b.Namespace = h.namespace(ctx, b.Namespace)
		if err := h.authorize(ctx, b.Namespace, b.ReleaseName, "delete"); err != nil {
			return function.Reply(e, events.InstallFailed, err)
		}
		rel, _, err := h.in.Uninstall(ctx, b.Namespace, b.ReleaseName, 0)
		if err != nil {
			return function.Reply(e, events.InstallFailed, err)
		}
		out := uninstalledEvent(rel, e.ID())
		return &out, nil
	}
	return nil, fmt.Errorf("%w: %q", errUnexpectedEvent, e.Type())
}
