#!/usr/bin/env bash
# A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-controller-manager
# (garbage collection, namespaces, service accounts) and kubectl, built from source through the
# Go module proxy at pinned versions and cached. There is no kubelet and no scheduler: pods are
# stored but never run. See notes/k8s-control-plane.md.
#
#   scripts/k8s-control-plane.sh install
#       Builds the binaries once (about 8 minutes on 2 cores, module downloads included) into
#       the cache and prints the bin directory on stdout. A later run finds the cache at once.
#   scripts/k8s-control-plane.sh start DIR [--with-controller-manager]
#       Starts etcd and kube-apiserver (and the controller manager) on 127.0.0.1 with all state,
#       logs (DIR/*.log) and pid files (DIR/*.pid) in DIR, waits until /readyz answers ok and
#       prints the path of DIR/kubeconfig (an admin token in group system:masters).
#       DIR/env holds the ports, the token and the bin directory as shell assignments.
#   scripts/k8s-control-plane.sh stop DIR
#       Ends the process groups recorded in DIR/*.pid (only ours) and waits until they are gone.
#   scripts/k8s-control-plane.sh status DIR
#       Exits 0 when the apiserver recorded in DIR answers /readyz.
#   scripts/k8s-control-plane.sh gen-mod
#       Maintainers only: regenerates scripts/k8s/*/go.mod and go.sum for the pinned versions.
#
# Environment:
#   RAYSERVICE_K8S_CACHE       cache dir (default $HOME/.cache/rayservice/k8s-$K8S_VERSION)
#   RAYSERVICE_GO              the go command (default: go on PATH, else /usr/local/go/bin/go)
#   RAYSERVICE_K8S_ETCD_PORT, RAYSERVICE_K8S_ETCD_PEER_PORT, RAYSERVICE_K8S_APISERVER_PORT
#                              fixed ports (default: free ports picked at random)
#   RAYSERVICE_K8S_START_TIMEOUT  seconds to wait for readiness (default 180)
#   RAYSERVICE_K8S_APISERVER_EXTRA_ARGS, RAYSERVICE_K8S_CONTROLLER_MANAGER_EXTRA_ARGS
#                              extra flags, split on whitespace
set -euo pipefail

K8S_VERSION=v1.34.12   # k8s.io/kubernetes; the staging modules (k8s.io/api, ...) are v0.34.12
ETCD_VERSION=v3.6.5    # go.etcd.io/etcd/server/v3: the etcd that kubernetes v1.34.12 is tested with
BUILD_REV=1            # bump when the build recipe changes, to invalidate caches

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mods="$here/k8s"
cache="${RAYSERVICE_K8S_CACHE:-${HOME}/.cache/rayservice/k8s-${K8S_VERSION}}"
bin="$cache/bin"
marker="$cache/.complete"

