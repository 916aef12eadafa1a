#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what a fresh Debian 12 machine with only the
# Rust toolchain lacks, then formatting, lints, all tests, and the conformance corpus through
# `cep run` and the corpus's own compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# librocksdb-sys generates its bindings with bindgen, which needs libclang; RocksDB is C++.
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need_apt+=(libclang-dev clang)
command -v g++ >/dev/null || need_apt+=(g++)
command -v make >/dev/null || need_apt+=(make)
command -v python3 >/dev/null || need_apt+=(python3)
# The Kafka tests install their broker (noida-db, hash-pinned) with pip: scripts/kafka-broker.sh.
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
# Install the Kafka test broker up front, so that a failed download is reported as such.
[ -n "${KAFKA_BOOTSTRAP:-}" ] || ./scripts/kafka-broker.sh install
cargo test --workspace --all-targets
cargo test --workspace --doc

conf="${CEP_CONFORMANCE_DIR:-../shared/conformance}"
if [ -f "$conf/expected.txt" ]; then
  echo "== conformance corpus through cep run"
  # The binary `cargo test` built for the integration tests (CARGO_BIN_EXE_cep). Any other
  # cargo invocation (`build -p cep-api`, `build --workspace --bins`) unifies features differently
  # and would build RocksDB a second time.
  bin="${CARGO_TARGET_DIR:-target}/debug/cep"
  [ -x "$bin" ] || cargo test --workspace --all-targets --no-run
  out=$(mktemp)
  "$bin" run --pattern "$conf/patterns" --input "$conf/events.jsonl" --key-by key \
    --time-field ts --out-of-orderness 300ms --output "$out"
  python3 "$conf/compare.py" "$conf/expected.txt" "$out" | tail -3
  rm -f "$out"
else
  echo "== conformance corpus not found at $conf: skipped (the cep-suite conformance test needs it too)"
fi
echo "all checks passed"
