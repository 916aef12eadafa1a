#!/usr/bin/env bash
# A Kafka-compatible broker for the tests: noida-db from PyPI, installed hash-pinned (see
# broker-requirements.txt) into a tools cache on first use, started on a free 127.0.0.1 port with a
# fresh data directory.
#
#   scripts/kafka-broker.sh install        # install only (idempotent)
#   scripts/kafka-broker.sh start          # prints bootstrap=HOST:PORT, pid=PID, dir=DATA_DIR
#   scripts/kafka-broker.sh stop PID DIR   # stops the broker and removes its data directory
#
# The tools cache is $CEP_TOOLS, else $XDG_CACHE_HOME/cep-tools, else $HOME/.cache/cep-tools.
# Users point the service at their own Kafka with KAFKA_BOOTSTRAP; nothing here is needed then.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${CEP_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/cep-tools}"
noida="$tools/noida-0.2.3"
bin="$noida/noida_db/noida-db"

install() {
  [ -x "$bin" ] && return 0
  mkdir -p "$tools"
  # Install into a temporary directory first, so that an interrupted install is never mistaken for a
  # complete one; concurrent installs each use their own and the last rename wins harmlessly.
  tmp="$(mktemp -d "$tools/.noida.XXXXXX")"
  pip_install() {
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps \
      --require-hashes -r "$here/broker-requirements.txt" --target "$tmp" "$@" >&2
  }
  # A distribution's "externally managed" Python refuses even a --target install without the flag
  # (which older pips do not know); nothing outside $tmp is written either way.
  pip_install || pip_install --break-system-packages
  chmod +x "$tmp/noida_db/noida-db"
  if ! mv -T "$tmp" "$noida" 2>/dev/null; then
    rm -rf "$tmp"
  fi
  [ -x "$bin" ] || { echo "noida-db install failed: $bin missing" >&2; exit 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # port pid log
  for _ in $(seq 1 300); do
    if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2).close()' "$1" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$2" 2>/dev/null; then
      echo "noida-db exited during startup; its log:" >&2
      cat "$3" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "noida-db did not accept connections on 127.0.0.1:$1 within 30 s; its log:" >&2
  cat "$3" >&2
  return 1
}

start() {
  install
  # A port found free can be taken by someone else before the broker binds it: try a few.
  for _ in 1 2 3 4 5; do
    port="$(free_port)"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/cep-kafka.XXXXXX")"
    # Detached from our stdout/stderr so that a caller reading our output sees its end.
    setsid "$bin" start --only kafka --kafka-port "$port" --data-dir "$dir/data" \
      </dev/null >"$dir/log" 2>&1 &
    pid=$!
    if wait_port "$port" "$pid" "$dir/log"; then
      echo "bootstrap=127.0.0.1:$port"
      echo "pid=$pid"
      echo "dir=$dir"
      return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    rm -rf "$dir"
  done
  echo "could not start noida-db" >&2
  exit 1
}

stop() { # pid dir
  pid="$1"
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  case "${2:-}" in
    */cep-kafka.*) rm -rf "$2" ;;
  esac
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 install | start | stop PID DIR" >&2; exit 2 ;;
esac
