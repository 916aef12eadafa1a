#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what a fresh Debian 12 machine with only the
# Rust toolchain lacks, then formatting, lints, all tests, and the conformance corpus through
# `cep run` and the corpus's own compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the build and the tests need (libclang, g++, make, python3, pip, curl, chromium and
# chromedriver for the console's browser tests): installed with
# apt-get when missing, or named in a clear message.
./scripts/prereqs.sh --tests
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy

echo "== scripts/test-prereqs.sh (the prerequisites step, on stub commands)"
./scripts/test-prereqs.sh
# RocksDB's C++ is compiled once (optimised) into ~/.cache/cep-tools and linked by clippy's,
# the tests' and the release build alike.
source scripts/rocksdb-lib.sh

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
