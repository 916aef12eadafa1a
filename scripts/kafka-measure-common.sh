# Sourced by the scripts/measure-kafka-*.sh measurements, from the repository root: checks
# CEP_BIN and CEP_EXAMPLES, makes a work directory ($work, kept with KEEP=1), starts a test
# broker unless KAFKA_BOOTSTRAP is set ($bootstrap), and on exit kills the processes listed in
# $pids and stops the broker. Also `now_ms` and a run id ($run) for unique topic names.
: "${CEP_BIN:?set CEP_BIN to a cep binary}"
: "${CEP_EXAMPLES:?set CEP_EXAMPLES to a directory with the generator and kafka_topic examples}"

work=$(mktemp -d)
pids=()
broker_pid=""
broker_dir=""
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n "$broker_pid" ]]; then scripts/kafka-broker.sh stop "$broker_pid" "$broker_dir"; fi
    [[ -n "${KEEP:-}" ]] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT

if [[ -n "${KAFKA_BOOTSTRAP:-}" ]]; then
    bootstrap=$KAFKA_BOOTSTRAP
else
    scripts/kafka-broker.sh start >"$work/broker"
    bootstrap=$(sed -n 's/^bootstrap=//p' "$work/broker")
    broker_pid=$(sed -n 's/^pid=//p' "$work/broker")
    broker_dir=$(sed -n 's/^dir=//p' "$work/broker")
fi
run=$(date +%s)
now_ms() { date +%s%3N; }
