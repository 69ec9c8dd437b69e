package release

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/pkg/problem"
)

// counting is a loopback server that counts what it receives, and whether any
// request carried credentials.
type counting struct {
	*httptest.Server
	requests, withAuth atomic.Int32
}

func newCounting(t *testing.T, h http.HandlerFunc) *counting {
	c := &counting{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.requests.Add(1)
		if r.Header.Get("Authorization") != "" {
			c.withAuth.Add(1)
		}
		h(w, r)
	}))
	t.Cleanup(c.Close)
	return c
}

// TestHostileSources: redirects to unlisted sources, credentials for another
// source and unanswered sources are refused with their 4xx or 503; the
// unlisted server receives nothing, and no answer carries dial detail.
func TestHostileSources(t *testing.T) {
	ctx := context.Background()
	unlisted := newCounting(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 404) })
	other := newCounting(t, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 404) })
	allowed := newCounting(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/redirect/index.yaml":
			http.Redirect(w, r, unlisted.URL+"/index.yaml", http.StatusFound)
		case "/team/hop/index.yaml":
			http.Redirect(w, r, other.URL+"/index.yaml", http.StatusFound)
		case "/ipv6/index.yaml":
			http.Redirect(w, r, "http://[::1]:1/index.yaml", http.StatusFound)
		default:
			http.Error(w, "no", 404)
		}
	})
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + closed.Addr().String()
	closed.Close()

	p := Policy{Sources: []string{allowed.URL, other.URL, deadURL}, AllowPrivateAddresses: true}
	f := NewFetcher(FetcherOptions{Policy: p, MaxChartBytes: 1 << 20, CacheEntries: 4, IndexTTL: time.Minute,
		Repos: map[string]string{"stable": allowed.URL}})
	credsFor := func(src string) *Credentials {
		return &Credentials{Ref: "ns/creds", Source: src, Username: "robot", Password: "hunter2"}
	}
	tests := []struct {
		name   string
		ref    ChartRef
		want   int
		target *counting
	}{
		{"a redirect to an unlisted source", ChartRef{Name: "gw", Repo: allowed.URL + "/redirect"}, 403, unlisted},
		{"a redirect to an IPv6 literal off the list", ChartRef{Name: "gw", Repo: allowed.URL + "/ipv6"}, 403, nil},
		{"credentials for another source", ChartRef{Name: "gw", Repo: other.URL, Credentials: credsFor(allowed.URL)}, 403, other},
		{"credentials for a look-alike path", ChartRef{Name: "gw", Repo: allowed.URL + "/teamb", Credentials: credsFor(allowed.URL + "/team")}, 403, nil},
		{"a configured repository's look-alike host", ChartRef{Name: "gw", Repo: strings.Replace(allowed.URL, "127.0.0.1", "127.0.0.1.nip.io", 1)}, 403, nil},
		{"a configured repository behind userinfo", ChartRef{Name: "gw", Repo: "http://" + strings.TrimPrefix(allowed.URL, "http://") + "@evil.example"}, 400, nil},
		{"a source that does not answer", ChartRef{Name: "gw", Repo: deadURL}, 503, nil},
		{"credentials redirected to another allowed source", ChartRef{Name: "gw", Repo: allowed.URL + "/team/hop", Credentials: credsFor(allowed.URL + "/team")}, 422, nil},
	}
	for _, tc := range tests {
		before := int32(0)
		if tc.target != nil {
			before = tc.target.requests.Load()
		}
		_, _, err := f.Load(ctx, tc.ref)
		if got := problem.Status(err); got != tc.want {
			t.Errorf("%s: Load = %v (%d), want %d", tc.name, err, got, tc.want)
		}
		if tc.target != nil && tc.target.requests.Load() != before {
			t.Errorf("%s: the refused server received %d requests", tc.name, tc.target.requests.Load()-before)
		}
		if d := problem.For(err).Detail; strings.Contains(d, "refused") || strings.Contains(d, "dial") || strings.Contains(d, "hunter2") {
			t.Errorf("%s: the answer tells %q", tc.name, d)
		}
	}
	if n := unlisted.withAuth.Load() + other.withAuth.Load(); n != 0 {
		t.Errorf("credentials reached %d requests of other sources", n)
	}
	// The loopback default: a private address is refused when dialled.
	strict := NewFetcher(FetcherOptions{Policy: Policy{Sources: []string{allowed.URL}}, MaxChartBytes: 1 << 20, CacheEntries: 4, IndexTTL: time.Minute})
	if _, _, err := strict.Load(ctx, ChartRef{Name: "gw", Repo: allowed.URL}); !errors.Is(err, ErrSourceNotAllowed) {
		t.Errorf("loopback without AllowPrivateAddresses: %v, want ErrSourceNotAllowed", err)
	}
}
