#!/usr/bin/env bash
# Tests of scripts/prereqs.sh and scripts/serve.sh, without touching the machine: each case runs
# the script with a PATH of stub commands only and a libclang glob into a scratch directory, so
# that tools are present or missing as the case needs; apt-get, sudo and cargo are stubs that log
# their arguments. Prints `N passed, N failed` on the last line; exits 1 on a failure.
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
prereqs="$here/prereqs.sh"
serve="$here/serve.sh"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

passed=0
failed=0
case_n=0

# A fresh sandbox: $bin (the only PATH), $llvm (the libclang search root), $log (stub calls).
sandbox() {
    case_n=$((case_n + 1))
    box="$scratch/$case_n"
    bin="$box/bin"
    llvm="$box/llvm"
    log="$box/log"
    mkdir -p "$bin" "$llvm/lib"
    : >"$log"
}

# stub NAME [BODY]: an executable NAME in $bin that logs its arguments, then runs BODY.
stub() {
    printf '#!%s\necho "%s $*" >>"%s"\n%s\n' "$BASH" "$1" "$log" "${2:-exit 0}" >"$bin/$1"
    chmod +x "$bin/$1"
}

with_build_tools() { stub g++ && stub cc && stub make && : >"$llvm/lib/libclang.so"; }

# run_prereqs ARGS...: runs prereqs.sh in the sandbox; sets $rc and $out (stdout and stderr).
run_prereqs() {
    out="$(env -i HOME="$box" PATH="$bin" CEP_PREREQS_LLVM_GLOB="$llvm/lib/libclang*.so" \
        ${extra_env:-} "$BASH" "$prereqs" "$@" 2>&1)"
    rc=$?
}

check() {
    # check DESCRIPTION CONDITION...: the condition is a command; counts and reports.
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        echo "ok    $what"
    else
        failed=$((failed + 1))
        echo "FAIL  $what"
        echo "      rc=$rc, output:"
        printf '%s\n' "$out" | sed 's/^/      | /'
    fi
}

