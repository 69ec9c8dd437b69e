// Package auth decides who is calling berth and what they may do, the Kubernetes
// way: a caller's bearer token is verified by TokenReview for berth's audience,
// and each operation is authorized by SubjectAccessReview on resources of the API
// group berth.dev in the namespace it touches, as a delegating API server does.
// Answers, refusals and denials included, are kept for a short while (by the
// token's hash, never the token); an API server that cannot be asked is not.
//
// Event deliveries are authenticated the same way (Knative Eventing sends an OIDC
// token, a ServiceAccount token for the subscriber's audience), authorized as
// "create events.berth.dev" in berth's own namespace, and then confined to the
// tenant namespace their berthtenant extension names: the Broker's EventPolicies
// decide who may send an event for which tenant.
package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/kubernetes"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/problem"
)

// Group is the API group of berth's resources in RBAC rules. No API server
// serves it: the rules exist to be asked about.
const Group = "berth.dev"

// The resources RBAC grants on, in the namespace an operation touches.
const (
	// Releases are Helm releases (create, update, delete, get, list).
	Releases = "releases"
	// Ports are reservations on entry points (create, delete, get, list).
	Ports = "ports"
	// Exposures are ports routed to Services (create, delete, get, list).
	Exposures = "exposures"
	// Events are event deliveries to berth's functions (create, in berth's own
	// namespace): what Knative's Trigger identities are granted.
	Events = "events"
)

// requestTypes are the events tenants send; each tenant's are rate-limited.
var requestTypes = []string{events.InstallRequested, events.UninstallRequested, events.PortRequested}

var (
	// ErrNoToken is a request without a bearer token.
	ErrNoToken = problem.New(problem.ErrUnauthenticated, "a bearer token for berth's audience is required")
	// ErrBadToken is a token the API server did not accept for berth's audience.
	ErrBadToken = problem.New(problem.ErrUnauthenticated, "the bearer token is not valid for berth's audience")
	// ErrDenied is an operation RBAC does not grant the caller.
	ErrDenied = problem.New(problem.ErrForbidden, "not allowed by RBAC")
	// ErrWrongTenant is an event that acts in a namespace other than its tenant's.
	ErrWrongTenant = problem.New(problem.ErrForbidden, "the event acts outside the namespace its berthtenant names")
	// ErrReview is a TokenReview or SubjectAccessReview that could not be made.
	ErrReview = problem.New(problem.ErrUnavailable, "the API server did not answer an access review")
)

// RateLimitedError is a caller over its request rate.
type RateLimitedError struct{ After time.Duration }

func (e *RateLimitedError) Error() string {
	return fmt.Sprintf("request rate over the caller's limit; retry in %s", e.After.Round(time.Millisecond))
}

// Unwrap makes it a 429.
func (e *RateLimitedError) Unwrap() error { return problem.ErrTooManyRequests }

// RetryAfter is when the caller may try again.
func (e *RateLimitedError) RetryAfter() time.Duration { return e.After }

// GuardSettings are the authentication part of a function's configuration.
type GuardSettings struct {
	// AuthAudience is the audience a caller's token must be issued for
	// (kubectl create token SA --audience berth, or a projected token).
	AuthAudience string `split_words:"true" default:"berth"`
	// AuthCacheTTL is how long a token review or an access review, allowed or
	// denied, is reused before the API server is asked again.
	AuthCacheTTL time.Duration `split_words:"true" default:"10s"`
	// RateLimitQPS and RateLimitBurst are each caller's token bucket. berth's
	// own ServiceAccounts (Knative's Trigger identities among them) are not limited.
	RateLimitQPS   float64 `envconfig:"RATE_LIMIT_QPS" default:"20"`
	RateLimitBurst int     `split_words:"true" default:"40"`
	// SystemNamespace is where berth runs: event deliveries are authorized there.
	SystemNamespace string `split_words:"true" default:"berth"`
}

// Validate reports values that parse but cannot work.
func (s GuardSettings) Validate() error {
	var errs []error
	if s.AuthAudience == "" {
		errs = append(errs, errors.New("AUTH_AUDIENCE must not be empty"))
	}
	if s.AuthCacheTTL <= 0 || s.AuthCacheTTL > 5*time.Minute {
		errs = append(errs, fmt.Errorf("AUTH_CACHE_TTL=%s: want more than 0 and at most 5m", s.AuthCacheTTL))
	}
	if s.RateLimitQPS <= 0 || s.RateLimitBurst <= 0 {
		errs = append(errs, errors.New("RATE_LIMIT_QPS and RATE_LIMIT_BURST must be positive"))
	}
	if len(validation.IsDNS1123Label(s.SystemNamespace)) > 0 {
		errs = append(errs, fmt.Errorf("SYSTEM_NAMESPACE=%q is not a namespace name", s.SystemNamespace))
	}
	return errors.Join(errs...)
}

