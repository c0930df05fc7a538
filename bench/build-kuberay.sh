#!/usr/bin/env bash
# Builds KubeRay's operator, the baseline of bench/operator_bench.py, from the Go module proxy at a
# pinned version, and copies its CRDs next to it. Cached: a second run prints the cache at once.
# Run by hand for the benchmark; not part of CI or scripts/test.sh.
#
#   bash bench/build-kuberay.sh      # prints the cache dir: bin/kuberay-operator, crds/*.yaml
#
# Environment: RAYSERVICE_KUBERAY_CACHE (default ~/.cache/rayservice/kuberay-$VERSION),
# RAYSERVICE_GO (default: go on PATH, else /usr/local/go/bin/go).
set -euo pipefail

VERSION=v1.4.0   # github.com/ray-project/kuberay/ray-operator; its main package is the module root
MODULE=github.com/ray-project/kuberay/ray-operator
cache="${RAYSERVICE_KUBERAY_CACHE:-$HOME/.cache/rayservice/kuberay-$VERSION}"

log() { printf 'build-kuberay: %s\n' "$*" >&2; }

if [ -x "$cache/bin/kuberay-operator" ] && [ -f "$cache/crds/ray.io_rayservices.yaml" ]; then
  log "using cached build in $cache"
  echo "$cache"
  exit 0
fi

go="${RAYSERVICE_GO:-$(command -v go || echo /usr/local/go/bin/go)}"
gocmd() { GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0 nice -n 10 "$go" "$@"; }

mkdir -p "$cache/src" "$cache/bin" "$cache/crds"
cd "$cache/src"
# A throwaway main module that requires the pinned version; its go.mod decides every dependency.
[ -f go.mod ] || gocmd mod init kuberay-bench-build >&2
log "go get $MODULE@$VERSION"
gocmd get "$MODULE@$VERSION" >&2
log "go build (about 2 minutes on 2 cores)"
gocmd build -trimpath -o "$cache/bin/kuberay-operator.tmp" "$MODULE"
moddir="$(gocmd list -m -f '{{.Dir}}' "$MODULE")"
install -m 0644 "$moddir"/config/crd/bases/ray.io_*.yaml "$cache/crds/"
mv "$cache/bin/kuberay-operator.tmp" "$cache/bin/kuberay-operator"
log "built $cache/bin/kuberay-operator ($VERSION)"
echo "$cache"
