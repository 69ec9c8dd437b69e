package auth_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/function"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
	"github.com/berth-dev/berth/pkg/testing/localrun"
)

var cp *controlplane.ControlPlane

func TestMain(m *testing.M) { os.Exit(controlplane.RunTests(m, &cp)) }

var settings = auth.GuardSettings{AuthAudience: "berth", AuthCacheTTL: time.Minute, RateLimitQPS: 1000, RateLimitBurst: 1000, SystemNamespace: "berth"}

// reviews counts the access reviews a client sends, by resource.
type reviews struct{ token, access atomic.Int32 }

func (rv *reviews) client(t testing.TB, cfg *rest.Config) kubernetes.Interface {
	c := rest.CopyConfig(cfg)
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			switch {
			case strings.HasSuffix(r.URL.Path, "/tokenreviews"):
				rv.token.Add(1)
			case strings.HasSuffix(r.URL.Path, "/subjectaccessreviews"):
				rv.access.Add(1)
			}
			return rt.RoundTrip(r)
		})
	})
	return kubernetes.NewForConfigOrDie(c)
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// tenant makes ServiceAccount ns/name, bound to the ClusterRole berth-tenant-test
// (releases: get) in ns, and returns a token for audience.
func tenant(t testing.TB, ns, name, audience string) string {
	t.Helper()
	ctx := context.Background()
	_, err := cp.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "berth-tenant-test"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"berth.dev"}, Resources: []string{"releases"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if err := localrun.ServiceAccount(ctx, cp.Client, ns, name, "berth-tenant-test"); err != nil {
		t.Fatal(err)
	}
	return mint(t, ns, name, audience)
}

