package function

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/berth-dev/berth/pkg/events"
	"github.com/berth-dev/berth/pkg/problem"
)

var errTooBusy = problem.New(problem.ErrConflict, "still conflicting")

// echo replies to dev.berth.test.requested with dev.berth.test.done carrying the
// request's data, and fails the other test types in telling ways.
func echo(_ context.Context, e event.Event) (*event.Event, error) {
	switch e.Type() {
	case "dev.berth.test.requested":
		r := event.New()
		r.SetType("dev.berth.test.done")
		r.SetExtension("inreplyto", e.ID())
		if err := r.SetData(cloudevents.ApplicationJSON, e.Data()); err != nil {
			return nil, err
		}
		return &r, nil
	case "dev.berth.test.ignored":
		return nil, nil
	case "dev.berth.test.conflicted":
		return nil, errTooBusy
	case "dev.berth.test.panicked":
		panic("boom")
	}
	return nil, errors.New("unexpected type")
}

func testConfig() Config {
	return Config{MaxRequestBytes: 4096, Port: 0}
}

func newTestServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	s := NewServer(cfg, Function{Name: "test", Events: echo}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv
}

func request(id string) event.Event {
	e := event.New()
	e.SetID(id)
	e.SetType("dev.berth.test.requested")
	e.SetSource("/test")
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]string{"shell": "$(rm -rf /); `x`"})
	return e
}

func TestReplyBinaryAndStructured(t *testing.T) {
	srv := newTestServer(t, testConfig())
	c, err := cloudevents.NewClientHTTP(cloudevents.WithTarget(srv.URL))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"binary", "structured"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			if mode == "structured" {
				ctx = binding.WithForceStructured(ctx)
			}
			in := request("id-" + mode)
			reply, res := c.Request(ctx, in)
			if !cloudevents.IsACK(res) {
				t.Fatalf("Request(%s) result = %v, want ACK", mode, res)
			}
			if reply == nil {
				t.Fatalf("Request(%s) reply = nil, want an event", mode)
			}
			if got, want := reply.Type(), "dev.berth.test.done"; got != want {
				t.Errorf("reply type = %q, want %q", got, want)
			}
			if got := reply.Extensions()["inreplyto"]; got != in.ID() {
				t.Errorf("reply inreplyto = %v, want %q", got, in.ID())
			}
			if reply.ID() == "" || reply.Source() != "/berth/test" || reply.Time().IsZero() {
				t.Errorf("reply = %v, want id, source /berth/test and time filled in", reply)
			}
			if string(reply.Data()) != string(in.Data()) {
				t.Errorf("reply data = %s, want %s", reply.Data(), in.Data())
			}
		})
	}
}

func TestReplyModeFollowsRequest(t *testing.T) {
	srv := newTestServer(t, testConfig())
	body := `{"specversion":"1.0","id":"s1","type":"dev.berth.test.requested","source":"/t","datacontenttype":"application/json","data":{"a":1}}`
	resp, err := http.Post(srv.URL, "application/cloudevents+json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/cloudevents+json") {
		t.Errorf("structured request answered with Content-Type %q, want application/cloudevents+json", ct)
	}
}

