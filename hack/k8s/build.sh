#!/usr/bin/env bash
# Build the real control-plane tools from the pinned module (go.mod + go.sum in this folder)
# into a cache outside the repository, keyed by version. A warm cache costs nothing.
# The last line printed is the bin directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
k8s_version="$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$here/go.mod")"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$here/go.mod")"
helm_version="$(awk '$1=="helm.sh/helm/v4"{print $2; exit}' "$here/go.mod")"
cache="${SLUICE_CACHE:-$HOME/.cache/sluice}"
bin="$cache/k8s/${k8s_version}-etcd${etcd_version}-helm${helm_version}/bin"
mkdir -p "$bin"

minor="${k8s_version#v1.}"; minor="${minor%%.*}"
kver="-X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean"
kver="$kver -X k8s.io/client-go/pkg/version.gitVersion=${k8s_version} -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=${minor} -X k8s.io/client-go/pkg/version.gitTreeState=clean"
hver="-X helm.sh/helm/v4/internal/version.version=${helm_version} -X helm.sh/helm/v4/internal/version.gitTreeState=clean"

build() {  # name package ldflags
  local name="$1" pkg="$2" flags="$3"
  if [ -x "$bin/$name" ]; then echo ">> $name: cached"; return; fi
  local start=$SECONDS
  echo ">> building $name from $pkg (cold builds take minutes; see README)"
  (cd "$here" && CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w $flags" -o "$bin/$name.tmp" "$pkg")
  mv "$bin/$name.tmp" "$bin/$name"
  echo ">> $name built in $((SECONDS - start)) s"
}

build etcd go.etcd.io/etcd/server/v3 ""
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$kver"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$kver"
build kubectl k8s.io/kubernetes/cmd/kubectl "$kver"
build helm helm.sh/helm/v4/cmd/helm "$hver"
"$bin/kube-apiserver" --version >&2
echo "$bin"
