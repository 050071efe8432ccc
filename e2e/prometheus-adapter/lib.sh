# Shared settings for e2e/prometheus-adapter/{build,up}; sourced, not executed.
# prometheus-adapter serves custom.metrics.k8s.io (the model servers' and gateways' own series, as Pods metrics)
# to the HPA controller, through the API server's aggregation layer, from the e2e stack's Prometheus.
PA_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../node/lib.sh
source "$PA_DIR/../node/lib.sh"
# The one pin: the tool's version in go.mod (a `tool` directive; go.sum verifies every module).
PA_VERSION="$(awk '$1=="sigs.k8s.io/prometheus-adapter" {print $2; exit}' "$PA_DIR/go.mod")"
PA_BIN="$MLROLLOUT_CACHE/prometheus-adapter-$PA_VERSION/bin"
PA_STATE="$NODE_STATE/prometheus-adapter"
# The Prometheus it reads: the e2e stack's (e2e/demo/stack.py: SYSTEM_NS, install_prometheus), through the
# API server's service proxy, so the adapter can start with the node, before any scenario installs it.
PA_PROM_NAMESPACE="${MLROLLOUT_ADAPTER_PROMETHEUS_NAMESPACE:-mlrollout-system}"
PA_PROM_SERVICE="prometheus"
PA_PROM_PORT="9090"
