#!/usr/bin/env bash
# Runs one demo through the service: starts `cep serve` on a free port with a fresh data directory
# (or uses CEP_URL), registers the demo's JSON patterns (examples/patterns/SCENARIO/), creates a
# pipeline keyed like the demo, posts the demo's events and prints the outputs.
#
#   scripts/demo-service.sh login|sensor|order            # the fixed events of the Rust demo
#   scripts/demo-service.sh login --generated 5000        # generator traffic instead
#   CEP_URL=http://127.0.0.1:8080 scripts/demo-service.sh order   # against a running service
#   CEP_BIN=path/to/cep scripts/demo-service.sh sensor              # a cep binary already built
#   CEP_EXAMPLES=target/debug/examples scripts/demo-service.sh login # demos already built
#
# Needs curl; jq makes the output readable (raw JSON without it).
set -euo pipefail

cd "$(dirname "$0")/.."
scenario=${1:-}
shift || true
generated=""
if [[ "${1:-}" == "--generated" ]]; then
    generated=${2:?--generated needs a count}
fi

case "$scenario" in
login) example=login_failure key=user ooo=1s end=yes ;;
sensor) example=sensor_alarm key=sensor ooo=1s end=no ;;
order) example=order_timeout key=order ooo=5s end=no ;;
*)
    echo "usage: $0 login|sensor|order [--generated COUNT]" >&2
    exit 2
    ;;
esac
# The generator's traffic is at most 500 ms out of order.
[[ -n "$generated" ]] && ooo=500ms

target_dir=$(cargo metadata -q --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
if [[ -n "${CEP_EXAMPLES:-}" ]]; then
    examples=$CEP_EXAMPLES
else
    cargo build -q --release -p cep-suite --example generator --example "$example"
    examples="$target_dir/release/examples"
fi

if [[ -z "${CEP_URL:-}" ]]; then
    if [[ -z "${CEP_BIN:-}" ]]; then
        cargo build -q --release -p cep-api --bin cep
        CEP_BIN="$target_dir/release/cep"
    fi
    data=$(mktemp -d)
    "$CEP_BIN" serve --listen 127.0.0.1:0 --data-dir "$data" --log-format json \
        >"$data/log" 2>&1 &
    server=$!
    trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$data"' EXIT
    for _ in $(seq 100); do
        addr=$(grep -o '"addr":"[0-9.:]*"' "$data/log" | head -1 | cut -d'"' -f4 || true)
        [[ -n "$addr" ]] && break
        sleep 0.1
    done
    [[ -n "$addr" ]] || { cat "$data/log" >&2; exit 1; }
    CEP_URL="http://$addr"
    echo "cep serve is listening on $CEP_URL (data in $data)"
fi
api="$CEP_URL/api/v1"
pretty() { if command -v jq >/dev/null; then jq -c "$@"; else cat; fi; }

names=()
for f in examples/patterns/"$scenario"/*.json; do
    name=$(basename "$f" .json)
    names+=("\"$name\"")
    echo "PUT /api/v1/patterns/$name"
    curl -sS -X PUT "$api/patterns/$name" -H 'Content-Type: application/json' --data-binary @"$f" \
        | pretty '{name}'
done
pipeline=$(printf '{"key_by":"%s","time":{"field":"ts"},"watermark":{"out_of_orderness":"%s"},"patterns":[%s]}' \
    "$key" "$ooo" "$(IFS=,; echo "${names[*]}")")
echo "PUT /api/v1/pipelines/$scenario $pipeline"
curl -sS -X PUT "$api/pipelines/$scenario" -H 'Content-Type: application/json' -d "$pipeline" \
    | pretty '{name, key_by, patterns}'

if [[ -n "$generated" ]]; then
    echo "POST /api/v1/pipelines/$scenario/events: $generated generated events"
    "$examples/generator" --scenario "$scenario" --count "$generated" --url "$api/pipelines/$scenario/events"
else
    echo "POST /api/v1/pipelines/$scenario/events: the events of the $example demo"
    "$examples/$example" --events |
        curl -sS -X POST "$api/pipelines/$scenario/events" -H 'Content-Type: application/x-ndjson' \
            --data-binary @- | pretty .
fi
if [[ "$end" == yes ]]; then
    # The end of the input: events still waiting for the watermark are evaluated.
    echo "POST /api/v1/pipelines/$scenario/watermark {\"watermark\":\"end\"}"
    curl -sS -X POST "$api/pipelines/$scenario/watermark" -H 'Content-Type: application/json' \
        -d '{"watermark":"end"}'
    echo
fi

# Matches and late events in full; timeouts (partial matches that ran out of time) only counted,
# except for the order demo, where they are the point.
for kind in match timeout late; do
    query="$api/pipelines/$scenario/matches?kind=$kind&limit=1000"
    if [[ "$kind" == timeout && "$scenario" != order ]]; then
        echo "GET /api/v1/pipelines/$scenario/matches?kind=timeout: $(curl -sS "$query" |
            pretty '.outputs | length') timeouts"
        continue
    fi
    echo "GET /api/v1/pipelines/$scenario/matches?kind=$kind"
    curl -sS "$query" | pretty '.outputs[] | {kind, pattern, key, timestamp}
        + (if .events then {events: (.events | map_values(map(.ts)))} else {event: .event.ts} end)'
done
