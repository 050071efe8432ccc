# Shared settings for e2e/cluster/{build,up,down,status}; sourced, not executed.
# Versions come from go.mod so there is exactly one place that pins them.
CLUSTER_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# module_version MODULE: the version go.mod requires for MODULE (block or single-line require).
module_version() {
  awk -v m="$1" '$1=="require" && $2==m {print $3; exit} $1==m && $2 ~ /^v/ {print $2; exit}' "$CLUSTER_DIR/go.mod"
}
K8S_VERSION="$(module_version k8s.io/kubernetes)"
HELM_VERSION="$(module_version helm.sh/helm/v3)"
ETCD_VERSION="$(module_version go.etcd.io/etcd/server/v3)"
MLROLLOUT_CACHE="${MLROLLOUT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mlrollout}"
CLUSTER_BIN="$MLROLLOUT_CACHE/k8s-$K8S_VERSION/bin"
MLROLLOUT_STATE="${MLROLLOUT_STATE:-/tmp/mlrollout-cluster}"
# Binaries the control plane (and the real-pods e2e tier) needs.
CLUSTER_TOOLS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl helm etcd)

log() { printf '[cluster %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf '[cluster] ERROR: %s\n' "$*" >&2; exit 1; }

# require CMD HINT: fail loudly, naming what to install, when a prerequisite is missing.
require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; $2"
}

# Link flags: version stamps, as the upstream Makefiles set them, so `kubectl version`, the API
# server's /version and helm's built-in Kubernetes version (kubeVersion checks in `helm template`
# and `lint`; v1.20 otherwise) say the truth.
build_ldflags() {
  local minor="${K8S_VERSION#v1.}" p flags="-s -w"
  minor="${minor%%.*}"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    flags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  flags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    flags+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$minor"
  done
  echo "$flags"
}

# Fingerprint of the pinned sources and link flags: the cache is valid only for these.
deps_fingerprint() {
  { cat "$CLUSTER_DIR/go.mod" "$CLUSTER_DIR/go.sum" "$CLUSTER_DIR/cmd/etcd/main.go"; build_ldflags; } \
    | sha256sum | cut -c1-16
}

binaries_ready() {
  [ -f "$CLUSTER_BIN/.fingerprint" ] && [ "$(cat "$CLUSTER_BIN/.fingerprint")" = "$(deps_fingerprint)" ] || return 1
  local t
  for t in "${CLUSTER_TOOLS[@]}"; do [ -x "$CLUSTER_BIN/$t" ] || return 1; done
}

# Layout of the state directory (certificates, data, logs, pids, kubeconfigs).
PKI="$MLROLLOUT_STATE/pki"
LOGS="$MLROLLOUT_STATE/logs"
PIDS="$MLROLLOUT_STATE/pids"
KUBECONFIG_ADMIN="$MLROLLOUT_STATE/admin.kubeconfig"
# Start order; `down` stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler)

# component_pid NAME: prints the pid of NAME if it is running from our cache, else fails.
# Checking the executable guards against a recycled pid: we never signal anything we did not start.
component_pid() {
  local f="$PIDS/$1.pid" pid exe
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && [ -d "/proc/$pid" ] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  # After a rebuild replaced the file, the kernel shows the old one as "<path> (deleted)".
  [ "$exe" = "$CLUSTER_BIN/$1" ] || [ "$exe" = "$CLUSTER_BIN/$1 (deleted)" ] || return 1
  echo "$pid"
}

# free_port: an unused loopback TCP port chosen by the kernel.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

kubectl_admin() { "$CLUSTER_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