// maxCallers bounds the rate limiters kept, least recently used first out.
const maxCallers = 10000

// Guard authenticates requests and authorizes operations. It makes no request
// and builds nothing until the first request needs it.
type Guard struct {
	s      GuardSettings
	client kubernetes.Interface

	once sync.Once
	rv   *reviewer

	limiters *lru.Cache[string, *rate.Limiter]
	mu       sync.Mutex
}

// New returns a Guard that asks the API server behind client.
func (s GuardSettings) New(client kubernetes.Interface) *Guard {
	l, _ := lru.New[string, *rate.Limiter](maxCallers)
	return &Guard{s: s, client: client, limiters: l}
}

func (g *Guard) init() *reviewer {
	g.once.Do(func() { g.rv = newReviewer(g.client, g.s.AuthAudience, g.s.AuthCacheTTL) })
	return g.rv
}

// Caller is who a request acts for.
type Caller struct {
	User user.Info
	// Delivery is set for an event delivery: the caller is the sender's
	// (Knative's) identity, and the event may act only in Tenant.
	Delivery bool
	Tenant   string
}

type callerKey struct{}

// WithCaller returns ctx carrying c.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the caller ctx carries.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

// Authenticate verifies r's bearer token for berth's audience and applies the
// caller's rate limit. It returns r's context with the caller in it.
func (g *Guard) Authenticate(r *http.Request) (context.Context, error) {
	// As the API server reads it: "Bearer <token>", one space, nothing after
	// the token but another space-separated word.
	parts := strings.SplitN(strings.TrimSpace(r.Header.Get("Authorization")), " ", 3)
	if len(parts) < 2 || !strings.EqualFold(parts[0], "bearer") || parts[1] == "" {
		return nil, ErrNoToken
	}
	token := parts[1]
	u, err := g.init().authenticate(r.Context(), token)
	switch {
	case err != nil:
		// Logged, not answered: the caller is not yet known.
		slog.Warn("token review failed", "error", err.Error())
		return nil, ErrReview
	case u == nil:
		return nil, ErrBadToken
	}
	if !g.ownServiceAccount(u) {
		if err := g.limit(u.GetName()); err != nil {
			return nil, err
		}
	}
	// The token has done its work: nothing after this point sees it.
	r.Header.Del("Authorization")
	return WithCaller(r.Context(), Caller{User: u}), nil
}

func (g *Guard) ownServiceAccount(u user.Info) bool {
	ns, _, err := serviceaccount.SplitUsername(u.GetName())
	return err == nil && ns == g.s.SystemNamespace
}

func (g *Guard) limit(name string) error {
	g.mu.Lock()
	l, ok := g.limiters.Get(name)
	if !ok {
		l = rate.NewLimiter(rate.Limit(g.s.RateLimitQPS), g.s.RateLimitBurst)
		g.limiters.Add(name, l)
	}
	g.mu.Unlock()
	res := l.Reserve()
	if d := res.Delay(); d > 0 {
		res.Cancel()
		return &RateLimitedError{After: d}
	}
	return nil
}

// AuthorizeDelivery checks that the caller of ctx may deliver events to berth,
// and returns ctx with the caller confined to the tenant e names.
func (g *Guard) AuthorizeDelivery(ctx context.Context, e event.Event) (context.Context, error) {
	c, ok := CallerFrom(ctx)
	if !ok {
		return nil, ErrNoToken
	}
	if err := g.check(ctx, c.User, Attributes{Verb: "create", Resource: Events, Namespace: g.s.SystemNamespace}); err != nil {
		return nil, err
	}
	tenant := Tenant(e)
	if tenant != "" && len(validation.IsDNS1123Label(tenant)) > 0 {
		return nil, fmt.Errorf("%w: %s is not a namespace name", ErrWrongTenant, events.ExtensionTenant)
	}
	// A tenant's requests come through berth's own (unlimited) identities: they
	// share one bucket per tenant. The chain's own events are not limited.
	if tenant != "" && slices.Contains(requestTypes, e.Type()) {
		if err := g.limit("tenant:" + tenant); err != nil {
			return nil, err
		}
	}
	c.Delivery, c.Tenant = true, tenant
	return WithCaller(ctx, c), nil
}

