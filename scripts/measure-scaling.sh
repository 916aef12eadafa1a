#!/usr/bin/env bash
# Scaling over cores: events/s of `cep bench --threads T` (typed and JSON, login_fail, 10k keys)
# and wall time of `cep run --workers T` (22 patterns, 1M login events) for each T in THREADS.
# Prints a markdown table for BENCHMARKS.md. Meant for a many-core machine (the `device` tool's):
# build here, copy stripped binaries into the ignored `target-device/` (the device run carries
# ignored paths of at most 64 MiB in all), then run it there:
#
#   cargo build --release -p cep-api --example generator
#   mkdir -p target-device && strip -o target-device/cep "$CARGO_TARGET_DIR/release/cep" \
#     && strip -o target-device/generator "$CARGO_TARGET_DIR/release/examples/generator"
#   THREADS="1 2 4 8 16" scripts/measure-scaling.sh          # CEP_BIN, CEP_GENERATOR: defaults below
#
# EVENTS (default 10000000) sets the bench's events; RUN_EVENTS (default 1000000) `cep run`'s.
set -euo pipefail
cd "$(dirname "$0")/.."
cep=${CEP_BIN:-target-device/cep}
generator=${CEP_GENERATOR:-target-device/generator}
threads=${THREADS:-1 2 4 8 16}
events=${EVENTS:-10000000}
run_events=${RUN_EVENTS:-1000000}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "machine: $(nproc) cores; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
"$generator" --scenario login --count "$run_events" >"$work/logins.ndjson"
mkdir -p "$work/patterns"
for i in $(seq 1 22); do
    sed "s/\"name\": *\"login-fails-strict\"/\"name\": \"p$i\"/" \
        examples/patterns/login/login-fails-strict.json >"$work/patterns/p$i.json"
done

bench() { # threads, extra flags -> events/s
    "$cep" bench --workload login_fail --events "$events" --keys 10000 --threads "$1" "${@:2}" \
        | sed -n 's/.*events_per_sec=\([0-9]*\).*/\1/p'
}
run_time() { # workers -> seconds
    local start end
    start=$(date +%s%N)
    "$cep" run --pattern "$work/patterns" --input "$work/logins.ndjson" --key-by user \
        --time-field ts --out-of-orderness 500ms --output /dev/null --workers "$1"
    end=$(date +%s%N)
    awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", (b - a) / 1e9}'
}

echo
echo "| threads | typed events/s | x | JSON events/s | x | cep run, 22 patterns: s | x |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
base_typed="" base_json="" base_run=""
for t in $threads; do
    typed=$(bench "$t")
    json=$(bench "$t" --json)
    run=$(run_time "$t")
    base_typed=${base_typed:-$typed}
    base_json=${base_json:-$json}
    base_run=${base_run:-$run}
    printf '| %s | %s | %.2f | %s | %.2f | %s | %.2f |\n' "$t" "$typed" \
        "$(awk -v a="$typed" -v b="$base_typed" 'BEGIN {print a / b}')" "$json" \
        "$(awk -v a="$json" -v b="$base_json" 'BEGIN {print a / b}')" "$run" \
        "$(awk -v a="$base_run" -v b="$run" 'BEGIN {print a / b}')"
done