has() { [[ "$out" == *"$1"* ]]; }
lacks() { [[ "$out" != *"$1"* ]]; }
# The message's install command names exactly these packages.
names_packages() { has "apt-get install -y $*
"; }
logged() { grep -q -- "$1" "$log"; }
not_logged() { ! grep -q -- "$1" "$log"; }

# --check, nothing present (an apt-get stub is there: --check must not call it).
sandbox
stub apt-get
run_prereqs --check
check "--check, nothing present: exit 1" test "$rc" -eq 1
check "--check, nothing present: names libclang-dev, g++, make" names_packages libclang-dev g++ gcc make
check "--check, nothing present: installs nothing" not_logged apt-get

# --check, everything present.
sandbox
with_build_tools
run_prereqs --check
check "--check, everything present: exit 0" test "$rc" -eq 0

# --check, one thing missing at a time: only its package is named.
sandbox
stub g++ && stub cc && : >"$llvm/lib/libclang.so"
run_prereqs --check
check "--check, make missing: exit 1" test "$rc" -eq 1
check "--check, make missing: names make only" \
    eval 'names_packages make && lacks libclang-dev && lacks g++'
sandbox
stub g++ && stub cc && stub make
run_prereqs --check
check "--check, libclang missing: names libclang-dev only" \
    eval '[[ $rc -eq 1 ]] && names_packages libclang-dev && lacks g++'
sandbox
stub cc && stub make && : >"$llvm/lib/libclang.so"
run_prereqs --check
check "--check, g++ missing: names g++ only" \
    eval '[[ $rc -eq 1 ]] && names_packages g++ && lacks libclang-dev'

# libclang found through LIBCLANG_PATH (as clang-sys finds it), versioned name included.
sandbox
stub g++ && stub cc && stub make
mkdir -p "$box/clang" && : >"$box/clang/libclang.so.1"
extra_env="LIBCLANG_PATH=$box/clang" run_prereqs --check
check "--check, libclang in LIBCLANG_PATH: exit 0" test "$rc" -eq 0

# --tests adds python3, pip, curl, and Chromium with its driver (the console's browser tests).
sandbox
with_build_tools
run_prereqs --check --tests
check "--check --tests, none present: names python3, python3-pip, curl, chromium and chromium-driver" \
    eval '[[ $rc -eq 1 ]] && names_packages python3 python3-pip curl chromium chromium-driver && lacks libclang-dev'
sandbox
with_build_tools
stub python3
stub curl
stub chromium
run_prereqs --check --tests
check "--check --tests, no chromedriver: names chromium-driver only" \
    eval '[[ $rc -eq 1 ]] && names_packages chromium-driver'
sandbox
with_build_tools
stub python3
stub curl
stub chromium
stub chromedriver
run_prereqs --check --tests
check "--check --tests, everything present: exit 0" test "$rc" -eq 0

# Install mode, no apt-get: non-zero, names the packages, says why.
sandbox
run_prereqs
check "install, no apt-get: exit 1" test "$rc" -eq 1
check "install, no apt-get: names the packages and apt-get" \
    eval 'names_packages libclang-dev g++ gcc make && has "apt-get was not found"'

# Install mode, apt-get fails: non-zero, names the packages; update ran first.
sandbox
stub sudo 'exec "$@"'
stub env 'while [[ "$1" == *=* ]]; do export "$1"; shift; done; exec "$@"'
stub apt-get '[[ "$1" == update ]] || exit 100'
run_prereqs
check "install, apt-get install fails: exit 1" test "$rc" -eq 1
check "install, apt-get install fails: names the packages" \
    eval 'names_packages libclang-dev g++ gcc make && has "apt-get install failed"'
check "install, apt-get install fails: apt-get update ran first" \
    eval '[[ "$(grep -o "^apt-get [a-z]*" "$log" | tr "\n" " ")" == "apt-get update apt-get install " ]]'

# Install mode, apt-get works (the stub "installs" the tools): exit 0, asked for exactly what
# was missing, non-interactively.
sandbox
stub sudo 'exec "$@"'
stub env 'while [[ "$1" == *=* ]]; do export "$1"; shift; done; exec "$@"'
stub apt-get "
[[ \$1 == install ]] || exit 0
echo \"DEBIAN_FRONTEND=\$DEBIAN_FRONTEND\" >>'$log'
for t in g++ cc make; do printf '#!/bin/sh\n' >'$bin'/\$t; /bin/chmod +x '$bin'/\$t; done
: >'$llvm/lib/libclang.so'"
run_prereqs
check "install, apt-get works: exit 0" test "$rc" -eq 0
check "install, apt-get works: installs libclang-dev g++ gcc make" \
    logged "apt-get install -y -q --no-install-recommends libclang-dev g++ gcc make"
check "install, apt-get works: non-interactive" logged "DEBIAN_FRONTEND=noninteractive"

# Install mode, apt-get "succeeds" but installs nothing: non-zero, names what is still missing.
sandbox
stub sudo 'exec "$@"'
stub env 'while [[ "$1" == *=* ]]; do export "$1"; shift; done; exec "$@"'
stub apt-get
run_prereqs
check "install, apt-get installs nothing: exit 1 naming the packages" \
    eval '[[ $rc -eq 1 ]] && has "still not found" && names_packages libclang-dev g++ gcc make'

# Sourced: cep_prereqs returns instead of exiting.
sandbox
out="$(env -i PATH="$bin" CEP_PREREQS_LLVM_GLOB="$llvm/lib/libclang*.so" "$BASH" -c \
    'source "$1"; cep_prereqs --check; echo "returned $?"' _ "$prereqs" 2>&1)"
rc=$?
check "sourced: cep_prereqs --check returns 1" has "returned 1"

# serve.sh, in a copy of the scripts with a cargo stub. run_serve ARGS...: sets $rc, $out.
serve_box() {
    sandbox
    mkdir -p "$box/repo/scripts"
    cp "$prereqs" "$serve" "$box/repo/scripts/"
    stub cargo 'echo "ROCKSDB_LIB_DIR=${ROCKSDB_LIB_DIR:-}" >>"'"$log"'"'
}
run_serve() {
    out="$(env -i HOME="$box" PATH="$bin" CEP_PREREQS_LLVM_GLOB="$llvm/lib/libclang*.so" \
        ${extra_env:-} "$BASH" "$box/repo/scripts/serve.sh" "$@" 2>&1)"
    rc=$?
}

serve_box
with_build_tools
printf 'export ROCKSDB_LIB_DIR=/from-rocksdb-lib ROCKSDB_STATIC=1\n' >"$box/repo/scripts/rocksdb-lib.sh"
run_serve --port 9999
check "serve: runs cargo run --release -p cep-api --bin cep -- serve ARGS" \
    logged "cargo run --manifest-path $box/repo/Cargo.toml --release -p cep-api --bin cep -- serve --port 9999"
check "serve: says it is building and how long the first build takes" has "about 10 minutes"
check "serve: sources rocksdb-lib.sh when ROCKSDB_LIB_DIR is unset" logged "ROCKSDB_LIB_DIR=/from-rocksdb-lib"

serve_box
with_build_tools
printf 'export ROCKSDB_LIB_DIR=/from-rocksdb-lib\n' >"$box/repo/scripts/rocksdb-lib.sh"
extra_env="ROCKSDB_LIB_DIR=/given" run_serve
check "serve: keeps a ROCKSDB_LIB_DIR that is set" logged "ROCKSDB_LIB_DIR=/given"

serve_box
with_build_tools
run_serve
check "serve: builds without rocksdb-lib.sh" eval '[[ $rc -eq 0 ]] && logged "ROCKSDB_LIB_DIR=$"'

serve_box
run_serve
check "serve, prerequisites missing and no apt-get: exit 1 naming the packages, no build" \
    eval '[[ $rc -ne 0 ]] && names_packages libclang-dev g++ gcc make && not_logged cargo'

echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
