package function

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"
)

// Knative's environment contract.
const (
	// EnvPort is the port Knative Serving expects the container to listen on.
	EnvPort = "PORT"
	// EnvSink is where a SinkBinding (or make run) asks replies to be sent too.
	EnvSink = "K_SINK"
	// EnvCEOverrides holds the CloudEvent overrides a SinkBinding asks for.
	EnvCEOverrides = "K_CE_OVERRIDES"
)

// Config is what every function reads from its environment. A function's own
// configuration struct embeds it.
type Config struct {
	// Port is the TCP port to listen on. Knative sets it; 0 picks a free port.
	Port int `envconfig:"PORT" default:"8080"`
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration `split_words:"true" default:"5s"`
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration `split_words:"true" default:"30s"`
	// WriteTimeout bounds handling a request and writing its answer. Installs that
	// wait for readiness need minutes; keep it under the Knative revision timeout.
	WriteTimeout time.Duration `split_words:"true" default:"5m"`
	// IdleTimeout bounds how long a keep-alive connection may sit idle.
	IdleTimeout time.Duration `split_words:"true" default:"2m"`
	// DrainTimeout bounds how long in-flight requests may run on after SIGTERM.
	DrainTimeout time.Duration `split_words:"true" default:"30s"`
	// MaxRequestBytes bounds a request body; a larger one is answered 413.
	MaxRequestBytes int64 `split_words:"true" default:"1048576"`
	// LogLevel is the lowest level logged: DEBUG, INFO, WARN or ERROR.
	LogLevel slog.Level `split_words:"true" default:"INFO"`
	// Sink, when set, also receives every reply event (SinkBinding's K_SINK).
	Sink URL `envconfig:"K_SINK"`
	// CEOverrides are extension attributes set on every reply (K_CE_OVERRIDES).
	CEOverrides Overrides `envconfig:"K_CE_OVERRIDES"`
}

// Runtime returns the runtime part of a function's configuration.
func (c Config) Runtime() Config { return c }

// Validate reports values that parse but cannot work.
func (c Config) Validate() error {
	var errs []error
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("%s=%d: not a TCP port", EnvPort, c.Port))
	}
	for name, d := range map[string]time.Duration{
		"READ_HEADER_TIMEOUT": c.ReadHeaderTimeout, "READ_TIMEOUT": c.ReadTimeout,
		"WRITE_TIMEOUT": c.WriteTimeout, "IDLE_TIMEOUT": c.IdleTimeout, "DRAIN_TIMEOUT": c.DrainTimeout,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s=%s: must be positive", name, d))
		}
	}
	if c.MaxRequestBytes <= 0 {
		errs = append(errs, fmt.Errorf("MAX_REQUEST_BYTES=%d: must be positive", c.MaxRequestBytes))
	}
	return errors.Join(errs...)
}

// Spec is a function's configuration: a struct with envconfig tags that embeds Config.
type Spec interface {
	Runtime() Config
	Validate() error
}

// Defaulter is a Spec that fills what envconfig cannot, such as older variable
// names, after the environment is read and before it is validated.
type Defaulter interface{ Default() }

// Load fills spec from the environment and validates it. The error names the
// variable at fault.
func Load(spec Spec) error {
	if err := envconfig.Process("", spec); err != nil {
		var perr *envconfig.ParseError
		if errors.As(err, &perr) {
			return fmt.Errorf("configuration: %s: cannot parse %q as %s: %w", perr.KeyName, perr.Value, perr.TypeName, perr.Err)
		}
		return fmt.Errorf("configuration: %w", err)
	}
	if d, ok := spec.(Defaulter); ok {
		d.Default()
	}
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	return nil
}

// URL is an absolute http(s) URL read from the environment.
type URL struct{ *url.URL }

// Decode implements envconfig.Decoder.
func (u *URL) Decode(v string) error {
	if v == "" {
		return nil
	}
	p, err := url.Parse(v)
	if err != nil {
		return err
	}
	if (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
		return errors.New("not an absolute http(s) URL")
	}
	u.URL = p
	return nil
}

// Set reports whether a URL was given.
func (u URL) Set() bool { return u.URL != nil }

// Overrides are CloudEvent extension attributes, read from the SinkBinding format
// {"extensions":{"name":"value"}}.
type Overrides map[string]string

// Decode implements envconfig.Decoder.
func (o *Overrides) Decode(v string) error {
	if v == "" {
		return nil
	}
	var doc struct {
		Extensions map[string]string `json:"extensions"`
	}
	dec := json.NewDecoder(strings.NewReader(v))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return fmt.Errorf(`want {"extensions":{"name":"value"}}: %w`, err)
	}
	*o = doc.Extensions
	return nil
}
