#!/usr/bin/env bash
# Generates the CustomResourceDefinitions of the Strimzi release pinned in tools/strimzi/pom.xml
# into ${LOCAL_DIR:-<repo>/.local}/kube/crds/strimzi, for the offline checks of the chart and of
# k8s/strimzi (tests/kube). Strimzi publishes its CRDs in its release archives only, not on a
# package registry, but it publishes the api module and the generator its build makes them with:
# Maven fetches both jars, each is checked against the SHA-256 pinned in the pom, and the generator
# runs with the arguments of Strimzi's own api/pom.xml (execution generate-crd-co-install-v1), so
# the files are those of the release's packaging/install/cluster-operator/.
#
# Idempotent: a stamp records a hash of the pom and this script; when it matches and every file
# is there, nothing runs. A lock serialises concurrent runs.
#
# Needs Maven, and Java 21 or newer for the generator (Strimzi 1.2.0's jars are Java 21 class
# files): JAVA_HOME's java, else java on PATH, else the newest JDK under /usr/lib/jvm, whichever
# first is 21 or newer.
#
# crds.sh --check generates nothing: exit 0 when the CRDs are up to date, 1 when not.
set -euo pipefail

check_only=0
case "${1:-}" in
  --check) check_only=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
local_dir="${LOCAL_DIR:-$repo/.local}"
pom="$here/pom.xml"
out="$local_dir/kube/crds/strimzi"
stamp="$out/.stamp"
min_java=21

say() { echo "==> strimzi crds: $*"; }

# Each custom resource class and the file it goes to, as in Strimzi's api/pom.xml.
model=io.strimzi.api.kafka.model
crds=(
  "$model.kafka.Kafka=040-Crd-kafka.yaml"
  "$model.connect.KafkaConnect=041-Crd-kafkaconnect.yaml"
  "$model.podset.StrimziPodSet=042-Crd-strimzipodset.yaml"
  "$model.topic.KafkaTopic=043-Crd-kafkatopic.yaml"
  "$model.user.KafkaUser=044-Crd-kafkauser.yaml"
  "$model.nodepool.KafkaNodePool=045-Crd-kafkanodepool.yaml"
  "$model.bridge.KafkaBridge=046-Crd-kafkabridge.yaml"
  "$model.connector.KafkaConnector=047-Crd-kafkaconnector.yaml"
  "$model.mirrormaker2.KafkaMirrorMaker2=048-Crd-kafkamirrormaker2.yaml"
  "$model.rebalance.KafkaRebalance=049-Crd-kafkarebalance.yaml"
)

fingerprint="$(cat "$pom" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"

up_to_date() {
  [[ -f "$stamp" && "$(cat "$stamp")" == "$fingerprint" ]] || return 1
  local crd
  for crd in "${crds[@]}"; do [[ -f "$out/${crd#*=}" ]] || return 1; done
}

if ((check_only)); then
  up_to_date
  exit
fi

mkdir -p "$(dirname "$out")"
exec 9>"$out.lock"
flock 9 # a concurrent run may have just generated them
if up_to_date; then
  say "up to date in $out"
  exit 0
fi

# pom_property NAME: a property of our own pom (one per line there, so sed reads it).
pom_property() { sed -n "s:.*<$1>\(.*\)</$1>.*:\1:p" "$pom"; }

# java_major JAVA: the feature version JAVA reports (1.8.0 reads as 1), or 0 when it does not run.
java_major() {
  local version
  version="$("$1" -version 2>&1 | sed -n 's/.* version "\([0-9]*\).*/\1/p' | head -n 1)" || true
  echo "${version:-0}"
}

find_java() {
  local candidate
  for candidate in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]] && (($(java_major "$candidate") >= min_java)); then
      echo "$candidate"
      return
    fi
  done
  local best="" best_major=0 major
  for candidate in /usr/lib/jvm/*/bin/java; do
    [[ -x "$candidate" ]] || continue
    major="$(java_major "$candidate")"
    if ((major >= min_java && major > best_major)); then
      best="$candidate" best_major="$major"
    fi
  done
  echo "$best"
}

version="$(pom_property strimzi.version)"
if ! command -v mvn >/dev/null; then
  say "mvn is not on PATH: install Maven (Debian: apt-get install maven)" >&2
  exit 1
fi
java="$(find_java)"
if [[ -z "$java" ]]; then
  say "Strimzi $version's CRD generator needs Java $min_java or newer, and none was found" \
    "(JAVA_HOME, PATH, /usr/lib/jvm): install one (e.g. Debian 13's openjdk-21-jre-headless," \
    "or Temurin 21) or set JAVA_HOME to it" >&2
  exit 1
fi

started=$SECONDS
work="$(mktemp -d "$out.XXXXXX")"
trap 'rm -rf "$work"' EXIT
say "Strimzi $version: io.strimzi:api and io.strimzi:crd-generator from Maven Central"
# -C: fail, rather than warn, when a download does not match the repository's checksum.
mvn -q -B -C -Dstyle.color=never -f "$pom" dependency:copy -DoutputDirectory="$work/jars"
for artifact in api crd-generator; do
  jar="$work/jars/$artifact-$version.jar"
  expected="$(pom_property "strimzi.$artifact.sha256")"
  actual="$(sha256sum "$jar" | cut -d' ' -f1)"
  if [[ "$actual" != "$expected" ]]; then
    say "$artifact-$version.jar: SHA-256 $actual, expected $expected (tools/strimzi/pom.xml)" >&2
    exit 1
  fi
done

say "generating ${#crds[@]} CRDs with $java (Java $(java_major "$java"))"
arguments=()
for crd in "${crds[@]}"; do arguments+=("${crd%%=*}=$work/crds/${crd#*=}"); done
"$java" -classpath "$work/jars/api-$version.jar:$work/jars/crd-generator-$version.jar" \
  io.strimzi.crdgenerator.CrdGenerator \
  --label app:strimzi --label strimzi.io/crd-install:true \
  --target-kube 1.16+ --crd-api-version v1 --api-versions v1 --storage-version v1 \
  --yaml "${arguments[@]}"

echo "$fingerprint" >"$work/crds/.stamp"
rm -rf "$out"
mv "$work/crds" "$out"
say "done in $((SECONDS - started)) s: $out"