log() { printf 'k8s-control-plane: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

gocmd() {
  local go="${RAYSERVICE_GO:-}"
  if [ -z "$go" ]; then
    if command -v go >/dev/null 2>&1; then go="$(command -v go)"
    elif [ -x /usr/local/go/bin/go ]; then go=/usr/local/go/bin/go
    else die "no go command (set RAYSERVICE_GO)"; fi
  fi
  GOTOOLCHAIN=local GOFLAGS="${K8S_GOFLAGS:--mod=readonly} -buildvcs=false" CGO_ENABLED=0 GOMAXPROCS="${GOMAXPROCS:-2}" \
    nice -n 10 "$go" "$@"
}

# What the cache must have been built from; written into the marker and compared on reuse.
stamp() {
  printf 'k8s=%s etcd=%s rev=%s mods=%s\n' "$K8S_VERSION" "$ETCD_VERSION" "$BUILD_REV" \
    "$(cat "$mods"/kubernetes/go.mod "$mods"/kubernetes/go.sum "$mods"/etcd/go.mod "$mods"/etcd/go.sum \
       | sha256sum | cut -c1-16)"
}

installed() {
  [ -f "$marker" ] && [ "$(cat "$marker")" = "$(stamp)" ] || return 1
  local b
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [ -x "$bin/$b" ] || return 1
  done
}

cmd_install() {
  if installed; then
    log "using cached binaries in $bin"
    echo "$bin"
    return 0
  fi
  grep -qE "^(require |\s+)k8s.io/kubernetes ${K8S_VERSION}( |\$)" "$mods/kubernetes/go.mod" \
    || die "$mods/kubernetes/go.mod does not pin k8s.io/kubernetes $K8S_VERSION (run gen-mod)"
  grep -qE "^(require |\s+)go.etcd.io/etcd/server/v3 ${ETCD_VERSION}( |\$)" "$mods/etcd/go.mod" \
    || die "$mods/etcd/go.mod does not pin go.etcd.io/etcd/server/v3 $ETCD_VERSION (run gen-mod)"
  log "building kubernetes $K8S_VERSION and etcd $ETCD_VERSION into $cache (this takes a while)"
  mkdir -p "$cache"
  rm -f "$marker"
  local tmp="$cache/bin.tmp" started minor="${K8S_VERSION#v1.}"
  minor="${minor%%.*}"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  started=$(date +%s)
  # The version that kubectl and /version report; kubernetes' own build sets the same variables.
  local x='' pkg
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    x="$x -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    x="$x -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "downloading modules"
  (cd "$mods/kubernetes" && gocmd mod download) >&2
  (cd "$mods/etcd" && gocmd mod download) >&2
  log "building etcd ($(( $(date +%s) - started ))s)"
  (cd "$mods/etcd" && gocmd build -trimpath -ldflags='-s -w' -o "$tmp/etcd" go.etcd.io/etcd/server/v3) >&2
  log "building kube-apiserver, kube-controller-manager, kubectl ($(( $(date +%s) - started ))s)"
  (cd "$mods/kubernetes" && gocmd build -trimpath -ldflags="-s -w$x" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl) >&2
  "$tmp/etcd" --version >&2
  "$tmp/kube-apiserver" --version >&2
  rm -rf "$bin"
  mv "$tmp" "$bin"
  stamp >"$marker"
  log "built in $(( $(date +%s) - started ))s: $(cd "$bin" && du -sh -- * | tr '\t\n' '  ')"
  echo "$bin"
}

# Regenerates the scratch modules. k8s.io/kubernetes is not meant to be used as a module: its
# go.mod requires every staging module (k8s.io/api, ...) at v0.0.0 and replaces it with
# ./staging/src/..., and replace lines of a dependency are ignored. So the scratch module repeats
# that replace list, mapping each staging module to its published v0.X.Y release.
cmd_gen_mod() {
  local info dir gomod staging
  info="$(cd /tmp && gocmd mod download -json "k8s.io/kubernetes@$K8S_VERSION")"
  gomod="$(printf '%s\n' "$info" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')"
  [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION: $info"
  staging="$(sed -n 's#^\s*\(k8s\.io/[^ ]*\) => \./staging/src/.*#\1#p' "$gomod")"
  [ -n "$staging" ] || die "no staging replace lines in $gomod"
  dir="$mods/kubernetes"
  mkdir -p "$dir"
  {
    echo "// Generated by scripts/k8s-control-plane.sh gen-mod: builds kubernetes $K8S_VERSION from the module proxy."
    echo "module rayservice.local/k8s/kubernetes"
    echo
    grep -E '^go [0-9]' "$gomod"
    echo
    grep -E '^godebug ' "$gomod" || true
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "tool ("
    echo "	k8s.io/kubernetes/cmd/kube-apiserver"
    echo "	k8s.io/kubernetes/cmd/kube-controller-manager"
    echo "	k8s.io/kubernetes/cmd/kubectl"
    echo ")"
    echo
    echo "// The staging modules of k8s.io/kubernetes (its go.mod: k8s.io/X => ./staging/src/k8s.io/X)."
    echo "replace ("
    local m
    for m in $staging; do printf '\t%s => %s v0.%s\n' "$m" "$m" "${K8S_VERSION#v1.}"; done
    echo ")"
  } >"$dir/go.mod"
  rm -f "$dir/go.sum"
  (cd "$dir" && K8S_GOFLAGS=-mod=mod gocmd mod tidy) >&2
  dir="$mods/etcd"
  mkdir -p "$dir"
  {
    echo "// Generated by scripts/k8s-control-plane.sh gen-mod: builds etcd $ETCD_VERSION from the module proxy."
    echo "module rayservice.local/k8s/etcd"
    echo
    echo "go 1.24"
    echo
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    echo
    echo "tool go.etcd.io/etcd/server/v3"
  } >"$dir/go.mod"
  rm -f "$dir/go.sum"
  (cd "$dir" && K8S_GOFLAGS=-mod=mod gocmd mod tidy) >&2
  log "regenerated $mods/kubernetes and $mods/etcd"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  local p
  for _ in $(seq 1 200); do
    # Below 32768: the kernel hands out ephemeral ports (outgoing connections) above it.
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 12000 ))
    case " ${taken_ports:-} " in *" $p "*) continue ;; esac
    if ! port_in_use "$p"; then taken_ports="${taken_ports:-} $p"; echo "$p"; return 0; fi
  done
  die "no free port found"
}

