// Package function is the runtime every berth function shares: an HTTP server on
// Knative's $PORT with timeouts, health routes and a graceful drain, a CloudEvents
// receiver in the same mux, JSON logs with per-request ids, bounded request bodies,
// and problem-shaped error answers.
package function

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/berth-dev/berth/pkg/auth"
	"github.com/berth-dev/berth/pkg/problem"
	"github.com/berth-dev/berth/pkg/seed"
	"github.com/berth-dev/berth/pkg/telemetry"
)

// Function is what a berth function serves.
type Function struct {
	// Name names the function in logs, event sources and user agents.
	Name string
	// API serves the function's HTTP routes. May be nil.
	API http.Handler
	// Events handles CloudEvents posted to "/". May be nil.
	Events EventHandler
	// Gate authenticates every request but /healthz and /readyz, and
	// authorizes event deliveries. Every function's Main sets it.
	Gate Gate
	// Warm, when set, is called once before the server listens, and must
	// return at once: it starts, in the background, work that every request
	// needs (the API server's connection and TLS handshake), so that it is
	// begun before the first request arrives rather than by it.
	Warm func(context.Context)
	// Seed are the function's routes of the 2018 API: their paths match as
	// Express matched them (any case, a trailing slash), and a request
	// refused before its handler (unauthenticated, too large) is answered in
	// the 2018 shape (seed.WriteError).
	Seed []string
}

// Gate is who may call a function: auth.Guard.
type Gate interface {
	// Authenticate verifies the request's credentials and returns its context
	// with the caller in it.
	Authenticate(r *http.Request) (context.Context, error)
	// AuthorizeDelivery checks that the caller may deliver e, and returns the
	// context the handler runs with.
	AuthorizeDelivery(ctx context.Context, e event.Event) (context.Context, error)
}

// Server serves one Function.
type Server struct {
	cfg      Config
	fn       Function
	log      *slog.Logger
	handler  http.Handler
	draining atomic.Bool
	// answered, when set, is called as each request that is not a health
	// probe ends (run: holdGC's release).
	answered func()
}

// NewServer returns a server for fn. Nothing is started and nothing touches the
// network: a cold start does no work a request does not need.
func NewServer(cfg Config, fn Function, log *slog.Logger) *Server {
	s := &Server{cfg: cfg, fn: fn, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.HandleFunc("GET /readyz", s.ready)
	if fn.Events != nil {
		mux.Handle("POST /{$}", &receiver{cfg: cfg, name: fn.Name, handle: fn.Events, gate: fn.Gate, sink: NewEmitter(cfg, fn.Name)})
	}
	if fn.API != nil {
		mux.Handle("/", named(fn.API))
	} else {
		mux.HandleFunc("/", NoRoute)
	}
	s.handler = s.middleware(mux)
	return s
}

// seedKey marks the context of a request to a route of the 2018 API.
type seedKey struct{}

// NoRoute answers a request no route matches with a 404 problem (in the 2018
// shape on a 2018 path, another method). Function APIs mount it at "/".
func NoRoute(w http.ResponseWriter, r *http.Request) {
	err := fmt.Errorf("%w: no route %s %s", problem.ErrNotFound, r.Method, r.URL.Path)
	if seeded, _ := r.Context().Value(seedKey{}).(bool); seeded {
		seed.WriteError(w, err)
		return
	}
	problem.Write(w, err)
}

// method is r's method as span names and attributes carry it: a method
// HTTP defines, else _OTHER, as semantic conventions ask.
func method(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// named serves with api, then names the request's span by the route api
// matched ("GET /releases/{namespace}/{name}"): a ServeMux records its
// pattern in the request it was given.
func named(api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.ServeHTTP(w, r)
		if r.Pattern != "" && r.Pattern != "/" {
			span := trace.SpanFromContext(r.Context())
			route := r.Pattern
			if _, path, ok := strings.Cut(route, " "); ok {
				route = path
			}
			span.SetName(method(r.Method) + " " + route)
			span.SetAttributes(semconv.HTTPRoute(route))
		}
	})
}

