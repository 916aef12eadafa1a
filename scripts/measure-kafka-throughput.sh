#!/usr/bin/env bash
# Measures the end-to-end throughput of a Kafka pipeline (`cep kafka`, the login pattern, alerts
# and timeouts to topics), once per guarantee (at-least-once, exactly-once): the pipeline joins
# its group first, then EVENTS login events are produced to its 4-partition input topic; the
# time is from the first event produced to the group having committed the end of every input
# partition (outputs committed with them). The producer's own rate is printed beside it: when the
# pipeline finishes within moments of the producer, the producer (and the broker), not the
# pipeline, set the pace, and the pipeline's CPU time per event says what it would take alone.
#
#   CEP_BIN=target/release/cep CEP_EXAMPLES=target/release/examples scripts/measure-kafka-throughput.sh [EVENTS]
#
# GUARANTEES="at-least-once" measures one guarantee only.
#
# Starts a test broker (scripts/kafka-broker.sh) unless KAFKA_BOOTSTRAP is set. (The pipeline
# must join before the events are produced: noida-db, the test broker, answers a query for a
# partition's beginning with its end, so a new group would start after them.) Numbers are in
# BENCHMARKS.md ("Kafka end to end").
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-500000}
source scripts/kafka-measure-common.sh

for guarantee in ${GUARANTEES:-at-least-once exactly-once}; do
    input=tp-logins-$guarantee-$run
    group=tp-$guarantee-$run
    alerts=tp-alerts-$guarantee-$run
    timeouts=tp-timeouts-$guarantee-$run
    "$CEP_EXAMPLES/kafka_topic" create --bootstrap "$bootstrap" --partitions 4 \
        "$input" "$alerts" "$timeouts" >/dev/null
    RUST_LOG=info NO_COLOR=1 "$CEP_BIN" kafka --bootstrap "$bootstrap" --group "$group" \
        --input-topic "$input" --pattern examples/patterns/login --key-by user --time-field ts \
        --out-of-orderness 500ms --topic "$alerts" --timeouts-topic "$timeouts" \
        --commit-interval 1s --guarantee "$guarantee" --transactional-id "tp-$guarantee-$run" \
        >"$work/$guarantee.log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 600); do
        grep -q 'assigned \[(' "$work/$guarantee.log" && break
        sleep 0.05
    done
    cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    t0=$(now_ms)
    "$CEP_EXAMPLES/generator" --scenario login --count "$events" --kafka "$bootstrap" \
        --topic "$input" >/dev/null
    t1=$(now_ms)
    "$CEP_EXAMPLES/kafka_topic" count --bootstrap "$bootstrap" --wait-group "$group" \
        --wait-topic "$input" --timeout 600 "$alerts" >"$work/$guarantee.count"
    t2=$(now_ms)
    cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    # CPU per thread name: the pipeline's own thread (`cep`) and librdkafka's.
    threads=$(for t in /proc/"$pid"/task/*; do
        awk '{sub(/.*\) /, ""); print $12 + $13}' "$t/stat" | sed "s|^|$(cat "$t/comm") |"
    done | awk '{a[$1] += $2} END {for (k in a) if (a[k] > 0) printf "%s %.2f s; ", k, a[k] / 100}')
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {print (b - a) / 100}')
    echo "$guarantee: $events events produced in $((t1 - t0)) ms ($((events * 1000 / (t1 - t0 + 1))) events/s);" \
        "all committed by the pipeline $((t2 - t0)) ms after the first ($((events * 1000 / (t2 - t0 + 1))) events/s end to end," \
        "$((t2 - t1)) ms after the last); pipeline CPU $cpu s ($(awk -v c="$cpu" -v n="$events" 'BEGIN {printf "%.2f", c * 1e6 / n}') µs per event);" \
        "alerts: $(awk '{print $NF}' "$work/$guarantee.count"); CPU by thread: $threads"
done
