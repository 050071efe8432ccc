# Shared settings for e2e/metrics-server/{build,up}; sourced, not executed.
# metrics-server serves metrics.k8s.io (pods' and nodes' CPU and memory, from the kubelet's /metrics/resource)
# to the HPA controller and `kubectl top`, through the API server's aggregation layer.
MS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../node/lib.sh
source "$MS_DIR/../node/lib.sh"
# The one pin: the tool's version in go.mod (a `tool` directive; go.sum verifies every module).
MS_VERSION="$(awk '$1=="sigs.k8s.io/metrics-server" {print $2; exit}' "$MS_DIR/go.mod")"
MS_BIN="$MLROLLOUT_CACHE/metrics-server-$MS_VERSION/bin"
MS_STATE="$NODE_STATE/metrics-server"
