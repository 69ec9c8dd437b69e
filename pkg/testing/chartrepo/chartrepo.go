// Package chartrepo serves Helm charts from folders on loopback, both as a chart
// repository (index.yaml plus packaged archives over HTTP) and from an OCI
// registry (go-containerregistry's). berth's tests and `make run` use it. It
// packages charts itself, with tar and gzip, and imports nothing from Helm.
package chartrepo

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"helm.sh/helm/v3/pkg/ignore"
	"sigs.k8s.io/yaml"
)

// Helm's OCI media types.
const (
	ConfigMediaType = "application/vnd.cncf.helm.config.v1+json"
	ChartMediaType  = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
)

// Chart is a packaged chart.
type Chart struct {
	Name    string
	Version string
	Archive []byte
	// Metadata is Chart.yaml as JSON (the OCI config blob).
	Metadata []byte
}

// Digest is the archive's sha256, hex.
func (c Chart) Digest() string {
	s := sha256.Sum256(c.Archive)
	return hex.EncodeToString(s[:])
}

// FromTemplates packs a chart named name, version 0.1.0, whose templates/
// folder holds templates (file name to content): a test's one-off chart.
func FromTemplates(name string, templates map[string]string) (Chart, error) {
	dir, err := os.MkdirTemp("", "chart-")
	if err != nil {
		return Chart{}, err
	}
	defer os.RemoveAll(dir)
	if err := os.Mkdir(filepath.Join(dir, "templates"), 0o755); err != nil {
		return Chart{}, err
	}
	files := map[string]string{"Chart.yaml": "apiVersion: v2\nname: " + name + "\nversion: 0.1.0\n"}
	for f, body := range templates {
		files[filepath.Join("templates", f)] = body
	}
	for f, body := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(body), 0o644); err != nil {
			return Chart{}, err
		}
	}
	return Package(dir, "")
}

