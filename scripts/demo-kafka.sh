#!/usr/bin/env bash
# Kafka in, Kafka out: the login-failure and sensor-alarm demos as `cep kafka` pipelines.
#
# Starts a Kafka-compatible test broker (noida-db, via scripts/kafka-broker.sh; or uses the broker
# at KAFKA_BOOTSTRAP), creates the topics, starts one `cep kafka` pipeline per demo with the demo's
# JSON patterns (examples/patterns/login, examples/patterns/sensor), produces generator traffic
# into the input topics, waits until each pipeline has committed its input to the end, prints the
# alerts from the output topics, and stops everything it started.
#
#   scripts/demo-kafka.sh                                   # builds what it needs (release)
#   scripts/demo-kafka.sh --login-events 5000 --seed 3      # more or other traffic
#   KAFKA_BOOTSTRAP=127.0.0.1:9092 scripts/demo-kafka.sh    # against your own Kafka
#   CEP_BIN=target/debug/cep CEP_EXAMPLES=target/debug/examples scripts/demo-kafka.sh
#   scripts/demo-kafka.sh --out /tmp/alerts                 # also keep every alert, as JSON lines
#
# It prints, per demo, the number of alerts of each pattern and the first two alerts of each
# (with --out, DIR/login-alerts.jsonl and DIR/sensor-alerts.jsonl hold all of them, in time order),
# and the number of timeouts, late events and dead letters.
#
# CEP_BIN is a `cep` binary already built; CEP_EXAMPLES a directory holding the `generator` and
# `kafka_topic` examples already built. Topic and group names end in a run id (the time), so runs
# against the same broker do not mix.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: $0 [--login-events N] [--sensor-events N] [--seed S] [--out DIR]" >&2
    exit 2
}
login_events=2000
sensor_events=20000
seed=7
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
    --login-events) login_events=${2:-}; shift 2 || usage ;;
    --sensor-events) sensor_events=${2:-}; shift 2 || usage ;;
    --seed) seed=${2:-}; shift 2 || usage ;;
    --out) out=${2:-}; shift 2 || usage ;;
    *) usage ;;
    esac
done
for n in "$login_events" "$sensor_events" "$seed"; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "not a number: '$n'" >&2; usage; }
done
if [[ -n "$out" ]]; then mkdir -p "$out"; fi

