#!/usr/bin/env bash
# Runs yandex-tank in the cluster against the deployed receiver and copies its artifacts to
# loadtest/results/<UTC time>/ (make loadtest):
#   1. helm upgrade with loadtest.enabled=true: a new Job, named after the new revision;
#   2. follows the tank's log until it finishes (the Job first waits for the pipeline to carry
#      one job end to end);
#   3. copies /results out of the Job's "results" container and lets the Job complete;
#   4. helm upgrade with loadtest.enabled=false, so that no later upgrade starts another run.
# Exits with the tank's exit code; for the ramp, autostop's codes (21 to 23) count as success.
# Environment: KUBE_NAMESPACE (jobflow), RELEASE (jobflow), LOADTEST_PROFILE (seed | ramp),
# LOADTEST_TIMEOUT_S (1800: how long the whole run may take).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
chart="$here/../charts/jobflow"
namespace="${KUBE_NAMESPACE:-jobflow}"
release="${RELEASE:-jobflow}"
profile="${LOADTEST_PROFILE:-seed}"
deadline=$((SECONDS + ${LOADTEST_TIMEOUT_S:-1800}))
results="$here/results/$(date -u +%Y%m%dT%H%M%SZ)"

in_time() {
  ((SECONDS < deadline)) || { echo "gave up: the run took longer than its timeout" >&2; exit 1; }
}

# --reset-then-reuse-values: this chart's defaults, the release's own settings on top.
upgrade() { helm upgrade "$release" "$chart" -n "$namespace" --reset-then-reuse-values "$@"; }

upgrade --set loadtest.enabled=true --set "loadtest.profile=$profile"
revision="$(helm get metadata "$release" -n "$namespace" | awk '$1 == "REVISION:" { print $2 }')"
job="$(kubectl -n "$namespace" get jobs \
  -l "app.kubernetes.io/instance=$release,app.kubernetes.io/component=loadtest" -o name |
  grep -e "-loadtest-$revision\$")" || { echo "no loadtest Job of revision $revision" >&2; exit 1; }
selector="batch.kubernetes.io/job-name=${job#job.batch/}"
echo "==> $job ($profile)"
kubectl -n "$namespace" wait --for=create pod -l "$selector" --timeout=120s
pod="$(kubectl -n "$namespace" get pods -l "$selector" -o name | head -n 1)"

state() { kubectl -n "$namespace" get "$pod" -o jsonpath="$1"; }
tank_finished() {
  [[ -n "$(state '{.status.initContainerStatuses[?(@.name=="tank")].state.terminated.exitCode}')" ]]
}
until kubectl -n "$namespace" logs "$pod" -c tank --follow 2>/dev/null; do
  [[ "$(state '{.status.phase}')" != Failed ]] || { echo "$pod failed before the tank ran" >&2; exit 1; }
  in_time
  sleep 5
done
until tank_finished; do in_time; sleep 5; done

kubectl -n "$namespace" wait --for=condition=Ready "$pod" --timeout=120s
mkdir -p "$results"
kubectl -n "$namespace" cp -c results "${pod#pod/}:/results" "$results"
kubectl -n "$namespace" exec "$pod" -c results -- touch /results/.copied
kubectl -n "$namespace" wait --for=condition=complete "$job" --timeout=120s
upgrade --set loadtest.enabled=false

code="$(cat "$results/exit-code")"
echo "==> results in $results; yandex-tank exited $code"
if [[ "$profile" == ramp && "$code" -ge 21 && "$code" -le 23 ]]; then
  echo "    (autostop ended the ramp: the ceiling was reached)"
  exit 0
fi
exit "$code"
