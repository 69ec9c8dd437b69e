package config_test

import (
	"bytes"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/berth-dev/berth/pkg/testing/chartrepo"
	"github.com/berth-dev/berth/pkg/testing/controlplane"
)

// TestKoResolve builds berth's images with ko (the CLI that `make ko-cli`
// builds from the module proxy), onto a static base image made offline, pushes
// them to a registry on loopback, and applies the resolved YAML (dry run).
func TestKoResolve(t *testing.T) {
	cp.Require(t)
	if testing.Short() {
		t.Skip("builds three images")
	}
	dir, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	ko := filepath.Join(dir, "bin", "ko")
	if _, err := os.Stat(ko); err != nil {
		t.Fatalf("%s missing: run `make ko-cli` (make test does)", ko)
	}
	reg := httptest.NewServer(registry.New())
	defer reg.Close()
	host := strings.TrimPrefix(reg.URL, "http://")

	baseRef, err := chartrepo.PushStaticBase(host)
	if err != nil {
		t.Fatal(err)
	}

	root, _ := filepath.Abs("..")
	cmd := exec.Command(ko, "resolve", "-f", "config/", "--platform=linux/amd64", "--insecure-registry")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KO_DOCKER_REPO="+host+"/berth", "KO_DEFAULTBASEIMAGE="+baseRef,
		"KO_CONFIG_PATH="+filepath.Join(root, "ko.yaml"), "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ko resolve: %v\n%s", err, stderr.String())
	}
	objs := decode(t, "ko resolve output", out)
	images := 0
	for _, o := range objs {
		if o.GetKind() != "Service" || o.GetAPIVersion() != "serving.knative.dev/v1" {
			continue
		}
		containers, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
		image := containers[0].(map[string]any)["image"].(string)
		if !strings.HasPrefix(image, host+"/berth/") || !strings.Contains(image, "@sha256:") {
			t.Errorf("%s resolved to %q, want an image in %s by digest", o.GetName(), image, host)
			continue
		}
		ref, err := name.ParseReference(image, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		img, err := remote.Image(ref)
		if err != nil {
			t.Errorf("%s: %v", image, err)
			continue
		}
		cfg, err := img.ConfigFile()
		if err != nil || cfg.Config.User != "65532" || len(cfg.Config.Entrypoint) == 0 {
			t.Errorf("%s: config %+v, %v; want the base's user and ko's entrypoint", image, cfg, err)
		}
		images++
	}
	if images != 3 {
		t.Errorf("%d images resolved, want 3", images)
	}
	dryRunApply(t, objs)
}
