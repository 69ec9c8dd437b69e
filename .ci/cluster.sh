#!/usr/bin/env bash
# Builds what berth's single-node e2e cluster needs beyond the test control plane,
# from the Go module proxy, into the same cache (pkg/testing/cluster runs it; `make e2e`):
#   - kubelet, kube-controller-manager, kube-scheduler, kube-proxy (via controlplane.sh)
#   - CoreDNS, MetalLB's controller
#   - a module requiring Traefik (Knative's ingress and a Gateway API implementation
#     in the e2e), that ko builds its image in, and Gateway API's experimental CRDs
#   - a module requiring Knative Serving and Eventing, that ko builds their images in,
#     and their release manifests (with ko:// image references) gathered from it.
# containerd, runc and the CNI plugins come from Debian (.ci/run installs them).
# Idempotent: what is there already is not built again.
#
# usage: .ci/cluster.sh <cache-dir>
set -euo pipefail
out=$(realpath -m "$1")
here=$(cd "$(dirname "$0")" && pwd)
coredns_version=${COREDNS_VERSION:-v1.15.0}
metallb_version=${METALLB_VERSION:-v0.15.2}
serving_version=${KNATIVE_SERVING_VERSION:-v0.50.0}
eventing_version=${KNATIVE_EVENTING_VERSION:-v0.50.0}
traefik_version=${TRAEFIK_VERSION:-v3.6.12}
gateway_version=${GATEWAY_API_VERSION:-v1.6.3}
export GOFLAGS=-mod=mod GOWORK=off CGO_ENABLED=0

say() { printf '==> %s\n' "$*" >&2; }

bash "$here/controlplane.sh" "$out" kubelet kube-controller-manager kube-scheduler kube-proxy

if [ ! -x "$out/bin/coredns" ]; then
  say "building coredns $coredns_version"
  GOBIN="$out/bin" go install -trimpath -ldflags "-s -w" "github.com/coredns/coredns@$coredns_version"
fi
if [ ! -x "$out/bin/metallb-controller" ]; then
  say "building metallb controller $metallb_version"
  GOBIN="$out/bin.tmp" go install -trimpath -ldflags "-s -w" "go.universe.tf/metallb/controller@$metallb_version"
  mv "$out/bin.tmp/controller" "$out/bin/metallb-controller" && rmdir "$out/bin.tmp"
fi

moddir() { go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'; }
# yamls <dir>...: every *.yaml under the folders, in path order, as one stream.
yamls() { find -L "$@" -type f -name '*.yaml' | LC_ALL=C sort | while read -r f; do printf -- '---\n'; cat "$f"; printf '\n'; done; }

k="$out/src/knative"
if [ ! -f "$k/manifests.done" ]; then
  say "preparing Knative Serving $serving_version and Eventing $eventing_version"
  mkdir -p "$k"
  serving=$(moddir "knative.dev/serving@$serving_version")
  eventing=$(moddir "knative.dev/eventing@$eventing_version")
  # The networking and caching resources are symlinks in the serving repository,
  # and module zips drop symlinks: take them from the modules serving pins.
  pin() { awk -v m="$1" '$1 == m {print $2; exit}' "$serving/go.mod"; }
  networking=$(moddir "knative.dev/networking@$(pin knative.dev/networking)")
  caching=$(moddir "knative.dev/caching@$(pin knative.dev/caching)")
  cmds=$(grep -rhoE 'ko://knative\.dev/[a-z_/]+' "$serving/config/core" "$eventing/config/core" \
    "$eventing/config/channels/in-memory-channel" "$eventing/config/brokers/mt-channel-broker" | sed 's,ko://,,' | sort -u)
  (
    cd "$k"
    printf 'module berth.local/knative\n\ngo 1.26.0\n\nrequire (\n\tknative.dev/serving %s\n\tknative.dev/eventing %s\n)\n' \
      "$serving_version" "$eventing_version" >go.mod
    { printf '//go:build tools\n\npackage tools\n\nimport (\n'; for c in $cmds; do printf '\t_ "%s"\n' "$c"; done; printf ')\n'; } >tools.go
    go mod tidy
    say "compiling Knative's commands (first time: a few minutes)"
    go build -trimpath -o /dev/null $cmds 2>/dev/null || for c in $cmds; do go build -trimpath -o /dev/null "$c"; done
  )
  {
    yamls "$networking/config" "$caching/config/image.yaml"
    yamls "$serving/config/core"
  } >"$k/serving.yaml"
  {
    yamls "$eventing/config/core"
    yamls "$eventing/config/channels/in-memory-channel"
    yamls "$eventing/config/brokers/mt-channel-broker"
    # ConfigMaps naming the integration images, which eventing-controller requires
    # (only pulled if an EventTransform or IntegrationSource is created).
    yamls "$eventing/third_party/eventing-integrations-latest"
  } >"$k/eventing.yaml"
  metallb=$(moddir "go.universe.tf/metallb@$metallb_version")
  yamls "$metallb/config/crd/bases" >"$k/metallb-crds.yaml"
  touch "$k/manifests.done"
fi
# Traefik's go.mod replaces modules, so `go install traefik@version` refuses it: a
# wrapper module requires it with the same replacements.
t="$out/src/traefik"
if [ ! -f "$t/build.done" ]; then
  say "preparing Traefik $traefik_version (first time: about 10 CPU-minutes)"
  mkdir -p "$t"
  gomod=$(go mod download -json "github.com/traefik/traefik/v3@$traefik_version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  (
    cd "$t"
    { printf 'module berth.local/traefik\n\ngo 1.26.0\n\n'
      awk '/^replace \(/ {on = 1} on {print} on && /^\)/ {on = 0}' "$gomod"; } >go.mod
    printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/traefik/traefik/v3/cmd/traefik"\n' >tools.go
    # Without the `direct` fallback: a module the proxy lacks fails at once.
    proxy=$(go env GOPROXY)
    [ "${proxy%,direct}" = direct ] || export GOPROXY=${proxy%,direct}
    # go get resolves what the command builds from, not every test's modules.
    go get "github.com/traefik/traefik/v3/cmd/traefik@$traefik_version"
    go build -trimpath -o /dev/null github.com/traefik/traefik/v3/cmd/traefik
  )
  # Traefik watches TCPRoute at v1alpha2, which only the experimental channel serves.
  gw=$(moddir "sigs.k8s.io/gateway-api@$gateway_version")
  for f in "$gw"/config/crd/experimental/gateway.networking.*.yaml; do printf -- '---\n'; cat "$f"; printf '\n'; done >"$t/gateway-api-experimental.yaml"
  touch "$t/build.done"
fi
printf 'defaultPlatforms: [linux/amd64]\n' >"$t/.ko.yaml"

# ko reads that folder's .ko.yaml; the base image comes from KO_DEFAULTBASEIMAGE.
printf 'defaultPlatforms: [linux/amd64]\n' >"$k/.ko.yaml"
say "cluster parts ready in $out"