# Starts "$@" in a new session (so in its own process group) and records its pid in DIR/NAME.pid.
spawn() {
  local name="$1"; shift
  local pidfile="$dir/$name.pid"
  rm -f "$pidfile"
  # shellcheck disable=SC2016  # $$, $0 and $@ are the inner shell's
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$dir/$name.log" 2>&1 &
  for _ in $(seq 1 100); do
    [ -s "$pidfile" ] && return 0
    sleep 0.1
  done
  die "$name did not start (see $dir/$name.log)"
}

# Process state from /proc (zombies count as gone), without forking.
running() {
  local s
  read -r s 2>/dev/null <"/proc/$1/stat" || return 1
  s="${s##*) }"
  [ "${s%% *}" != Z ]
}
# Whether any live process is in process group $1.
group_alive() {
  local f s state _ppid pgrp _rest
  for f in /proc/[0-9]*/stat; do
    read -r s 2>/dev/null <"$f" || continue
    read -r state _ppid pgrp _rest <<<"${s##*) }"
    if [ "$pgrp" = "$1" ] && [ "$state" != Z ]; then return 0; fi
  done
  return 1
}
alive() { [ -s "$dir/$1.pid" ] && running "$(cat "$dir/$1.pid")"; }

# Waits until "$2..." succeeds, failing early when process $1 has exited.
wait_for() {
  local name="$1"; shift
  while :; do
    if "$@"; then return 0; fi
    if ! alive "$name"; then
      log "$name exited; last lines of $dir/$name.log:"
      tail -n 30 "$dir/$name.log" >&2 || true
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name not ready after ${timeout}s; last lines of $dir/$name.log:"
      tail -n 30 "$dir/$name.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
}

etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"'; }
apiserver_ready() {
  [ "$(curl -sk --max-time 3 -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" 2>/dev/null)" = ok ]
}

cmd_start() {
  dir="${1:-}"
  [ -n "$dir" ] || die "usage: start DIR [--with-controller-manager]"
  shift
  local with_cm=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --with-controller-manager) with_cm=1 ;;
      *) die "unknown option: $1" ;;
    esac
    shift
  done
  local c
  for c in openssl curl setsid; do command -v "$c" >/dev/null 2>&1 || die "$c is required"; done
  cmd_install >/dev/null
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local n
  for n in etcd kube-apiserver kube-controller-manager; do
    if alive "$n"; then die "$n is already running for $dir (stop it first)"; fi
  done
  timeout="${RAYSERVICE_K8S_START_TIMEOUT:-180}"
  deadline=$(( $(date +%s) + timeout ))
  taken_ports=''
  etcd_port="${RAYSERVICE_K8S_ETCD_PORT:-$(free_port)}"
  taken_ports="$taken_ports $etcd_port"
  local peer_port="${RAYSERVICE_K8S_ETCD_PEER_PORT:-$(free_port)}"
  taken_ports="$taken_ports $peer_port"
  api_port="${RAYSERVICE_K8S_APISERVER_PORT:-$(free_port)}"

  # Keys and the token survive a restart in the same DIR (so do etcd's data and the certs).
  mkdir -p "$dir/pki" "$dir/certs"
  if [ ! -s "$dir/pki/sa.key" ]; then
    openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$dir/pki/sa.key" -pubout -out "$dir/pki/sa.pub" 2>/dev/null
  fi
  if [ ! -s "$dir/pki/tokens.csv" ]; then
    echo "$(openssl rand -hex 24),admin,admin,\"system:masters\"" >"$dir/pki/tokens.csv"
  fi
  chmod 600 "$dir/pki/sa.key" "$dir/pki/tokens.csv"
  token="$(cut -d, -f1 "$dir/pki/tokens.csv")"

  start_ok=0
  trap 'if [ "$start_ok" != 1 ]; then log "start failed; stopping what was started"; cmd_stop "$dir" || true; fi' EXIT

  log "starting etcd on 127.0.0.1:$etcd_port"
  spawn etcd "$bin/etcd" \
    --name=rayservice \
    --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" \
    --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="rayservice=http://127.0.0.1:$peer_port" \
    --unsafe-no-fsync \
    --log-level=warn
  wait_for etcd etcd_healthy

  log "starting kube-apiserver on https://127.0.0.1:$api_port"
  # shellcheck disable=SC2086
  spawn kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --secure-port="$api_port" \
    --cert-dir="$dir/certs" \
    --token-auth-file="$dir/pki/tokens.csv" \
    --authorization-mode=RBAC \
    --service-account-key-file="$dir/pki/sa.pub" \
    --service-account-signing-key-file="$dir/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --api-audiences=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range=10.96.0.0/16 \
    --endpoint-reconciler-type=none \
    --profiling=false \
    ${RAYSERVICE_K8S_APISERVER_EXTRA_ARGS:-}
  wait_for kube-apiserver apiserver_ready

  # The apiserver wrote a self-signed CA and serving cert (for 127.0.0.1 and localhost) into
  # certs/apiserver.crt, serving cert first, CA last: the last certificate is the CA to trust.
  awk '/-----BEGIN CERTIFICATE-----/{buf=""} {buf=buf $0 "\n"} /-----END CERTIFICATE-----/{last=buf} END{printf "%s", last}' \
    "$dir/certs/apiserver.crt" >"$dir/certs/ca.crt"
  local kubeconfig="$dir/kubeconfig"
  cat >"$kubeconfig.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rayservice
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 <"$dir/certs/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: rayservice
  context:
    cluster: rayservice
    user: admin
    namespace: default
