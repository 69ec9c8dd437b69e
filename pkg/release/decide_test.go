package release

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	helmrelease "helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
)

// memoryInstaller is an Installer over Helm's memory driver and its printing
// kube client, as Helm's own actionConfigFixture: the decisions Install and
// Upgrade make from the release record (same, different, pending, stuck,
// failed), with no API server. What reaches a cluster is tested against the
// real one (TestLifecycle and the rest).
func memoryInstaller(t *testing.T) (*Installer, *storage.Storage) {
	t.Helper()
	mem := driver.NewMemory()
	mem.SetNamespace("apps")
	store := storage.Init(mem)
	cfg := &action.Configuration{
		Releases: store, KubeClient: &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: chartutil.DefaultCapabilities, Log: func(string, ...any) {},
	}
	p := Policy{Namespaces: []string{"apps"}, Sources: []string{charts.RepoURL}, AllowPrivateAddresses: true, MaxValuesBytes: 64 << 10}
	return &Installer{
		Configs: func(string) (*action.Configuration, error) { return cfg, nil },
		Fetcher: NewFetcher(FetcherOptions{Policy: p, Repos: map[string]string{"berth": charts.RepoURL},
			MaxChartBytes: 1 << 20, CacheEntries: 16, IndexTTL: time.Minute}),
		Policy: p, DefaultTimeout: time.Minute, Log: slog.New(slog.DiscardHandler),
	}, store
}

func TestInstallDecisions(t *testing.T) {
	ctx := context.Background()
	base := Request{Chart: ChartRef{Name: "berth/echo-gateway", Version: "0.1.0"}, ReleaseName: "gw", Namespace: "apps",
		Values: map[string]any{"greeting": "hello"}}
	with := func(change func(*Request)) Request {
		r := base
		r.Values = map[string]any{"greeting": "hello"}
		change(&r)
		return r
	}
	// setStatus rewrites the latest record as a crash or another writer would.
	// (A release installed again replaces it: Helm numbers the new record 2.)
	setStatus := func(t *testing.T, store *storage.Storage, s helmrelease.Status, age time.Duration) {
		t.Helper()
		cur, err := store.Last("gw")
		if err != nil {
			t.Fatal(err)
		}
		cur.Info.Status = s
		cur.Info.LastDeployed = cur.Info.LastDeployed.Add(-age)
		if err := store.Update(cur); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		// before runs on the installer after a first Install of base.
		before      func(*testing.T, *storage.Storage)
		req         Request
		wantErr     error
		wantCreated bool
		wantRev     int
	}{
		{"same chart and values: the same release", nil, base, nil, false, 1},
		{"other values: exists", nil, with(func(r *Request) { r.Values["greeting"] = "hi" }), ErrExists, false, 0},
		{"other version: exists", nil, with(func(r *Request) { r.Chart.Version = "0.2.0" }), ErrExists, false, 0},
		{"other values with upgrade: upgraded", nil, with(func(r *Request) { r.Values["greeting"] = "hi"; r.Upgrade = true }), nil, false, 2},
		{"pending within its timeout: in progress", func(t *testing.T, s *storage.Storage) {
			setStatus(t, s, helmrelease.StatusPendingInstall, 0)
		}, base, ErrInProgress, false, 0},
		{"pending past its timeout: stuck, installed again", func(t *testing.T, s *storage.Storage) {
			setStatus(t, s, helmrelease.StatusPendingInstall, time.Hour)
		}, base, nil, true, 2},
		{"failed first revision: installed again", func(t *testing.T, s *storage.Storage) {
			setStatus(t, s, helmrelease.StatusFailed, 0)
		}, base, nil, true, 2},
		{"uninstalled: installed again", func(t *testing.T, s *storage.Storage) {
			setStatus(t, s, helmrelease.StatusUninstalled, 0)
		}, base, nil, true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in, store := memoryInstaller(t)
			if _, created, err := in.Install(ctx, base); err != nil || !created {
				t.Fatalf("first Install = %v, created %v", err, created)
			}
			if tt.before != nil {
				tt.before(t, store)
			}
			r, created, err := in.Install(ctx, tt.req)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Install = %+v, %v; want %v", r, err, tt.wantErr)
				}
				return
			}
			if err != nil || created != tt.wantCreated || r.Revision != tt.wantRev || r.Status != "deployed" {
				t.Fatalf("Install = revision %d %s, created %v, %v; want revision %d deployed, created %v",
					r.Revision, r.Status, created, err, tt.wantRev, tt.wantCreated)
			}
			all, err := store.History("gw")
			if err != nil {
				t.Fatal(err)
			}
			deployed := 0
			for _, h := range all {
				if h.Info.Status == helmrelease.StatusDeployed {
					deployed++
				}
			}
			if deployed != 1 {
				t.Errorf("%d deployed revisions of gw, want 1", deployed)
			}
		})
	}
}

func TestUpgradeDecisions(t *testing.T) {
	ctx := context.Background()
	in, _ := memoryInstaller(t)
	req := Request{Chart: ChartRef{Name: "berth/echo-gateway", Version: "0.1.0"}, ReleaseName: "gw", Namespace: "apps"}
	if _, err := in.Upgrade(ctx, req); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Upgrade of no release = %v, want ErrNotFound", err)
	}
	if _, _, err := in.Install(ctx, req); err != nil {
		t.Fatal(err)
	}
	if r, err := in.Upgrade(ctx, req); err != nil || r.Revision != 1 {
		t.Fatalf("Upgrade to the same chart and values = revision %d, %v; want 1 (nothing to do)", r.Revision, err)
	}
	req.Chart.Version = "0.2.0"
	if r, err := in.Upgrade(ctx, req); err != nil || r.Revision != 2 || r.Version != "0.2.0" {
		t.Fatalf("Upgrade to 0.2.0 = revision %d %s, %v; want revision 2", r.Revision, r.Version, err)
	}
}
