#!/usr/bin/env bash
# Builds the binaries of berth's test control plane (etcd, kube-apiserver; more on
# request) from the Go module proxy, and gathers the CRDs berth touches, into a cache
# outside the repository. Idempotent: what is there already is not built again.
#
# usage: .ci/controlplane.sh <cache-dir> [extra k8s commands: kubelet kube-proxy ...]
set -euo pipefail
out=$(realpath -m "$1"); shift
k8s_version=${K8S_VERSION:-v1.36.3}
etcd_version=${ETCD_VERSION:-v3.6.16}
serving_version=${KNATIVE_SERVING_VERSION:-v0.50.0}
eventing_version=${KNATIVE_EVENTING_VERSION:-v0.50.0}
gateway_version=${GATEWAY_API_VERSION:-v1.6.3}
minor=$(cut -d. -f2 <<<"$k8s_version")
staging="v0.${minor}.$(cut -d. -f3 <<<"$k8s_version")"
cmds=(kube-apiserver "$@")
export GOFLAGS=-mod=mod GOWORK=off

say() { printf '==> %s\n' "$*" >&2; }
mkdir -p "$out/bin" "$out/src/k8s" "$out/src/etcd" "$out/crds"

# Kubernetes: a module that requires k8s.io/kubernetes and pins every staging module
# (which k8s.io/kubernetes replaces with ./staging upstream) to its published v0.x.
cd "$out/src/k8s"
if [ ! -f go.sum ]; then
  say "resolving k8s.io/kubernetes $k8s_version (first time: a few minutes)"
  kmod=$(go mod download -json "k8s.io/kubernetes@$k8s_version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    printf 'module berth.local/k8sbins\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes %s\n\n' "$k8s_version"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging' "$kmod" |
      awk -v v="$staging" '{print "replace " $1 " => " $1 " " v}' | sort -u
  } >go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in kube-apiserver kubelet kube-controller-manager kube-scheduler kube-proxy kubectl; do
      printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"
    done
    printf ')\n'
  } >tools.go
  go mod tidy
fi
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
for c in "${cmds[@]}"; do
  if [ ! -x "$out/bin/$c" ]; then
    say "building $c $k8s_version (first time: about 4 minutes on 2 cores)"
    go build -trimpath -ldflags "$ldflags" -o "$out/bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
    mv "$out/bin/$c.tmp" "$out/bin/$c"
  fi
done

# etcd: the server module's go.mod has replace directives, so `go install pkg@v` refuses;
# a wrapper module builds it.
if [ ! -x "$out/bin/etcd" ]; then
  say "building etcd $etcd_version"
  cd "$out/src/etcd"
  {
    printf 'module berth.local/etcdbin\n\ngo 1.26.0\n\nrequire (\n'
    for m in server api client/pkg client pkg; do printf '\tgo.etcd.io/etcd/%s/v3 %s\n' "$m" "$etcd_version"; done
    printf ')\n'
  } >go.mod
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
  go mod tidy
  go build -trimpath -ldflags "-s -w" -o "$out/bin/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$out/bin/etcd.tmp" "$out/bin/etcd"
fi

# CRDs, copied out of the modules that publish them.
moddir() { go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p'; }
crds() { # <name> <module@version> <dir inside module> [filename glob]
  local dst="$out/crds/$1" src
  [ -d "$dst" ] && return 0
  say "collecting CRDs: $2 $3"
  src=$(moddir "$2")
  mkdir -p "$dst.tmp"
  find -L "$src/$3" -maxdepth 1 -name "${4:-*.yaml}" -exec cp {} "$dst.tmp/" \;
  chmod -R u+w "$dst.tmp"
  mv "$dst.tmp" "$dst"
}
crds knative-serving "knative.dev/serving@$serving_version" config/core/300-resources
crds knative-eventing "knative.dev/eventing@$eventing_version" config/core/resources
crds gateway-api "sigs.k8s.io/gateway-api@$gateway_version" config/crd/standard
say "control plane ready in $out"