current-context: rayservice
EOF
  chmod 600 "$kubeconfig.tmp"
  mv "$kubeconfig.tmp" "$kubeconfig"

  if [ "$with_cm" = 1 ]; then
    log "starting kube-controller-manager"
    # shellcheck disable=SC2086
    spawn kube-controller-manager "$bin/kube-controller-manager" \
      --kubeconfig="$kubeconfig" \
      --controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller \
      --service-account-private-key-file="$dir/pki/sa.key" \
      --root-ca-file="$dir/certs/ca.crt" \
      --leader-elect=false \
      --bind-address=127.0.0.1 \
      --secure-port=0 \
      --profiling=false \
      ${RAYSERVICE_K8S_CONTROLLER_MANAGER_EXTRA_ARGS:-}
    # Ready once the service account controller made the "default" service account.
    wait_for kube-controller-manager "$bin/kubectl" --kubeconfig="$kubeconfig" --request-timeout=3s \
      -n default get serviceaccount default -o name >/dev/null 2>&1
  fi
  start_ok=1

  {
    echo "K8S_BIN='$bin'"
    echo "KUBECONFIG='$kubeconfig'"
    echo "K8S_APISERVER_URL='https://127.0.0.1:$api_port'"
    echo "K8S_APISERVER_PORT=$api_port"
    echo "K8S_ETCD_PORT=$etcd_port"
    echo "K8S_TOKEN='$token'"
  } >"$dir/env"
  log "ready: https://127.0.0.1:$api_port (kubeconfig $kubeconfig)"
  echo "$kubeconfig"
}

# Ends the process group of DIR/NAME.pid if its leader is still the binary we started.
stop_one() {
  local name="$1" pidfile="$dir/$1.pid" pid exe
  [ -s "$pidfile" ] || return 0
  pid="$(cat "$pidfile")"
  case "$pid" in ''|*[!0-9]*) rm -f "$pidfile"; return 0 ;; esac
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
  exe="${exe% (deleted)}"   # the binary was rebuilt while it ran
  if [ "${exe##*/}" != "$name" ]; then
    # Gone already (or the pid now belongs to something else): nothing of ours to end.
    rm -f "$pidfile"
    return 0
  fi
  log "stopping $name (process group $pid)"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 150); do
    group_alive "$pid" || break
    sleep 0.1
  done
  if group_alive "$pid"; then
    log "$name did not exit 15s after SIGTERM; sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      group_alive "$pid" || break
      sleep 0.1
    done
  fi
  group_alive "$pid" && die "process group $pid ($name) is still there"
  wait "$pid" 2>/dev/null || true   # reap it when this shell started it (a failed start)
  rm -f "$pidfile"
}

cmd_stop() {
  dir="${1:-}"
  [ -n "$dir" ] || die "usage: stop DIR"
  [ -d "$dir" ] || return 0
  stop_one kube-controller-manager
  stop_one kube-apiserver
  stop_one etcd
}

cmd_status() {
  dir="${1:-}"
  if [ -z "$dir" ] || [ ! -f "$dir/env" ]; then die "usage: status DIR (started with start DIR)"; fi
  # shellcheck disable=SC1091
  api_port="$(. "$dir/env" && echo "$K8S_APISERVER_PORT")"
  token="$(cut -d, -f1 "$dir/pki/tokens.csv")"
  apiserver_ready
}

case "${1:-}" in
  install) shift; cmd_install "$@" ;;
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  gen-mod) shift; cmd_gen_mod "$@" ;;
  *) die "usage: $0 install | start DIR [--with-controller-manager] | stop DIR | status DIR | gen-mod" ;;
esac
