#!/usr/bin/env bash
# Builds the control plane that tests/kube runs (etcd, kube-apiserver, kube-controller-manager)
# helm (the offline chart checks), netpol-verdict (the NetworkPolicy checks) and the one-node
# cluster's node (kube-scheduler, kubelet, kube-proxy, CoreDNS: make cluster-up) from the Go
# modules pinned in tools/kube, tools/etcd, tools/helm, tools/netpol and tools/coredns, into
# ${LOCAL_DIR:-<repo>/.local}/kube/bin, and takes the Prometheus Operator's
# CRDs (ServiceMonitor, PodMonitor, PrometheusRule: the chart renders them when a cluster has
# them) from its pinned Go module into ${LOCAL_DIR:-<repo>/.local}/kube/crds.
#
# Idempotent: a stamp file records a hash of the pins (go.mod, go.sum), this script and the Go
# version; when it matches and the binaries are there, nothing is built. Safe to run
# concurrently (a lock serialises builds). See tools/kube/README.md.
#
# Environment:
#   LOCAL_DIR               where .local lives (default <repo>/.local)
#   GO                      the go command (default: go on PATH, else /usr/local/go/bin/go)
#   KUBE_BUILD_PARALLELISM  go build -p (default 2; a cold build peaks at ~2.6 GiB with 2)
#   KUBE_BUILD_FORCE=1      build even when the stamp matches
#
# build.sh --check builds nothing: it exits 0 when the binaries are up to date, 1 when not.
set -euo pipefail

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
local_dir="${LOCAL_DIR:-$repo/.local}"
out="$local_dir/kube"
bin="$out/bin"
stamp="$out/build.stamp"
etcd_module="$repo/tools/etcd"
helm_module="$repo/tools/helm"
netpol_module="$repo/tools/netpol"
coredns_module="$repo/tools/coredns"

say() { echo "==> kube: $*"; }

go="${GO:-}"
if [[ -z "$go" ]]; then
  go="$(command -v go || true)"
  [[ -n "$go" ]] || go=/usr/local/go/bin/go
fi
if [[ ! -x "$go" ]]; then
  say "no Go toolchain (set GO=/path/to/go; Go >= 1.26 is needed)" >&2
  exit 1
fi

# The pins are the whole story: never switch toolchains, never edit go.mod/go.sum, never stamp
# VCS state (a fresh clone's module cache may be empty; go downloads what go.sum lists).
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
export CGO_ENABLED=0
parallelism="${KUBE_BUILD_PARALLELISM:-2}"

fingerprint="$(
  {
    "$go" version
    cat "$here/go.mod" "$here/go.sum" "$etcd_module/go.mod" "$etcd_module/go.sum"
    cat "$helm_module/go.mod" "$helm_module/go.sum"
    cat "$netpol_module/go.mod" "$netpol_module/go.sum" "$netpol_module/main.go"
    cat "$coredns_module/go.mod" "$coredns_module/go.sum" "$coredns_module/main.go"
    cat "${BASH_SOURCE[0]}"
  } | sha256sum | cut -d' ' -f1
)"
binaries=(etcd kube-apiserver kube-controller-manager kubectl helm netpol-verdict
  kube-scheduler kubelet kube-proxy coredns)
crds="$out/crds"
# The releases whose CRDs the chart is checked against, each with its module's go.sum hash:
# the download is verified against it, as go.sum would. The Prometheus Operator's kinds
# (ServiceMonitor, PodMonitor, PrometheusRule) and KEDA's ScaledObject (the processor's
# optional lag-based autoscaling).
prometheus_operator_module=github.com/prometheus-operator/prometheus-operator
prometheus_operator_version=v0.85.0
prometheus_operator_sum="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="
prometheus_operator_crds=(monitoring.coreos.com_{servicemonitors,podmonitors,prometheusrules}.yaml)
keda_module=github.com/kedacore/keda/v2
keda_version=v2.21.0
keda_sum="h1:R6z2HZvstK4RLUMxroNACzBj74xGxt3kG59b5Xc+Xps="
keda_crds=(keda.sh_scaledobjects.yaml)

up_to_date() {
  [[ "${KUBE_BUILD_FORCE:-0}" != 1 && -f "$stamp" ]] || return 1
  [[ "$(cat "$stamp")" == "$fingerprint" ]] || return 1
  local name
  for name in "${binaries[@]}"; do [[ -x "$bin/$name" ]] || return 1; done
  for name in "${prometheus_operator_crds[@]}"; do
    [[ -f "$crds/prometheus-operator/$name" ]] || return 1
  done
  for name in "${keda_crds[@]}"; do [[ -f "$crds/keda/$name" ]] || return 1; done
}

