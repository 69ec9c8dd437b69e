//go:build e2e

// Package e2e proves berth on a real single-node cluster (pkg/testing/cluster), with
// Knative Serving and Eventing built from their modules: `make e2e`.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/berth-dev/berth/pkg/testing/chartrepo"
)

// registryAddr is where the e2e run's image registry listens. Images are
// named by it, so it is fixed: containerd's cache then hits across runs.
const registryAddr = "127.0.0.1:5111"

// images is an OCI registry on loopback that ko pushes to and containerd
// pulls from, and the static base image every image is built on.
type images struct {
	srv  *http.Server
	base string
	ko   string
}

func startImages(ko string) (*images, error) {
	ln, err := net.Listen("tcp", registryAddr)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	go func() { _ = srv.Serve(ln) }()
	base, err := chartrepo.PushStaticBase(registryAddr)
	if err != nil {
		srv.Close()
		return nil, err
	}
	return &images{srv: srv, base: base, ko: ko}, nil
}

func (im *images) Close() { _ = im.srv.Close() }

// koRun runs ko in dir with repo as KO_DOCKER_REPO and returns its stdout.
func (im *images) koRun(ctx context.Context, dir, repo, koConfig string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, im.ko, append(args, "--platform=linux/amd64", "--insecure-registry")...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "KO_DOCKER_REPO="+registryAddr+"/"+repo, "KO_DEFAULTBASEIMAGE="+im.base,
		"KO_CONFIG_PATH="+koConfig, "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ko %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// build builds one Go main package into an image and returns its reference by digest.
func (im *images) build(ctx context.Context, dir, repo, koConfig, importPath string) (string, error) {
	out, err := im.koRun(ctx, dir, repo, koConfig, "build", "--bare", importPath)
	if err != nil {
		return "", err
	}
	ref := strings.TrimSpace(string(out))
	if !strings.Contains(ref, "@sha256:") {
		return "", errors.New("ko build printed no digest: " + ref)
	}
	return ref, nil
}

// resolve builds every ko:// image in the manifest file or folder and returns
// the manifest with digests, as `ko resolve -f` does.
func (im *images) resolve(ctx context.Context, dir, repo, koConfig, file string) ([]byte, error) {
	return im.koRun(ctx, dir, repo, koConfig, "resolve", "-f", file)
}
