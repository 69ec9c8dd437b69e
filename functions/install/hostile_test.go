package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berth-dev/berth/pkg/testing/chartrepo"
)

// TestHostileSourcesAndInputs posts, as a tenant would, chart sources and
// inputs meant to reach what they should not or to take install's memory. Each
// is refused with its status; no release record is written, and servers that
// are not to be reached receive nothing.
func TestHostileSourcesAndInputs(t *testing.T) {
	cp.Require(t)
	// unlisted is off the allowlist: nothing may reach it.
	unlisted, err := chartrepo.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer unlisted.Close()
	bomb := chartrepo.Bomb(100 << 20)
	sum := sha256.Sum256(bomb)
	var hostileHits atomic.Int32
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hostileHits.Add(1)
		switch r.URL.Path {
		case "/redirect/index.yaml":
			http.Redirect(w, r, unlisted.RepoURL+"/index.yaml", http.StatusFound)
		case "/redirect6/index.yaml":
			http.Redirect(w, r, "http://[::1]:9/index.yaml", http.StatusFound)
		case "/metadata/index.yaml":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/big/index.yaml":
			w.Write([]byte("apiVersion: v1\nentries: {}\n# " + strings.Repeat("x", 10<<20) + "\n"))
		case "/bomb/index.yaml":
			fmt.Fprintf(w, "apiVersion: v1\nentries:\n  bomb:\n    - {name: bomb, version: 0.1.0, urls: [bomb.tgz], digest: %s}\n", hex.EncodeToString(sum[:]))
		case "/bomb/bomb.tgz":
			w.Write(bomb)
		default:
			http.NotFound(w, r)
		}
	}))
	defer hostile.Close()
	u, ns := serveWith(t, "", allowAll{}, func(c *Config) {
		c.AllowedChartSources = append(c.AllowedChartSources, hostile.URL, "oci://ghcr.io/acme")
		c.MaxIndexBytes, c.MaxChartDecompressedBytes, c.ChartCacheBytes = 1<<20, 8<<20, 16<<20
	})
	for name, source := range map[string]string{"for-unlisted": unlisted.RepoURL, "unbound": ""} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string][]byte{"username": []byte("robot"), "password": []byte("hunter2")}}
		s.Annotations = map[string]string{AnnotationNamespaces: ns}
		if source != "" {
			s.Annotations[AnnotationChartSource] = source
		}
		if _, err := cp.Client.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	lookAlike := strings.Replace(charts.RepoURL, "127.0.0.1", "127.0.0.1.nip.io", 1)
	bombKeys := `{"k01[65536]":1,"k02[65536]":1,"k03[65536]":1,"k04[65536]":1}`
	install := func(repo, chart, extra string) string {
		return fmt.Sprintf(`{"chartName":%q,"releaseName":"hostile","privateChartsRepo":%q%s}`, chart, repo, extra)
	}
	tests := []struct {
		name string
		body string
		want int
	}{
		{"userinfo in front of an allowed host", install(charts.RepoURL+"@evil.example", "echo-gateway", ""), 400},
		{"an allowed host as a subdomain of another", install(lookAlike, "echo-gateway", ""), 403},
		{"an allowed host on another port", install(strings.Replace(charts.RepoURL, "127.0.0.1:", "127.0.0.1:1", 1), "echo-gateway", ""), 403},
		{"an allowed OCI prefix's look-alike", `{"chartName":"oci://ghcr.io/acme-evil/gw","version":"1.0.0","releaseName":"hostile"}`, 403},
		{"an allowed OCI prefix escaped by ..", `{"chartName":"oci://ghcr.io/acme/../evil/gw","version":"1.0.0","releaseName":"hostile"}`, 400},
		{"an allowed prefix escaped by %2e%2e", install(hostile.URL+"/x/%2e%2e/redirect", "echo-gateway", ""), 400},
		{"an IPv6 loopback literal", install("http://[::1]:9", "echo-gateway", ""), 403},
		{"the metadata address", install("http://169.254.169.254/latest", "echo-gateway", ""), 403},
		{"a redirect to an unlisted source", install(hostile.URL+"/redirect", "echo-gateway", ""), 403},
		{"a redirect to an IPv6 literal", install(hostile.URL+"/redirect6", "echo-gateway", ""), 403},
		{"a redirect to the metadata address", install(hostile.URL+"/metadata", "echo-gateway", ""), 403},
		{"a credentials Secret for another source", install(charts.RepoURL, "echo-gateway", `,"credentialsSecret":"for-unlisted"`), 403},
		{"a credentials Secret naming no source", install(charts.RepoURL, "echo-gateway", `,"credentialsSecret":"unbound"`), 422},
		{"a credentials Secret outside its namespace", install(charts.RepoURL, "echo-gateway", `,"credentialsSecret":"../kube-system/x"`), 400},
		{"a scheme that is not http(s) or oci", install("file:///etc", "echo-gateway", ""), 400},
		{"a values bomb", install(charts.RepoURL, "echo-gateway", `,"values":`+bombKeys), 400},
		{"a 10 MiB index", install(hostile.URL+"/big", "echo-gateway", ""), 422},
		{"a chart that decompresses to 100 MiB", install(hostile.URL+"/bomb", "bomb", ""), 422},
	}
	for _, tc := range tests {
		before := releaseSecrets(t, ns)
		status, b, _ := do(t, "POST", u+"/install", tc.body)
		if status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, status, b, tc.want)
		}
		if strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "connection refused") {
			t.Errorf("%s: the answer tells %s", tc.name, b)
		}
		if n := releaseSecrets(t, ns); n != before {
			t.Errorf("%s: %d release records, were %d", tc.name, n, before)
		}
	}
	if n := unlisted.Requests("/index.yaml"); n != 0 {
		t.Errorf("the unlisted repository received %d requests", n)
	}
}
