package telemetry

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/proto"
)

// berth's OTLP/HTTP exporters are its own: the OpenTelemetry Go exporters
// (otlptracehttp, otlpmetrichttp) link gRPC and grpc-gateway through their
// configuration and the OTLP collector packages
// (open-telemetry/opentelemetry-go#2579): 23 MB of getport's 55 MB image
// binary, 8 MB of its resident memory and 2 ms before main, in every cold
// start, telemetry on or off. These post the OTel SDK's spans and metrics as
// the same protobuf messages, from go.opentelemetry.io/proto/slim/otlp (the
// OTLP messages without gRPC), and read the same OTEL_EXPORTER_OTLP_*
// variables.

// Signals, as their variables and paths name them.
const (
	signalTraces  = "TRACES"
	signalMetrics = "METRICS"
)

// defaultTimeout is OTEL_EXPORTER_OTLP_TIMEOUT's default.
const defaultTimeout = 10 * time.Second

// maxResponseBytes bounds what is read of a collector's answer.
const maxResponseBytes = 64 << 10

// otlpClient posts one signal's export requests to its collector.
type otlpClient struct {
	url string
	// shown is url as errors name it, without a password.
	shown   string
	headers http.Header
	gzip    bool
	timeout time.Duration
	http    *http.Client
}

// newOTLPClient reads signal's OTEL_EXPORTER_OTLP_* variables, each signal's
// own before the shared one, as the OTLP exporter specification asks. It
// reads certificate files, and dials nothing.
func newOTLPClient(signal string, getenv func(string) string) (*otlpClient, error) {
	get := func(name string) (string, string) {
		own := "OTEL_EXPORTER_OTLP_" + signal + "_" + name
		if v := getenv(own); v != "" {
			return own, v
		}
		return "OTEL_EXPORTER_OTLP_" + name, getenv("OTEL_EXPORTER_OTLP_" + name)
	}
	c := &otlpClient{headers: http.Header{}, timeout: defaultTimeout}
	// A signal's own endpoint is used as it is; the shared one is a base
	// the signal's path is added to.
	raw, path := getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT"), ""
	if raw == "" {
		raw, path = getenv(EnvEndpoint), "v1/"+strings.ToLower(signal)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("OTLP %s endpoint: not an absolute http(s) URL", strings.ToLower(signal))
	}
	if path != "" {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/" + path
	}
	c.url, c.shown = u.String(), u.Redacted()
	if name, v := get("HEADERS"); v != "" {
		for pair := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(pair) == "" {
				continue
			}
			k, val, ok := strings.Cut(pair, "=")
			k = strings.TrimSpace(k)
			dec, derr := url.PathUnescape(strings.TrimSpace(val))
			if !ok || derr != nil || !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(dec) {
				// The values are secrets as often as not: named, not shown.
				return nil, fmt.Errorf("%s: want key=value pairs, comma separated, values URL-encoded", name)
			}
			c.headers.Add(k, dec)
		}
	}
	if name, v := get("TIMEOUT"); v != "" {
		ms, err := strconv.Atoi(v)
		if err != nil || ms <= 0 {
			return nil, fmt.Errorf("%s=%q: want a positive number of milliseconds", name, v)
		}
		c.timeout = time.Duration(ms) * time.Millisecond
	}
	switch name, v := get("COMPRESSION"); v {
	case "", "none":
	case "gzip":
		c.gzip = true
	default:
		return nil, fmt.Errorf("%s=%q: want gzip or none", name, v)
	}
	tlsConfig, err := otlpTLS(get)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsConfig
	// A redirect would carry the headers, credentials often, to another
	// host: it is answered, not followed.
	c.http = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c, nil
}

// otlpTLS is the TLS configuration the CERTIFICATE, CLIENT_CERTIFICATE and
// CLIENT_KEY variables ask for, or nil for the system's.
func otlpTLS(get func(string) (string, string)) (*tls.Config, error) {
	caName, ca := get("CERTIFICATE")
	certName, cert := get("CLIENT_CERTIFICATE")
	keyName, key := get("CLIENT_KEY")
	if ca == "" && cert == "" && key == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", caName, err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s=%s: no PEM certificate in it", caName, ca)
		}
	}
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("%s and %s: set both or neither", certName, keyName)
	}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%s, %s: %w", certName, keyName, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// errRetryable is a collector's answer worth sending the request again for.
var errRetryable = errors.New("collector unavailable")

// export posts req and reads the collector's answer into resp. It sends
// again, with backoff, while the collector answers 429, 502, 503 or 504 or
// cannot be reached, within the exporter's timeout.
func (c *otlpClient) export(ctx context.Context, req, resp proto.Message) error {
	body, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("encode OTLP request: %w", err)
	}
	if c.gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write(body); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		body = buf.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	delay := 100 * time.Millisecond
	for {
		wait, err := c.post(ctx, body, resp)
		if !errors.Is(err, errRetryable) {
			return err
		}
		if wait <= 0 {
			// Full backoff, less up to half at random, so that instances
			// refused together do not come back together.
			wait, delay = delay-time.Duration(rand.Int64N(int64(delay/2))), min(2*delay, 5*time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-t.C:
		}
	}
}

// post sends body once. On a retryable answer it returns how long the
// collector asked to wait (Retry-After), if it did.
func (c *otlpClient) post(ctx context.Context, body []byte, resp proto.Message) (time.Duration, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	r.Header = c.headers.Clone()
	r.Header.Set("Content-Type", "application/x-protobuf")
	if c.gzip {
		r.Header.Set("Content-Encoding", "gzip")
	}
	res, err := c.http.Do(r)
	if err != nil {
		// The error names the URL as sent: name it without a password.
		if ctx.Err() != nil {
			return 0, fmt.Errorf("OTLP export to %s: %w", c.shown, ctx.Err())
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		var cert *tls.CertificateVerificationError
		if errors.As(err, &cert) {
			return 0, fmt.Errorf("OTLP export to %s: %w", c.shown, err) // the same next time
		}
		return 0, fmt.Errorf("%w: %s: %w", errRetryable, c.shown, err)
	}
	defer res.Body.Close()
	switch {
	case res.StatusCode >= 200 && res.StatusCode < 300:
		// The answer says what was rejected, if anything; a collector may
		// send none, or another content type.
		msg, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes+1))
		if err != nil || len(msg) == 0 || len(msg) > maxResponseBytes ||
			!strings.HasPrefix(res.Header.Get("Content-Type"), "application/x-protobuf") {
			return 0, nil
		}
		if err := proto.Unmarshal(msg, resp); err != nil {
			return 0, fmt.Errorf("OTLP answer from %s: %w", c.shown, err)
		}
		return 0, nil
	case res.StatusCode == http.StatusTooManyRequests, res.StatusCode == http.StatusBadGateway,
		res.StatusCode == http.StatusServiceUnavailable, res.StatusCode == http.StatusGatewayTimeout:
		var wait time.Duration
		if s, err := strconv.Atoi(res.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return wait, fmt.Errorf("%w: %s answered %s", errRetryable, c.shown, res.Status)
	}
	return 0, fmt.Errorf("OTLP export to %s: %s", c.shown, res.Status)
}