func mint(t testing.TB, ns, name, audience string) string {
	t.Helper()
	tok, err := localrun.Token(context.Background(), cp.Client, ns, name, audience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func request(token string) *http.Request {
	r := httptest.NewRequest("GET", "/releases", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	return r
}

// TestGuard: tokens are checked for berth's audience, answers are cached,
// denials and bad tokens too, and an API server that cannot be asked is a 503,
// not a 401.
func TestGuard(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	good := tenant(t, ns, "alice", "berth")
	var rv reviews
	g := settings.New(rv.client(t, cp.Config))

	tests := []struct {
		name   string
		header string
		want   int
	}{
		{"no header", "", 401},
		{"empty bearer", "Bearer ", 401},
		{"basic", "Basic YTpi", 401},
		{"not a JWT", "Bearer nope", 401},
		{"another audience", "Bearer " + mint(t, ns, "alice", "kubernetes"), 401},
		{"two spaces", "Bearer  " + good, 401},
		{"berth's audience", "Bearer " + good, 200},
		{"lower-case scheme, a word after", "bearer " + good + " extra", 200},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		_, err := g.Authenticate(r)
		if got := problem.Status(err); got != tc.want {
			t.Errorf("%s: Authenticate = %v (%d), want %d", tc.name, err, got, tc.want)
		}
		if err == nil && r.Header.Get("Authorization") != "" {
			t.Errorf("%s: the token is still on the request after authentication", tc.name)
		}
	}

	rv.token.Store(0)
	for range 10 {
		if _, err := g.Authenticate(request(good)); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Authenticate(request("bad-token")); !errors.Is(err, auth.ErrBadToken) {
			t.Fatalf("bad token: %v", err)
		}
	}
	if n := rv.token.Load(); n != 1 {
		t.Errorf("20 authentications of a known good and a known bad token sent %d TokenReviews, want 1 (the bad one's)", n)
	}

	ctx, err := g.Authenticate(request(good))
	if err != nil {
		t.Fatal(err)
	}
	rv.access.Store(0)
	for range 10 {
		if err := g.Check(ctx, auth.Attributes{Verb: "get", Resource: auth.Releases, Namespace: ns}); err != nil {
			t.Fatalf("allowed: %v", err)
		}
		if err := g.Check(ctx, auth.Attributes{Verb: "delete", Resource: auth.Releases, Namespace: ns}); problem.Status(err) != 403 {
			t.Fatalf("denied: %v", err)
		}
	}
	if n := rv.access.Load(); n != 2 {
		t.Errorf("20 checks of one allowed and one denied operation sent %d SubjectAccessReviews, want 2", n)
	}
	if got := auth.HomeNamespace(ctx); got != ns {
		t.Errorf("HomeNamespace = %q, want the ServiceAccount's %q", got, ns)
	}

	// A question too long to keep (a name from a request body) is asked
	// every time rather than kept. (The question about every name, denied,
	// was asked above and kept.)
	rv.access.Store(0)
	long := auth.Attributes{Verb: "delete", Resource: auth.Releases, Namespace: ns, Name: strings.Repeat("x", 20000)}
	for range 3 {
		if err := g.Check(ctx, long); problem.Status(err) != 403 {
			t.Fatalf("denied, long name: %v", err)
		}
	}
	if n := rv.access.Load(); n != 3 {
		t.Errorf("3 checks with a 20,000-byte name sent %d SubjectAccessReviews, want 3 (not kept)", n)
	}

	c, _ := auth.CallerFrom(ctx)
	if groups := c.User.GetGroups(); !slices.Contains(groups, "system:authenticated") || !slices.Contains(groups, "system:serviceaccounts:"+ns) {
		t.Errorf("caller's groups = %v, want system:authenticated and its ServiceAccount groups", groups)
	}

	// Callers that arrive together with a token not yet known share one review.
	fresh := mint(t, ns, "alice", "berth")
	rv.token.Store(0)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := g.Authenticate(request(fresh)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := rv.token.Load(); n != 1 {
		t.Errorf("8 concurrent authentications of one new token sent %d TokenReviews, want 1", n)
	}

	// An API server that does not answer: 503, so that callers retry; what
	// could not be asked is not kept as an answer.
	dead := settings.New(kubernetes.NewForConfigOrDie(&rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second}))
	if _, err := dead.Authenticate(request(good)); problem.Status(err) != 503 {
		t.Errorf("Authenticate with the API server down = %v, want 503", err)
	}
	if err := dead.Check(ctx, auth.Attributes{Verb: "get", Resource: auth.Releases, Namespace: ns}); problem.Status(err) != 503 {
		t.Errorf("Check with the API server down = %v, want 503", err)
	}
}

// inForce waits until the API server itself allows user (a ServiceAccount)
// a: the authorizer sees a new binding a moment later, and the guard keeps a
// denial for its TTL.
func inForce(t *testing.T, user string, a authorizationv1.ResourceAttributes) {
	t.Helper()
	sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user, Groups: []string{"system:serviceaccounts"}, ResourceAttributes: &a}}
	for i := 0; ; i++ {
		r, err := cp.Client.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed {
			return
		}
		if i == 100 {
			t.Fatalf("%s may not %+v yet: %+v", user, a, r.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCheckNamed: a question about one object is answered, and kept, for
// every name when the caller may act on every name of the namespace; a caller
// granted some names (resourceNames) only is allowed those and no other.
func TestCheckNamed(t *testing.T) {
	cp.Require(t)
	ctx := context.Background()
	ns := cp.Namespace(t)
	var rv reviews
	g := settings.New(rv.client(t, cp.Config))
	caller := func(token string) context.Context {
		c, err := g.Authenticate(request(token))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	every := caller(tenant(t, ns, "alice", "berth"))
	inForce(t, "system:serviceaccount:"+ns+":alice", authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Group: "berth.dev", Resource: "releases"})
	rv.access.Store(0)
	for i := range 10 {
		if err := g.Check(every, auth.Attributes{Verb: "get", Resource: auth.Releases, Namespace: ns, Name: fmt.Sprintf("r%d", i)}); err != nil {
			t.Fatalf("get r%d: %v", i, err)
		}
	}
	if n := rv.access.Load(); n != 1 {
		t.Errorf("10 gets of 10 releases by a caller who may get every release sent %d SubjectAccessReviews, want 1", n)
	}

	_, err := cp.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "one-release"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"berth.dev"}, Resources: []string{"releases"}, Verbs: []string{"get"}, ResourceNames: []string{"gw"}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "bob"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = cp.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "bob"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "one-release"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "bob", Namespace: ns}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	inForce(t, "system:serviceaccount:"+ns+":bob", authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Group: "berth.dev", Resource: "releases", Name: "gw"})
	one := caller(mint(t, ns, "bob", "berth"))
	rv.access.Store(0)
	for range 3 {
		if err := g.Check(one, auth.Attributes{Verb: "get", Resource: auth.Releases, Namespace: ns, Name: "gw"}); err != nil {
			t.Errorf("bob gets gw: %v", err)
		}
		if err := g.Check(one, auth.Attributes{Verb: "get", Resource: auth.Releases, Namespace: ns, Name: "other"}); problem.Status(err) != 403 {
			t.Errorf("bob gets other = %v, want 403", err)
		}
		if err := g.Check(one, auth.Attributes{Verb: "get", Resource: auth.Releases, Namespace: ns}); problem.Status(err) != 403 {
			t.Errorf("bob gets every release = %v, want 403", err)
		}
	}
	if n := rv.access.Load(); n != 3 {
		t.Errorf("bob's 9 checks sent %d SubjectAccessReviews, want 3 (every name, gw, other; each kept)", n)
	}
}

// TestRateLimit: a caller past its burst gets 429 with a wait; another caller
// does not; berth's own ServiceAccounts are not limited.
func TestRateLimit(t *testing.T) {
	cp.Require(t)
	ns := cp.Namespace(t)
	s := settings
	s.RateLimitQPS, s.RateLimitBurst, s.SystemNamespace = 1, 3, ns
	g := s.New(cp.Client)
	other := cp.Namespace(t)
	fast, calm, own := tenant(t, other, "fast", "berth"), tenant(t, other, "calm", "berth"), tenant(t, ns, "trigger", "berth")
	var statuses []int
	for range 5 {
		_, err := g.Authenticate(request(fast))
		statuses = append(statuses, problem.Status(err))
		var rl *auth.RateLimitedError
		if errors.As(err, &rl) && rl.RetryAfter() <= 0 {
			t.Errorf("429 without a wait: %v", err)
		}
	}
	if !slices.Equal(statuses, []int{200, 200, 200, 429, 429}) {
		t.Errorf("5 requests at once, burst 3: %v", statuses)
	}
	if _, err := g.Authenticate(request(calm)); err != nil {
		t.Errorf("another caller: %v", err)
	}
	for range 10 {
		if _, err := g.Authenticate(request(own)); err != nil {
			t.Fatalf("berth's own ServiceAccount: %v", err)
		}
	}

	// Deliveries: a tenant's requests share one bucket; the chain's events do not count.
	ctx := context.Background()
	if _, err := cp.Client.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "delivery"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"berth.dev"}, Resources: []string{"events"}, Verbs: []string{"create"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "delivery"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "delivery"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "trigger"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	inForce(t, "system:serviceaccount:"+ns+":trigger", authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Group: "berth.dev", Resource: "events"})
	dctx, err := g.Authenticate(request(own))
	if err != nil {
		t.Fatal(err)
	}
	deliver := func(typ, tenant string) int {
		e := event.New()
		e.SetType(typ)
		e.SetExtension(events.ExtensionTenant, tenant)
		var err error
		for range 20 { // the delivery Role may take a moment to be seen
			if _, err = g.AuthorizeDelivery(dctx, e); !errors.Is(err, auth.ErrDenied) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		return problem.Status(err)
	}
	statuses = nil
	for range 5 {
		statuses = append(statuses, deliver(events.InstallRequested, "team-a"))
	}
	if !slices.Equal(statuses, []int{200, 200, 200, 429, 429}) {
		t.Errorf("5 install.requested of one tenant at once, burst 3: %v", statuses)
	}
	if s := deliver(events.ReleaseInstalled, "team-a"); s != 200 {
		t.Errorf("the chain's release.installed for a limited tenant: %d, want 200", s)
	}
	if s := deliver(events.InstallRequested, "team-b"); s != 200 {
		t.Errorf("another tenant's install.requested: %d, want 200", s)
	}
}

// BenchmarkAuthentication prints, in one run, the latency of a request that
// reads the API server (as berth's routes do) served with authentication and
// authorization, warm caches, beside the same request served without.
func BenchmarkAuthentication(b *testing.B) {
	cp.Require(b)
	const n = 400
	ns := cp.Namespace(b)
	token := tenant(b, ns, "bench", "berth")
	g := settings.New(cp.Client)
	route := func(check bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if check {
				if err := g.Check(r.Context(), auth.Attributes{Verb: "get", Resource: auth.Releases, Namespace: ns}); err != nil {
					problem.Write(w, err)
					return
				}
			}
			if _, err := cp.Client.CoreV1().ConfigMaps(ns).List(r.Context(), metav1.ListOptions{}); err != nil {
				problem.Write(w, err)
				return
			}
			w.WriteHeader(http.StatusOK)
		})
	}
	serve := func(gate function.Gate, check bool) string {
		s := function.NewServer(function.Config{MaxRequestBytes: 1 << 10}, function.Function{Name: "bench", API: route(check), Gate: gate}, slog.New(slog.DiscardHandler))
		srv := httptest.NewServer(s.Handler())
		b.Cleanup(srv.Close)
		return srv.URL
	}
	open, guarded := serve(nil, false), serve(g, true)
	measure := func(url, token string) time.Duration {
		lat := make([]time.Duration, n)
		for i := range n {
			req, _ := http.NewRequest("GET", url, nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			s := time.Now()
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("GET = %v, %v", resp, err)
			}
			resp.Body.Close()
			lat[i] = time.Since(s)
		}
		slices.Sort(lat)
		return lat[n/2]
	}
	for range b.N {
		measure(guarded, token) // warm the caches and connections
		measure(open, "")
		// Interleaved halves, so that drift hits both alike.
		o1, g1 := measure(open, ""), measure(guarded, token)
		o2, g2 := measure(open, ""), measure(guarded, token)
		om, gm := (o1+o2)/2, (g1+g2)/2
		ratio := float64(gm) / float64(om)
		b.ReportMetric(float64(gm.Microseconds())/1000, "authenticated-ms")
		b.ReportMetric(float64(om.Microseconds())/1000, "open-ms")
		b.ReportMetric(ratio, "ratio")
		b.Logf("\n  a request that lists ConfigMaps, median of 2x%d, warm caches\n"+
			"  authenticated and authorized (TokenReview + SubjectAccessReview, cached): %6.3f ms\n"+
			"  without authentication:                                                    %6.3f ms\n"+
			"  ratio: %.3f (goal at most 1.1)", n, float64(gm.Microseconds())/1000, float64(om.Microseconds())/1000, ratio)
	}
}
