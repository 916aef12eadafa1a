#!/usr/bin/env bash
# What building cep needs besides the Rust toolchain, and the Debian 12 / Ubuntu packages that
# provide it:
#
#   libclang  libclang-dev  librocksdb-sys generates RocksDB's Rust bindings with bindgen, which
#                           loads libclang
#   g++       g++           RocksDB is C++
#   cc        gcc           the C compiler (librdkafka, zstd, lz4; and rustc's linker driver)
#   make      make          librdkafka (rdkafka-sys) is built with its configure script and make
#
# With --tests, also what scripts/test.sh needs: python3 (python3), pip (python3-pip) and curl,
# and for the web console's browser tests (api/tests/console/) headless Chromium and its driver
# (chromium, chromium-driver; never downloaded at run time).
#
#   scripts/prereqs.sh           install what is missing (apt-get update, then apt-get install;
#                                with sudo when not root); exit 1, naming the packages, when it
#                                cannot (no apt-get, no sudo, or the install fails)
#   scripts/prereqs.sh --check   only report: exit 1 naming the missing packages, 0 when all is
#                                there; installs nothing
#
# Or `source scripts/prereqs.sh` and call `cep_prereqs [--check] [--tests]` (it returns instead of
# exiting).
#
# Commands are looked up through PATH. libclang is looked for where clang-sys (bindgen's loader)
# finds it: in $LIBCLANG_PATH (a directory or the library itself) when set, and in the paths that
# CEP_PREREQS_LLVM_GLOB matches (space-separated globs) [default: /usr/lib/llvm-*/lib/libclang*.so].
# scripts/test-prereqs.sh runs this script with a PATH and a glob that lack the tools.

# Sets _cep_missing (what is missing, with why) and _cep_packages (the Debian packages to install).
_cep_prereqs_scan() {
    local tests=$1 f found
    _cep_missing=()
    _cep_packages=()

    found=""
    if [[ -n "${LIBCLANG_PATH:-}" ]]; then
        if [[ -f "$LIBCLANG_PATH" ]]; then
            found=yes
        else
            for f in "$LIBCLANG_PATH"/libclang*.so*; do
                [[ -e "$f" ]] && found=yes && break
            done
        fi
    fi
    if [[ -z "$found" ]]; then
        # Unquoted on purpose: the variable holds globs.
        for f in ${CEP_PREREQS_LLVM_GLOB:-/usr/lib/llvm-*/lib/libclang*.so}; do
            [[ -e "$f" ]] && found=yes && break
        done
    fi
    if [[ -z "$found" ]]; then
        _cep_missing+=("libclang (RocksDB's bindings are generated with bindgen, which loads it)")
        _cep_packages+=(libclang-dev)
    fi
    if ! command -v g++ >/dev/null 2>&1; then
        _cep_missing+=("g++ (RocksDB is C++)")
        _cep_packages+=(g++)
    fi
    if ! command -v cc >/dev/null 2>&1; then
        _cep_missing+=("cc (the C compiler; rustc links through it)")
        _cep_packages+=(gcc)
    fi
    if ! command -v make >/dev/null 2>&1; then
        _cep_missing+=("make (librdkafka is built with make)")
        _cep_packages+=(make)
    fi
    if [[ -n "$tests" ]]; then
        if ! command -v python3 >/dev/null 2>&1; then
            _cep_missing+=("python3 (the conformance comparison and the Kafka test broker)")
            _cep_packages+=(python3 python3-pip)
        elif ! python3 -m pip --version >/dev/null 2>&1; then
            _cep_missing+=("pip (installs the Kafka test broker)")
            _cep_packages+=(python3-pip)
        fi
        if ! command -v curl >/dev/null 2>&1; then
            _cep_missing+=("curl (the service walkthrough, scripts/demo-service.sh)")
            _cep_packages+=(curl)
        fi
        if ! command -v chromium >/dev/null 2>&1; then
            _cep_missing+=("chromium (the web console's tests drive it headless)")
            _cep_packages+=(chromium)
        fi
        if ! command -v chromedriver >/dev/null 2>&1; then
            _cep_missing+=("chromedriver (the web console's tests drive Chromium through it)")
            _cep_packages+=(chromium-driver)
        fi
    fi
}

_cep_prereqs_report() {
    local m
    echo "cep's build needs what this machine lacks:" >&2
    for m in "${_cep_missing[@]}"; do
        echo "  - $m" >&2
    done
}

_cep_prereqs_cannot() {
    # $1: why nothing was installed.
    _cep_prereqs_report
    echo "$1" >&2
    echo "Install the Debian/Ubuntu packages ${_cep_packages[*]} and run again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${_cep_packages[*]}" >&2
    echo "(Elsewhere: libclang from LLVM, or LIBCLANG_PATH set to its directory; a C and C++" >&2
    echo "compiler; make.)" >&2
}

# cep_prereqs [--check] [--tests]: returns 0 when everything is (now) present, 1 otherwise.
cep_prereqs() {
    local check="" tests="" arg
    local -a apt=(apt-get)
    for arg in "$@"; do
        case "$arg" in
        --check) check=yes ;;
        --tests) tests=yes ;;
        *)
            echo "usage: scripts/prereqs.sh [--check] [--tests]" >&2
            return 2
            ;;
        esac
    done

    _cep_prereqs_scan "$tests"
    if [[ ${#_cep_missing[@]} -eq 0 ]]; then
        [[ -n "$check" ]] && echo "build prerequisites: all present"
        return 0
    fi
    if [[ -n "$check" ]]; then
        _cep_prereqs_report
        echo "Install the Debian/Ubuntu packages: sudo apt-get install -y ${_cep_packages[*]}" >&2
        echo "(or run scripts/prereqs.sh without --check to install them)" >&2
        return 1
    fi

    if ! command -v apt-get >/dev/null 2>&1; then
        _cep_prereqs_cannot "apt-get was not found, so nothing was installed."
        return 1
    fi
    if [[ ${EUID:-0} -ne 0 ]]; then
        if ! command -v sudo >/dev/null 2>&1; then
            _cep_prereqs_cannot "Not root and sudo was not found, so nothing was installed."
            return 1
        fi
        # sudo resets the environment: env passes DEBIAN_FRONTEND through.
        apt=(sudo env DEBIAN_FRONTEND=noninteractive apt-get)
    fi
    echo "== installing ${_cep_packages[*]} (${apt[0]/sudo/sudo apt-get})"
    if ! "${apt[@]}" update -q; then
        _cep_prereqs_cannot "apt-get update failed, so nothing was installed."
        return 1
    fi
    if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -q --no-install-recommends \
        "${_cep_packages[@]}"; then
        _cep_prereqs_cannot "apt-get install failed."
        return 1
    fi
    # Installed: check again (a package may not put things where the build looks).
    _cep_prereqs_scan "$tests"
    if [[ ${#_cep_missing[@]} -gt 0 ]]; then
        _cep_prereqs_cannot "apt-get install succeeded, but these are still not found."
        return 1
    fi
    return 0
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    cep_prereqs "$@"
    exit $?
fi
