#!/usr/bin/env bash
# Measures how long a Kafka pipeline takes to recover: after a crash (SIGKILL, restarted at once
# with the same flags: static membership takes the partitions back) and when a second process
# joins the group (a rebalance: both restore their partitions from the changelog). Prints, for
# each, the time from the (re)start to the pipeline's "restored N keys" log line, and N.
#
#   CEP_BIN=target/release/cep CEP_EXAMPLES=target/release/examples scripts/measure-kafka-recovery.sh [EVENTS]
#
# Starts a test broker (scripts/kafka-broker.sh) unless KAFKA_BOOTSTRAP is set. Numbers are in
# BENCHMARKS.md ("Kafka recovery").
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-20000}
source scripts/kafka-measure-common.sh
input=rec-logins-$run
group=rec-$run
"$CEP_EXAMPLES/kafka_topic" create --bootstrap "$bootstrap" --partitions 4 "$input" "rec-alerts-$run" >/dev/null

started=""
start() { # NAME: starts a pipeline logging to $work/NAME.log; its pid in $started
    RUST_LOG=info NO_COLOR=1 "$CEP_BIN" kafka --bootstrap "$bootstrap" --group "$group" \
        --input-topic "$input" --pattern examples/patterns/login --key-by user --time-field ts \
        --out-of-orderness 500ms --topic "rec-alerts-$run" --commit-interval 200ms \
        --guarantee exactly-once --transactional-id "rec-$1" >>"$work/$1.log" 2>&1 &
    started=$!
    pids+=("$started")
}
# The time (ms since the epoch) of the first "restored" line after line $2 of log $1, and its text.
restored_after() {
    local log=$1 from=$2
    for _ in $(seq 600); do
        line=$(tail -n +"$from" "$log" | sed 's/\x1b\[[0-9;]*m//g' | grep 'restored [0-9]* keys' |
            grep -m1 'assigned \[(' || true)
        if [[ -n "$line" ]]; then
            ts=$(echo "$line" | awk '{print $1}')
            echo "$(date -d "$ts" +%s%3N) $(echo "$line" | grep -o 'restored [0-9]* keys in [^ ]*')"
            return 0
        fi
        sleep 0.05
    done
    echo "no restore in $log" >&2
    return 1
}

start a
a=$started
restored_after "$work/a.log" 1 >/dev/null
"$CEP_EXAMPLES/generator" --scenario login --count "$events" --kafka "$bootstrap" --topic "$input" >/dev/null
"$CEP_EXAMPLES/kafka_topic" count --bootstrap "$bootstrap" --wait-group "$group" --wait-topic "$input" "rec-alerts-$run"

echo "== crash: SIGKILL, restart at once ($events events in the input)"
kill -9 "$a"
wait "$a" 2>/dev/null || true
mark=$(($(wc -l <"$work/a.log") + 1))
t0=$(now_ms)
start a
read -r t1 what < <(restored_after "$work/a.log" "$mark")
echo "restart -> partitions back and state restored: $((t1 - t0)) ms ($what)"

echo "== join: a second process joins the group"
mark_a=$(($(wc -l <"$work/a.log") + 1))
t0=$(now_ms)
start b
read -r tb what_b < <(restored_after "$work/b.log" 1)
read -r ta what_a < <(restored_after "$work/a.log" "$mark_a")
echo "join -> the new process restored its partitions: $((tb - t0)) ms ($what_b)"
echo "join -> the first process restored its partitions: $((ta - t0)) ms ($what_a)"
