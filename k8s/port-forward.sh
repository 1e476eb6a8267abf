#!/usr/bin/env bash
# Forwards the seed's addresses on 127.0.0.1 to the cluster until Ctrl-C:
#   receiver 8001, informer 8004 (namespace jobflow), Grafana 3000, Prometheus 9090 (monitoring).
# A service that is not deployed (e.g. no monitoring/) is skipped with a note.
# Environment: KUBE_NAMESPACE (jobflow), RELEASE (jobflow), MONITORING_NAMESPACE (monitoring).
set -euo pipefail
namespace="${KUBE_NAMESPACE:-jobflow}"
release="${RELEASE:-jobflow}"
monitoring="${MONITORING_NAMESPACE:-monitoring}"
# The release's Service of a component, found by the chart's labels (names may be truncated).
service_of() {
  kubectl -n "$namespace" get svc -o name \
    -l "app.kubernetes.io/instance=$release,app.kubernetes.io/component=$1" | head -n 1
}

forwards=(
  "$namespace $(service_of receiver) 8001:8001"
  "$namespace $(service_of informer) 8004:8004"
  "$monitoring svc/kube-prometheus-stack-grafana 3000:80"
  "$monitoring svc/kube-prometheus-stack-prometheus 9090:9090"
)
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT INT TERM
for forward in "${forwards[@]}"; do
  read -r ns target ports <<<"$forward"
  if [[ -z "$ports" ]] || ! kubectl -n "$ns" get "$target" >/dev/null 2>&1; then
    echo "skip: $ns/$target is not deployed"
    continue
  fi
  echo "127.0.0.1:${ports%%:*} -> $ns/$target"
  kubectl -n "$ns" port-forward --address 127.0.0.1 "$target" "$ports" >/dev/null &
done
echo "Ctrl-C stops the forwards."
wait