func TestBadEvents(t *testing.T) {
	srv := newTestServer(t, testConfig())
	binary := func(h map[string]string) http.Header {
		hh := http.Header{"Content-Type": {"application/json"}}
		for k, v := range h {
			hh.Set(k, v)
		}
		return hh
	}
	tests := []struct {
		name   string
		header http.Header
		body   string
		status int
	}{
		{"not an event", http.Header{"Content-Type": {"application/json"}}, `{"a":1}`, 400},
		{"binary without id", binary(map[string]string{"Ce-Specversion": "1.0", "Ce-Type": "dev.berth.test.requested", "Ce-Source": "/t"}), `{}`, 400},
		{"binary without type", binary(map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Source": "/t"}), `{}`, 400},
		{"binary unknown specversion", binary(map[string]string{"Ce-Specversion": "9.9", "Ce-Id": "1", "Ce-Type": "x", "Ce-Source": "/t"}), `{}`, 400},
		{"structured not JSON", http.Header{"Content-Type": {"application/cloudevents+json"}}, `{"specversion":`, 400},
		{"structured without source", http.Header{"Content-Type": {"application/cloudevents+json"}}, `{"specversion":"1.0","id":"1","type":"x"}`, 400},
		{"batch", http.Header{"Content-Type": {"application/cloudevents-batch+json"}}, `[]`, 400},
		{"too large", binary(map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Type": "dev.berth.test.requested", "Ce-Source": "/t"}), `"` + strings.Repeat("x", 5000) + `"`, 413},
		{"handler conflict", binary(map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Type": "dev.berth.test.conflicted", "Ce-Source": "/t"}), `{}`, 409},
		{"handler panic", binary(map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Type": "dev.berth.test.panicked", "Ce-Source": "/t"}), `{}`, 500},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(tc.body))
			req.Header = tc.header
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Errorf("POST %s: status = %d, want %d", tc.name, resp.StatusCode, tc.status)
			}
			checkProblem(t, resp, tc.status)
		})
	}
}

// checkProblem asserts resp carries a small problem body for status.
func checkProblem(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Errorf("Content-Type = %q, want %q", ct, problem.ContentType)
	}
	b, _ := io.ReadAll(resp.Body)
	if len(b) >= 1024 {
		t.Errorf("problem body is %d bytes, want under 1 KiB", len(b))
	}
	var d problem.Details
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("problem body %q: %v", b, err)
	}
	if d.Status != status || d.Type == "" || d.Title == "" {
		t.Errorf("problem = %+v, want status %d with type and title", d, status)
	}
}

func TestNoReply(t *testing.T) {
	srv := newTestServer(t, testConfig())
	c, _ := cloudevents.NewClientHTTP(cloudevents.WithTarget(srv.URL))
	e := request("n1")
	e.SetType("dev.berth.test.ignored")
	reply, res := c.Request(context.Background(), e)
	if !cloudevents.IsACK(res) || reply != nil {
		t.Errorf("Request(ignored) = %v, %v; want no reply and an ACK", reply, res)
	}
}

func TestReplyGoesToSinkWithOverrides(t *testing.T) {
	got := make(chan event.Event, 1)
	sinkProto, err := cloudevents.NewHTTP()
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudevents.NewHTTPReceiveHandler(context.Background(), sinkProto, func(e event.Event) { got <- e })
	if err != nil {
		t.Fatal(err)
	}
	sink := httptest.NewServer(h)
	defer sink.Close()

	cfg := testConfig()
	u, _ := url.Parse(sink.URL)
	cfg.Sink = URL{u}
	if err := cfg.CEOverrides.Decode(`{"extensions":{"berthrun":"local"}}`); err != nil {
		t.Fatal(err)
	}
	srv := newTestServer(t, cfg)
	c, _ := cloudevents.NewClientHTTP(cloudevents.WithTarget(srv.URL))
	reply, res := c.Request(context.Background(), request("k1"))
	if !cloudevents.IsACK(res) || reply == nil {
		t.Fatalf("Request = %v, %v; want a reply", reply, res)
	}
	select {
	case e := <-got:
		if e.ID() != reply.ID() || e.Extensions()["berthrun"] != "local" {
			t.Errorf("sink got %v, want reply %s with extension berthrun=local", e, reply.ID())
		}
	default:
		t.Fatal("sink received nothing")
	}

	// A sink that refuses makes the event fail with 503, so that it is redelivered.
	sink.Close()
	resp, err := http.DefaultClient.Do(mustRequest(t, srv.URL, request("k2")))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("with a dead sink: status = %d, want 503", resp.StatusCode)
	}
	checkProblem(t, resp, http.StatusServiceUnavailable)
}

func mustRequest(t *testing.T, target string, e event.Event) *http.Request {
	t.Helper()
	b, _ := json.Marshal(e)
	req, _ := http.NewRequest(http.MethodPost, target, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/cloudevents+json")
	return req
}

func TestRoutes(t *testing.T) {
	srv := newTestServer(t, testConfig())
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/nothing": 404} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
		if path == "/nothing" && resp.Header.Get("X-Request-Id") == "" {
			t.Errorf("GET %s carries no X-Request-Id", path)
		}
	}
}

// A failure reply carries its cause's subject, so that a caller matches it to
// what it asked for; a redeliverable error is no reply at all.
func TestReplyFailureCarriesSubject(t *testing.T) {
	in := request("id-subject")
	in.SetSubject("team-a/gw-1")
	out, err := Reply(in, "dev.berth.test.failed", problem.ErrForbidden)
	if err != nil || out == nil {
		t.Fatalf("Reply = %v, %v; want a failure event", out, err)
	}
	if out.Subject() != "team-a/gw-1" || out.Type() != "dev.berth.test.failed" || out.Extensions()[events.ExtensionCause] != "id-subject" {
		t.Errorf("failure = %v, want subject team-a/gw-1, type dev.berth.test.failed, berthcause id-subject", out)
	}
	if out, err := Reply(request("id-none"), "dev.berth.test.failed", problem.ErrForbidden); err != nil || out.Subject() != "" {
		t.Errorf("without a subject: %v, %v; want none", out, err)
	}
	if out, err := Reply(in, "dev.berth.test.failed", problem.ErrUnavailable); out != nil || err == nil {
		t.Errorf("503: %v, %v; want the error, for a redelivery", out, err)
	}
}

// A tenant's event echoes only a subject in the tenant's namespace.
func TestReplyFailureSubjectStaysInTenant(t *testing.T) {
	for subject, want := range map[string]string{"team-a/gw-1": "team-a/gw-1", "team-b/gw-1": "", "team-a": "", "team-ab/x": ""} {
		in := request("id-" + subject)
		in.SetExtension(events.ExtensionTenant, "team-a")
		in.SetSubject(subject)
		out, err := Reply(in, "dev.berth.test.failed", problem.ErrForbidden)
		if err != nil || out.Subject() != want {
			t.Errorf("subject %q: reply %v, %v; want subject %q", subject, out, err, want)
		}
	}
}
