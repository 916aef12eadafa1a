#!/usr/bin/env bash
# Builds cep and runs the service on its embedded default: RocksDB store under ./data (the
# directory you run it from), HTTP on 127.0.0.1:8080, a `default` pipeline keyed by `key` with
# time field `ts`. Arguments go to `cep serve` (`--help` lists them; docs/service.md).
#
#   ./scripts/serve.sh
#   ./scripts/serve.sh --config cep.toml
#
# On a fresh Debian 12 / Ubuntu machine with only the Rust toolchain, it first installs what the
# build needs (scripts/prereqs.sh: libclang, g++, make, with apt-get and sudo when not root), or
# says which packages to install when it cannot. RocksDB's C++ library is built once into
# ~/.cache (scripts/rocksdb-lib.sh) unless ROCKSDB_LIB_DIR points at one already.
set -euo pipefail

case "${BASH_SOURCE[0]}" in
*/*) root="$(cd "${BASH_SOURCE[0]%/*}/.." && pwd)" ;;
*) root="$(cd .. && pwd)" ;;
esac

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo was not found: install the Rust toolchain (https://rustup.rs) and run again." >&2
    exit 1
fi
"$BASH" "$root/scripts/prereqs.sh" || exit 1

echo "== building cep (release); the first build takes about 10 minutes on a 2-core machine (see Building in the README), later ones seconds"
if [[ -z "${ROCKSDB_LIB_DIR:-}" && -f "$root/scripts/rocksdb-lib.sh" ]]; then
    # shellcheck source=rocksdb-lib.sh
    source "$root/scripts/rocksdb-lib.sh"
fi
exec cargo run --manifest-path "$root/Cargo.toml" --release -p cep-api --bin cep -- serve "$@"
