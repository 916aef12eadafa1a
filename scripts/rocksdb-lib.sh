# Sourced by scripts/test.sh and scripts/serve.sh: builds RocksDB's C++ library once, optimised,
# into a cache outside the clone, and exports ROCKSDB_LIB_DIR / ROCKSDB_STATIC so that every cargo
# build (clippy's check, the tests' debug build, the release build) links that one library instead
# of compiling RocksDB again (each compile is about 10 minutes on 2 cores).
#
#   CEP_TOOLS_CACHE   where built tools are kept [default: ~/.cache/cep-tools]
#   ROCKSDB_LIB_DIR   set already: used as it is, nothing is built
if [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
    _cep_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    _cep_ver=$(awk '/^name = "librocksdb-sys"$/ { getline; gsub(/version = |"/, ""); print; exit }' \
        "$_cep_root/Cargo.lock")
    _cep_dir="${CEP_TOOLS_CACHE:-$HOME/.cache/cep-tools}/librocksdb-$_cep_ver"
    if [ ! -f "$_cep_dir/librocksdb.a" ]; then
        echo "== building RocksDB $_cep_ver once into $_cep_dir (about 8 minutes on 2 cores; later builds reuse it)"
        (
            cd "$_cep_root"
            unset ROCKSDB_LIB_DIR ROCKSDB_STATIC
            # The build script's own output: the same sources, flags and features (lz4) as a
            # normal build of the workspace.
            cargo build --release -p librocksdb-sys
        )
        _cep_target="${CARGO_TARGET_DIR:-$_cep_root/target}"
        _cep_lib=$(ls -t "$_cep_target"/release/build/librocksdb-sys-*/out/librocksdb.a | head -1)
        mkdir -p "$_cep_dir.tmp"
        cp "$_cep_lib" "$_cep_dir.tmp/librocksdb.a"
        rm -rf "$_cep_dir"
        mv "$_cep_dir.tmp" "$_cep_dir"
    fi
    export ROCKSDB_LIB_DIR="$_cep_dir"
    export ROCKSDB_STATIC=1
    unset _cep_root _cep_ver _cep_dir _cep_target _cep_lib
fi
