#!/usr/bin/env bash
# Runs yandex-tank in the cluster against the deployed receiver and copies its artifacts to
# loadtest/results/<UTC time>/ (make loadtest):
#   1. helm upgrade --reuse-values with loadtest.enabled=true: a new Job for the new revision;
#   2. waits for the tank (the Job's init container) to finish, printing its log;
#   3. copies /results out of the Job's "results" container, then lets the Job complete.
# Environment: KUBE_NAMESPACE (jobflow), RELEASE (jobflow), LOADTEST_PROFILE (seed | ramp).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
namespace="${KUBE_NAMESPACE:-jobflow}"
release="${RELEASE:-jobflow}"
profile="${LOADTEST_PROFILE:-seed}"
results="$here/results/$(date -u +%Y%m%dT%H%M%SZ)"

helm upgrade "$release" "$here/../charts/jobflow" -n "$namespace" --reuse-values \
  --set loadtest.enabled=true --set "loadtest.profile=$profile"
job="$(kubectl -n "$namespace" get jobs \
  -l "app.kubernetes.io/instance=$release,app.kubernetes.io/component=loadtest" \
  --sort-by=.metadata.creationTimestamp -o name | tail -n 1)"
[[ -n "$job" ]] || { echo "no loadtest Job in $namespace" >&2; exit 1; }
echo "==> $job ($profile)"
kubectl -n "$namespace" wait --for=create pod -l "batch.kubernetes.io/job-name=${job#job.batch/}" --timeout=120s
pod="$(kubectl -n "$namespace" get pods -l "batch.kubernetes.io/job-name=${job#job.batch/}" -o name | head -n 1)"

# The tank's exit code, once its container has terminated.
tank_exit() {
  kubectl -n "$namespace" get "$pod" \
    -o jsonpath='{.status.initContainerStatuses[?(@.name=="tank")].state.terminated.exitCode}'
}
until kubectl -n "$namespace" logs "$pod" -c tank --follow 2>/dev/null; do sleep 5; done
until [[ -n "$(tank_exit)" ]]; do sleep 5; done
if [[ "$(tank_exit)" != 0 ]]; then
  echo "yandex-tank failed (exit $(tank_exit)); its log is above" >&2
  exit 1
fi

kubectl -n "$namespace" wait --for=condition=Ready "$pod" --timeout=120s
mkdir -p "$results"
kubectl -n "$namespace" cp -c results "${pod#pod/}:/results" "$results"
kubectl -n "$namespace" exec "$pod" -c results -- touch /results/.copied
kubectl -n "$namespace" wait --for=condition=complete "$job" --timeout=120s
echo "==> results in $results"
