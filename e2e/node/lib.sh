# Shared settings for e2e/node/{deps,build,up,down}; sourced, not executed.
# The node joins the control plane of e2e/cluster/ (same state directory, CA and binaries).
NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$NODE_DIR/../.." && pwd)"
# shellcheck source=../cluster/lib.sh
source "$NODE_DIR/../cluster/lib.sh"

NODE_NAME="mlrollout-node"
NODE_STATE="$MLROLLOUT_STATE/node"
# Pods live on a Linux bridge of our own; the host's address on it is the node address.
BRIDGE="mlr0"
POD_CIDR="10.244.0.0/24"
NODE_IP="10.244.0.1"
# The control plane's service range (e2e/cluster/up) and the cluster DNS address inside it.
SERVICE_CIDR="10.0.0.0/24"
CLUSTER_DNS_IP="10.0.0.10"
CLUSTER_DOMAIN="cluster.local"
CNI_BIN_DIR="/usr/lib/cni"
CONTAINERD_SOCK="$NODE_STATE/containerd/containerd.sock"
NODE_BIN="$MLROLLOUT_CACHE/node/bin"
COREDNS_VERSION="$(awk '$1=="require" && $2=="github.com/coredns/coredns" {print $3; exit} $1=="github.com/coredns/coredns" {print $2; exit}' "$NODE_DIR/gosrc/go.mod")"
# Processes of the node, in start order (`down` stops them in reverse).
NODE_COMPONENTS=(containerd apiproxy kubelet kube-proxy metrics-server prometheus-adapter)

nlog() { printf '[node %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# node_pid NAME: the pid of a node process we started, after checking its command line,
# so a recycled pid is never signalled.
node_pid() {
  local f="$NODE_STATE/pids/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$NODE_STATE" || return 1
  echo "$pid"
}

ctr_node() { ctr --address "$CONTAINERD_SOCK" "$@"; }

# other_node_state: prints the state directory of a node started from ANOTHER state directory that still
# runs (its containerd), and fails if there is none. The bridge, the pod network and kube-proxy's rules
# exist once per machine, so only one node can run at a time; control planes alone coexist freely.
other_node_state() {
  local pid cmd dir
  for pid in $(pgrep -x containerd || true); do
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || continue
    dir="$(sed -n 's|.*--config \(/[^ ]*\)/node/containerd/config\.toml.*|\1|p' <<<"$cmd")"
    if [ -n "$dir" ] && [ "$(realpath -m "$dir")" != "$(realpath -m "$MLROLLOUT_STATE")" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

# host_cert DIR NAME SUBJECT [SAN]: DIR/NAME.{crt,key} signed by the cluster CA, created once: the serving and
# client certificates of the host processes behind an APIService (e2e/metrics-server, e2e/prometheus-adapter).
host_cert() {
  local dir="$1" name="$2" subj="$3" san="${4:-}"
  [ -f "$dir/$name.crt" ] && return 0
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$name.key" 2>/dev/null
  openssl req -new -key "$dir/$name.key" -subj "$subj" -out "$dir/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# host_kubeconfig DIR USER: DIR/kubeconfig for the API server as USER, with DIR/client.{crt,key} (host_cert).
host_kubeconfig() {
  local dir="$1" user="$2"
  cat >"$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: mlrollout-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $dir/client.crt
    client-key: $dir/client.key
contexts:
- name: mlrollout-test
  context: {cluster: mlrollout-test, user: $user}
current-context: mlrollout-test
KC
  chmod 600 "$dir/kubeconfig"
}

# go_tool_build NAME VERSION DIR BIN OUT PACKAGE LDFLAGS CHECK: builds the Go tool PACKAGE, pinned by a `tool`
# directive in DIR/go.mod (go.sum verifies every module), into BIN/OUT, a cache outside the repository.
# Nothing is built when BIN holds OUT built from the same go.mod and go.sum; a lock serialises concurrent
# builds. CHECK is a function given the fresh binary's path: the binary is moved into place only if it passes.
go_tool_build() {
  local name="$1" version="$2" dir="$3" bin="$4" out="$5" package="$6" ldflags="$7" check="$8"
  local fingerprint start
  fingerprint="$(cat "$dir/go.mod" "$dir/go.sum" | sha256sum | cut -c1-16)"
  if _go_tool_built "$bin/$out" "$fingerprint"; then
    nlog "$name $version already built in $bin"
    return 0
  fi
  command -v go >/dev/null 2>&1 || { [ -x /usr/local/go/bin/go ] && PATH="$PATH:/usr/local/go/bin"; }
  require go "install Go >= 1.24 (https://go.dev/dl/)"
  mkdir -p "$bin"
  exec 9>"$MLROLLOUT_CACHE/$name-build.lock"
  flock 9
  if _go_tool_built "$bin/$out" "$fingerprint"; then
    nlog "$name $version built by another process"
    return 0
  fi
  start=$(date +%s)
  nlog "building $name $version into $bin (a few minutes the first time)"
  GO_TOOL_TMP="$bin.tmp.$$"  # global: the EXIT trap may run after this function returns
  rm -rf "$GO_TOOL_TMP"; mkdir -p "$GO_TOOL_TMP"
  trap 'rm -rf "$GO_TOOL_TMP"' EXIT
  (cd "$dir" && CGO_ENABLED=0 go build -p "${MLROLLOUT_BUILD_JOBS:-2}" -mod=readonly -trimpath \
    -ldflags="$ldflags" -o "$GO_TOOL_TMP/$out" "$package")
  "$check" "$GO_TOOL_TMP/$out"
  mv -f "$GO_TOOL_TMP/$out" "$bin/"
  echo "$fingerprint" >"$bin/.fingerprint"
  nlog "built $name in $(( $(date +%s) - start ))s"
}

_go_tool_built() { [ -x "$1" ] && [ "$(cat "$(dirname "$1")/.fingerprint" 2>/dev/null)" = "$2" ]; }