// Bomb is the archive of a chart named bomb, version 0.1.0, whose one file
// decompresses to n bytes of zeros: a few hundred KiB for 100 MiB.
func Bomb(n int) []byte {
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	tw := tar.NewWriter(gz)
	meta := []byte("apiVersion: v2\nname: bomb\nversion: 0.1.0\n")
	_ = tw.WriteHeader(&tar.Header{Name: "bomb/Chart.yaml", Mode: 0o644, Size: int64(len(meta))})
	_, _ = tw.Write(meta)
	_ = tw.WriteHeader(&tar.Header{Name: "bomb/files/zeros", Mode: 0o644, Size: int64(n)})
	zeros := make([]byte, 1<<20)
	for left := n; left > 0; left -= len(zeros) {
		_, _ = tw.Write(zeros[:min(left, len(zeros))])
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

// PrivilegedPod is a template of a privileged Pod mounting the node's root: what
// Pod Security's restricted profile must refuse.
const PrivilegedPod = `apiVersion: v1
kind: Pod
metadata: {name: {{ .Release.Name }}}
spec:
  containers:
    - name: root
      image: example.invalid/root:1
      securityContext: {privileged: true}
      volumeMounts: [{name: host, mountPath: /host}]
  volumes: [{name: host, hostPath: {path: /}}]
`

// Package packs a chart folder as `helm package` would: a gzipped tar of
// <name>/... with a fixed time, so the same folder gives the same archive.
// version, when set, replaces Chart.yaml's version.
func Package(dir, version string) (Chart, error) {
	raw, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return Chart{}, err
	}
	var meta map[string]any
	if err := yaml.Unmarshal(raw, &meta); err != nil {
		return Chart{}, fmt.Errorf("%s/Chart.yaml: %w", dir, err)
	}
	if version != "" {
		meta["version"] = version
		if raw, err = yaml.Marshal(meta); err != nil {
			return Chart{}, err
		}
	}
	name, _ := meta["name"].(string)
	ver, _ := meta["version"].(string)
	if name == "" || ver == "" {
		return Chart{}, fmt.Errorf("%s/Chart.yaml: name and version are required", dir)
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	mtime := time.Unix(1_700_000_000, 0)
	add := func(rel string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: path.Join(name, rel), Mode: 0o644, Size: int64(len(data)), ModTime: mtime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	// The chart's .helmignore applies, as it does to `helm package`.
	rules := ignore.Empty()
	if r, err := ignore.ParseFile(filepath.Join(dir, ignore.HelmIgnore)); err == nil {
		rules = r
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Chart{}, err
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if rel != "." && rules.Ignore(rel, fi) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if rel == "Chart.yaml" {
			return add(rel, raw)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return add(rel, data)
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil {
		err = gz.Close()
	}
	if err != nil {
		return Chart{}, err
	}
	metaJSON, _ := json.Marshal(meta)
	return Chart{Name: name, Version: ver, Archive: buf.Bytes(), Metadata: metaJSON}, nil
}

// Server is a chart repository and an OCI registry on loopback.
type Server struct {
	// RepoURL is the chart repository's base URL (RepoURL + "/index.yaml").
	RepoURL string
	// Registry is the OCI registry's host:port; charts are at
	// oci://<Registry>/charts/<name>.
	Registry string

	repo, reg *httptest.Server
	mu        sync.Mutex
	charts    []Chart
	// Requests counts the repository's requests, by path.
	requests map[string]int
}

// Start serves charts on loopback; more can be added with Add.
func Start(charts ...Chart) (*Server, error) { return StartOn("127.0.0.1", charts...) }

// StartOn serves charts on host (an address of this machine), for clients
// elsewhere, such as pods of a cluster running on it.
func StartOn(host string, charts ...Chart) (*Server, error) {
	s := &Server{requests: map[string]int{}}
	serve := func(h http.Handler) (*httptest.Server, error) {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, err
		}
		srv := httptest.NewUnstartedServer(h)
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		return srv, nil
	}
	var err error
	if s.repo, err = serve(http.HandlerFunc(s.serveRepo)); err != nil {
		return nil, err
	}
	if s.reg, err = serve(registry.New(registry.Logger(log.New(io.Discard, "", 0)))); err != nil {
		s.repo.Close()
		return nil, err
	}
	s.RepoURL = s.repo.URL
	s.Registry = strings.TrimPrefix(s.reg.URL, "http://")
	for _, c := range charts {
		if err := s.Add(c); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close stops both servers.
func (s *Server) Close() {
	s.repo.Close()
	s.reg.Close()
}

// Add publishes c in the repository and pushes it to the registry.
func (s *Server) Add(c Chart) error {
	s.mu.Lock()
	s.charts = append(s.charts, c)
	s.mu.Unlock()
	return s.push(c)
}

// Requests returns how many times path was asked for.
func (s *Server) Requests(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[p]
}

type indexEntry struct {
	APIVersion string    `json:"apiVersion"`
	Name       string    `json:"name"`
	Version    string    `json:"version"`
	Digest     string    `json:"digest"`
	URLs       []string  `json:"urls"`
	Created    time.Time `json:"created"`
}

func (s *Server) serveRepo(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests[r.URL.Path]++
	charts := append([]Chart(nil), s.charts...)
	s.mu.Unlock()
	if r.URL.Path == "/index.yaml" {
		entries := map[string][]indexEntry{}
		for _, c := range charts {
			entries[c.Name] = append(entries[c.Name], indexEntry{
				APIVersion: "v2", Name: c.Name, Version: c.Version, Digest: c.Digest(),
				URLs: []string{"charts/" + c.Name + "-" + c.Version + ".tgz"}, Created: time.Unix(1_700_000_000, 0).UTC(),
			})
		}
		b, _ := yaml.Marshal(map[string]any{"apiVersion": "v1", "entries": entries, "generated": time.Unix(1_700_000_000, 0).UTC()})
		w.Header().Set("Content-Type", "application/x-yaml")
		_, _ = w.Write(b)
		return
	}
	for _, c := range charts {
		if r.URL.Path == "/charts/"+c.Name+"-"+c.Version+".tgz" {
			w.Header().Set("Content-Type", "application/gzip")
			_, _ = w.Write(c.Archive)
			return
		}
	}
	http.NotFound(w, r)
}

// push uploads c's config and archive as blobs and tags a manifest
// charts/<name>:<version>, with go-containerregistry's client. The blobs are
// pushed as they are, not loaded: a hostile chart is published as it is.
func (s *Server) push(c Chart) error {
	repo, err := name.NewRepository(s.Registry+"/charts/"+c.Name, name.Insecure)
	if err != nil {
		return err
	}
	config, archive := static.NewLayer(c.Metadata, ConfigMediaType), static.NewLayer(c.Archive, ChartMediaType)
	m := v1.Manifest{SchemaVersion: 2, MediaType: types.OCIManifestSchema1}
	for i, l := range []v1.Layer{config, archive} {
		if err := remote.WriteLayer(repo, l); err != nil {
			return fmt.Errorf("push %s blob: %w", repo, err)
		}
		d, err := partial.Descriptor(l)
		if err != nil {
			return err
		}
		if i == 0 {
			m.Config = *d
		} else {
			m.Layers = append(m.Layers, *d)
		}
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := remote.Put(repo.Tag(c.Version), manifest(raw)); err != nil {
		return fmt.Errorf("push %s:%s manifest: %w", repo, c.Version, err)
	}
	return nil
}

// manifest is an OCI image manifest, as remote.Put takes it.
type manifest []byte

func (m manifest) RawManifest() ([]byte, error)        { return m, nil }
func (m manifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
