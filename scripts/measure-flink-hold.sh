#!/usr/bin/env bash
# measure-flink-hold.sh [KEYS] [WAIT_S]: the `cep bench --workload hold` job on Flink CEP 2.3
# (scripts/flink-hold/HoldMem.java), for BENCHMARKS.md's "Memory per partial match". Runs the
# job with no key (the baseline) and with KEYS keys (default 1,000,000), each printing the live
# heap after full GCs and the process RSS once WAIT_S seconds (default 50) have passed.
# Needs ../shared/flink-reference/setup.sh to have run (Flink's jars in ~/.cache/flink-2.3).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
keys=${1:-1000000}
wait_s=${2:-50}
lib=${FLINK_LIB:-$HOME/.cache/flink-2.3/lib}
classes=${FLINK_CLASSES:-$HOME/.cache/flink-2.3/classes}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
javac -d "$out" -cp "$classes:$lib/*" "$here/flink-hold/HoldMem.java"
for k in 0 "$keys"; do
  java -Xmx8g --add-opens java.base/java.util=ALL-UNNAMED --add-opens java.base/java.lang=ALL-UNNAMED \
    -Dlog4j.configurationFile="$here/../../shared/flink-reference/log4j2.properties" \
    -cp "$out:$classes:$lib/*" HoldMem "$k" "$wait_s" 2>&1 | grep '^flink hold'
done