if ((check_only)); then
  up_to_date
  exit
fi

mkdir -p "$bin"
exec 9>"$out/build.lock"
flock 9 # a concurrent build.sh may have just built them
if up_to_date; then
  say "binaries up to date in $bin"
  exit 0
fi

module_version() { (cd "$1" && "$go" list -m -f '{{.Version}}' "$2"); }

# build MODULE_DIR PACKAGE NAME LDFLAGS: go build into a temporary name, then move into place.
build() {
  local dir="$1" package="$2" name="$3" ldflags="$4" started=$SECONDS
  say "building $name ($package)"
  (cd "$dir" && "$go" build -p "$parallelism" -trimpath -ldflags "$ldflags" \
    -o "$bin/.$name.tmp" "$package")
  mv -f "$bin/.$name.tmp" "$bin/$name"
  say "built $name in $((SECONDS - started)) s"
}

started=$SECONDS
rm -f "$stamp"
say "downloading modules (go.sum pins them)"
(cd "$here" && "$go" mod download)
(cd "$etcd_module" && "$go" mod download)
(cd "$helm_module" && "$go" mod download)
(cd "$netpol_module" && "$go" mod download)
(cd "$coredns_module" && "$go" mod download)
say "modules ready in $((SECONDS - started)) s (cache: $("$go" env GOMODCACHE))"
kube_version="$(module_version "$here" k8s.io/kubernetes)"
etcd_version="$(module_version "$etcd_module" go.etcd.io/etcd/server/v3)"
say "kubernetes $kube_version, etcd $etcd_version, $("$go" version)"

# What hack/lib/version.sh stamps in a release build (the binary version itself, used for
# feature gates and emulation, is compiled in: component-base/version.DefaultKubeBinaryVersion).
minor="${kube_version#v1.}"
minor="${minor%%.*}"
kube_ldflags="-s -w"
for package in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  kube_ldflags+=" -X $package.gitVersion=$kube_version -X $package.gitMajor=1"
  kube_ldflags+=" -X $package.gitMinor=$minor -X $package.gitTreeState=clean"
done

build "$etcd_module" go.etcd.io/etcd/server/v3 etcd \
  "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_version"
build "$here" k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$kube_ldflags"
build "$here" k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$kube_ldflags"
build "$here" k8s.io/kubernetes/cmd/kubectl kubectl "$kube_ldflags"
helm_version="$(module_version "$helm_module" helm.sh/helm/v4)"
build "$helm_module" helm.sh/helm/v4/cmd/helm helm \
  "-s -w -X helm.sh/helm/v4/internal/version.version=$helm_version"
build "$netpol_module" . netpol-verdict "-s -w"
for command in kube-scheduler kubelet kube-proxy; do
  build "$here" "k8s.io/kubernetes/cmd/$command" "$command" "$kube_ldflags"
done
coredns_version="$(module_version "$coredns_module" github.com/coredns/coredns)"
build "$coredns_module" . coredns \
  "-s -w -X github.com/coredns/coredns/coremain.GitCommit=module-$coredns_version"

# fetch_crds MODULE VERSION SUM FROM INTO FILE...: the module from the Go module proxy,
# checked against SUM; FILEs copied from its directory FROM into $crds/INTO.
fetch_crds() {
  local module="$1" version="$2" sum="$3" from="$4" into="$crds/$5" download module_dir module_sum
  shift 5
  say "$module $version CRDs"
  download="$(cd / && GOFLAGS='' "$go" mod download -json "$module@$version")"
  module_dir="$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$download")"
  module_sum="$(sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p' <<<"$download")"
  if [[ "$module_sum" != "$sum" ]]; then
    say "$module@$version: hash $module_sum, expected $sum" >&2
    exit 1
  fi
  mkdir -p "$into"
  local name
  for name in "$@"; do install -m 0644 "$module_dir/$from/$name" "$into/"; done
}
fetch_crds "$prometheus_operator_module" "$prometheus_operator_version" "$prometheus_operator_sum" \
  example/prometheus-operator-crd prometheus-operator "${prometheus_operator_crds[@]}"
fetch_crds "$keda_module" "$keda_version" "$keda_sum" config/crd/bases keda "${keda_crds[@]}"

echo "$fingerprint" >"$stamp"
say "done in $((SECONDS - started)) s: $bin"