// Tenant is the namespace event e acts in, by its berthtenant extension ("" if
// it names none).
func Tenant(e event.Event) string {
	t, _ := e.Extensions()[events.ExtensionTenant].(string)
	return t
}

// Attributes name one operation on one of berth's resources.
type Attributes struct {
	Verb        string
	Resource    string
	Subresource string
	// Namespace is where the operation acts; "" for a cluster-wide one.
	Namespace string
	Name      string
}

func (a Attributes) String() string {
	s := a.Verb + " " + a.Resource
	if a.Subresource != "" {
		s += "/" + a.Subresource
	}
	s += "." + Group
	if a.Namespace != "" {
		s += " in namespace " + a.Namespace
	}
	return s
}

// Check authorizes the operation a for the caller of ctx: by RBAC for a caller,
// and by the tenant for an event delivery (its berthtenant must name the
// namespace the operation acts in).
func (g *Guard) Check(ctx context.Context, a Attributes) error {
	c, ok := CallerFrom(ctx)
	if !ok {
		return ErrNoToken
	}
	if c.Delivery {
		if a.Namespace != c.Tenant {
			return fmt.Errorf("%w: it names %q and acts in %q", ErrWrongTenant, c.Tenant, a.Namespace)
		}
		return nil
	}
	return g.check(ctx, c.User, a)
}

// Allowed reports whether the caller of ctx may do a; a denial is not an error.
func (g *Guard) Allowed(ctx context.Context, a Attributes) (bool, error) {
	err := g.Check(ctx, a)
	if errors.Is(err, problem.ErrForbidden) {
		return false, nil
	}
	return err == nil, err
}

// check asks whether u may do a. A question about one object (a release, a
// port) first asks about every object of its kind in the namespace: RBAC only
// grants, so a caller allowed every name is allowed this one, and that answer
// is kept for every name it asks about next, where the named answer would be
// kept for one. A caller granted some names only (resourceNames) is asked
// about the name as well.
func (g *Guard) check(ctx context.Context, u user.Info, a Attributes) error {
	rv := g.init()
	ok, err := false, error(nil)
	if a.Name != "" {
		every := a
		every.Name = ""
		// Unanswered, the question about the name decides.
		if ok, err = rv.allowed(ctx, u, every); err != nil {
			ok = false
		}
	}
	if !ok {
		ok, err = rv.allowed(ctx, u, a)
	}
	if err != nil {
		slog.Warn("subject access review failed", "error", err.Error())
		return ErrReview
	}
	if !ok {
		return fmt.Errorf("%w: %s may not %s", ErrDenied, problem.Clip(u.GetName()), a)
	}
	return nil
}

// HomeNamespace is the namespace a caller acts in when a request names none:
// an event delivery's tenant, or a ServiceAccount's own namespace. It is ""
// for other callers.
func HomeNamespace(ctx context.Context) string {
	c, ok := CallerFrom(ctx)
	switch {
	case !ok:
		return ""
	case c.Delivery:
		return c.Tenant
	}
	ns, _, err := serviceaccount.SplitUsername(c.User.GetName())
	if err != nil {
		return ""
	}
	return ns
}

// DefaultNamespace is where a request that names no namespace acts, the same
// for every function so that a 2018 client's install, getport and setrule
// meet: the caller's home namespace if it is one of allowed, else the first
// of allowed ("" when allowed is empty and the caller has no home).
func DefaultNamespace(ctx context.Context, allowed []string) string {
	home := HomeNamespace(ctx)
	if len(allowed) == 0 || slices.Contains(allowed, home) {
		return home
	}
	return allowed[0]
}

// Allower answers whether the caller of ctx may do a: Guard.Allowed.
type Allower interface {
	Allowed(ctx context.Context, a Attributes) (bool, error)
}

// Access authorizes the caller of a request: Guard. Every function's handler
// takes one; its tests pass what suits them.
type Access interface {
	Allower
	Check(ctx context.Context, a Attributes) error
}

// Visible keeps the items in namespaces where the caller of ctx may list
// resource, asking once per namespace. An item whose namespace is "" is kept
// only for a caller who may list resource cluster-wide.
func Visible[T any](ctx context.Context, ac Allower, resource string, items []T, namespace func(T) string) ([]T, error) {
	allowed := map[string]bool{}
	out := []T{}
	for _, it := range items {
		ns := namespace(it)
		ok, seen := allowed[ns]
		if !seen {
			var err error
			if ok, err = ac.Allowed(ctx, Attributes{Verb: "list", Resource: resource, Namespace: ns}); err != nil {
				return nil, err
			}
			allowed[ns] = ok
		}
		if ok {
			out = append(out, it)
		}
	}
	return out, nil
}
