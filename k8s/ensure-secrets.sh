#!/usr/bin/env sh
# Makes the namespaces and the Secrets that no file in the repository holds, each Secret only
# when it is missing, so a second deploy keeps the passwords of the first (ClickHouse's data
# and Grafana's users outlive a redeploy):
#   jobflow     k8s/namespace.yaml; Secret clickhouse-credentials: username, password
#               (k8s/clickhouse, the operator's Jobs). The chart would make it too, but
#               ClickHouse starts before the chart is installed; the chart then uses this one.
#   monitoring  namespace monitoring; Secret grafana-admin: admin-user, admin-password
#               (monitoring/)
# Usage: k8s/ensure-secrets.sh [jobflow|monitoring]...  (default: both)
set -eu
here="$(cd "$(dirname "$0")" && pwd)"

password() { od -An -tx1 -N16 /dev/urandom | tr -d ' \n'; }

ensure_namespace() {
  if [ "$1" = jobflow ]; then
    kubectl apply -f "$here/namespace.yaml" >/dev/null
  else
    kubectl get namespace "$1" >/dev/null 2>&1 || kubectl create namespace "$1"
  fi
}

ensure_secret() { # NAMESPACE NAME USER_KEY USER PASSWORD_KEY
  ensure_namespace "$1"
  if kubectl -n "$1" get secret "$2" >/dev/null 2>&1; then
    echo "secret $1/$2 exists: kept"
    return
  fi
  kubectl -n "$1" create secret generic "$2" \
    --from-literal="$3=$4" --from-literal="$5=$(password)"
}

[ "$#" -gt 0 ] || set -- jobflow monitoring
for name in "$@"; do
  case "$name" in
    jobflow) ensure_secret jobflow clickhouse-credentials username jobflow password ;;
    monitoring) ensure_secret monitoring grafana-admin admin-user admin admin-password ;;
    *) echo "unknown part: $name (jobflow, monitoring)" >&2; exit 2 ;;
  esac
done