if [[ -z "${CEP_BIN:-}" || -z "${CEP_EXAMPLES:-}" ]]; then
    target_dir=$(cargo metadata -q --format-version 1 --no-deps |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
fi
if [[ -z "${CEP_EXAMPLES:-}" ]]; then
    cargo build -q --release -p cep-suite --example generator --example kafka_topic
    CEP_EXAMPLES="$target_dir/release/examples"
fi
if [[ -z "${CEP_BIN:-}" ]]; then
    cargo build -q --release -p cep-api --bin cep
    CEP_BIN="$target_dir/release/cep"
fi
generator="$CEP_EXAMPLES/generator"
topic_tool="$CEP_EXAMPLES/kafka_topic"

work=$(mktemp -d)
pipelines=()
broker_pid=""
broker_dir=""
cleanup() {
    for pid in "${pipelines[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pipelines[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n "$broker_pid" ]]; then scripts/kafka-broker.sh stop "$broker_pid" "$broker_dir"; fi
    rm -rf "$work"
}
trap cleanup EXIT

if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
    bootstrap=$KAFKA_BOOTSTRAP
    echo "== broker: $bootstrap (KAFKA_BOOTSTRAP)"
else
    scripts/kafka-broker.sh start >"$work/broker"
    bootstrap=$(sed -n 's/^bootstrap=//p' "$work/broker")
    broker_pid=$(sed -n 's/^pid=//p' "$work/broker")
    broker_dir=$(sed -n 's/^dir=//p' "$work/broker")
    echo "== broker: noida-db at $bootstrap (scripts/kafka-broker.sh start)"
fi

run=$(date +%s)
# Per demo: scenario, key field, input topic, number of events.
declare -A key=([login]=user [sensor]=sensor)
declare -A input=([login]=logins-$run [sensor]=readings-$run)
declare -A count=([login]=$login_events [sensor]=$sensor_events)
demos=(login sensor)

echo "== topics"
for d in "${demos[@]}"; do
    "$topic_tool" create --bootstrap "$bootstrap" --partitions 4 \
        "${input[$d]}" "$d-alerts-$run" "$d-timeouts-$run"
    "$topic_tool" create --bootstrap "$bootstrap" --partitions 1 "$d-late-$run" "$d-dlq-$run"
done

for d in "${demos[@]}"; do
    args=(kafka --bootstrap "$bootstrap" --group "cep-demo-$d-$run"
        --input-topic "${input[$d]}" --pattern "examples/patterns/$d"
        --key-by "${key[$d]}" --time-field ts --out-of-orderness 500ms
        --matches-topic "$d-alerts-$run" --timeouts-topic "$d-timeouts-$run"
        --late-topic "$d-late-$run" --dlq-topic "$d-dlq-$run")
    echo "== pipeline $d: cep ${args[*]}"
    RUST_LOG=${RUST_LOG:-info} "$CEP_BIN" "${args[@]}" >"$work/$d.log" 2>&1 &
    pipelines+=($!)
done
# Traffic only once each pipeline has its partitions and has looked at them: a consumer whose first
# fetch races the first records can be told its offset is out of range and then skip them on
# noida-db (which reports a partition's end as its start); a live stream does not start that way.
for i in "${!pipelines[@]}"; do
    d=${demos[$i]}
    for _ in $(seq 300); do
        grep -q 'assigned partitions: \[(' "$work/$d.log" && break
        if ! kill -0 "${pipelines[$i]}" 2>/dev/null; then
            echo "the $d pipeline stopped; its log:" >&2
            cat "$work/$d.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    grep -q 'assigned partitions: \[(' "$work/$d.log" ||
        echo "note: no 'assigned partitions' in the $d pipeline's log after 30 s; going on" >&2
done
sleep 1

echo "== traffic"
for d in "${demos[@]}"; do
    # The generator's traffic is less than 500 ms out of order; the end-of-traffic marker moves
    # every partition's watermark past it, so the pipelines evaluate all of it.
    "$generator" --scenario "$d" --count "${count[$d]}" --seed "$seed" \
        --kafka "$bootstrap" --topic "${input[$d]}" --end-marker
done

for d in "${demos[@]}"; do
    # The pipeline commits its input offsets only after the outputs of the records before them
    # are acknowledged: once it has committed the whole input, every alert is in the topic.
    if ! "$topic_tool" read --bootstrap "$bootstrap" --wait-group "cep-demo-$d-$run" \
        --wait-topic "${input[$d]}" --by-time "$d-alerts-$run" >"$work/$d-alerts"; then
        echo "the $d pipeline's log:" >&2
        cat "$work/$d.log" >&2
        exit 1
    fi
    alerts="$work/$d-alerts"
    if [[ -n "$out" ]]; then cp "$alerts" "$out/$d-alerts.jsonl"; fi
    echo "== $d: $(wc -l <"$alerts") alerts in $d-alerts-$run:" \
        "$(grep -o '"pattern":"[^"]*"' "$alerts" | cut -d'"' -f4 | sort | uniq -c |
            awk '{printf "%s%s %s", sep, $2, $1; sep=", "}')"
    "$topic_tool" count --bootstrap "$bootstrap" "$d-timeouts-$run" "$d-late-$run" "$d-dlq-$run"
    echo "== $d: the first two alerts of each pattern"
    for pattern in $(grep -o '"pattern":"[^"]*"' "$alerts" | cut -d'"' -f4 | sort -u); do
        grep -m2 -F "\"pattern\":\"$pattern\"" "$alerts"
    done
done

echo "== stopping the pipelines"
status=0
for i in "${!pipelines[@]}"; do
    kill -TERM "${pipelines[$i]}"
    if ! wait "${pipelines[$i]}"; then
        echo "the ${demos[$i]} pipeline failed; its log:" >&2
        cat "$work/${demos[$i]}.log" >&2
        status=1
    fi
done
pipelines=()
exit $status