// Handler returns the server's whole HTTP handler, middleware included.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// statusWriter records the status a handler wrote, for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// middleware gives every request an id and a logger, bounds its body, turns a panic
// into a 500 problem, and logs one line when it ends. It logs paths, never query
// strings or bodies.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		id := sanitizeID(r.Header.Get("X-Request-Id"))
		if id == "" {
			id = newID()
		}
		w.Header().Set("X-Request-Id", id)
		writeError := func(w http.ResponseWriter, err error) { problem.Write(w, err) }
		if p, ok := seed.Path(r.URL.Path, s.fn.Seed); ok {
			r.URL.Path, r.URL.RawPath = p, ""
			r = r.WithContext(context.WithValue(r.Context(), seedKey{}, true))
			writeError = func(w http.ResponseWriter, err error) { seed.WriteError(w, err) }
		}
		// An event delivery's span is the receiver's, parented by the event's
		// traceparent; any other request's is this one.
		ctx, span := r.Context(), trace.SpanFromContext(r.Context())
		if s.fn.Events == nil || r.Method != http.MethodPost || r.URL.Path != "/" {
			ctx, span = telemetry.Tracer().Start(telemetry.HTTPContext(ctx, r), method(r.Method),
				trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(semconv.HTTPRequestMethodKey.String(method(r.Method)), semconv.URLPath(r.URL.Path)))
		}
		log := withSpan(s.log.With("request.id", id), span)
		r = r.WithContext(WithLogger(ctx, log))
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBytes)
		sw := &statusWriter{ResponseWriter: w}
		var refused error
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					span.End()
					panic(v)
				}
				log.Error("handler panicked", "panic", fmt.Sprint(v))
				if sw.status == 0 {
					writeError(sw, errors.New("panic"))
				}
			}
			args := []any{"method", r.Method, "path", r.URL.Path, "status", sw.status,
				"duration_ms", float64(time.Since(start).Microseconds()) / 1000}
			if refused != nil {
				args = append(args, "error", refused.Error())
			}
			log.Info("request", args...)
			span.SetAttributes(semconv.HTTPResponseStatusCode(sw.status))
			if sw.status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(sw.status))
			}
			span.End()
			if s.answered != nil {
				s.answered()
			}
		}()
		if s.fn.Gate != nil {
			ctx, err := s.fn.Gate.Authenticate(r)
			if err != nil {
				refused = err
				writeError(sw, err)
				return
			}
			if c, ok := auth.CallerFrom(ctx); ok {
				log = log.With("user", c.User.GetName())
				ctx = WithLogger(ctx, log)
			}
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(sw, r)
	})
}

// Serve serves on ln until ctx is done, then stops taking requests and lets
// in-flight ones finish for up to DrainTimeout. It returns nil after a clean drain.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("serving", "address", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.draining.Store(true)
	s.log.Info("draining", "timeout", s.cfg.DrainTimeout.String())
	dctx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	if err := srv.Shutdown(dctx); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	s.log.Info("drained")
	return nil
}

// Main is what a function's main calls: it loads spec from the environment, builds
// the function, and serves it on $PORT until SIGTERM or SIGINT. It exits the process,
// non-zero on any error.
func Main(name string, spec Spec, build func(context.Context, *slog.Logger) (Function, error)) {
	if err := run(name, spec, build); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		os.Exit(1)
	}
}

func run(name string, spec Spec, build func(context.Context, *slog.Logger) (Function, error)) error {
	releaseGC := holdGC(os.Getenv)
	if err := Load(spec); err != nil {
		return err
	}
	cfg := spec.Runtime()
	log := NewLogger(os.Stdout, cfg.LogLevel, name)
	slog.SetDefault(log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	shutdown, err := telemetry.Setup(ctx, name)
	if err != nil {
		return err
	}
	defer func() {
		// Flush buffered spans and metrics: a scaled-to-zero pod is not
		// there to be asked again.
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := shutdown(fctx); err != nil {
			log.Warn("telemetry not flushed", "error", err.Error())
		}
	}()
	fn, err := build(ctx, log)
	if err != nil {
		return err
	}
	fn.Name = name
	if fn.Gate == nil {
		return errors.New("a function must authenticate its callers: build returned no Gate")
	}
	if fn.Warm != nil {
		fn.Warm(ctx)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen on %s=%d: %w", EnvPort, cfg.Port, err)
	}
	srv := NewServer(cfg, fn, log)
	srv.answered = releaseGC
	return srv.Serve(ctx, ln)
}
