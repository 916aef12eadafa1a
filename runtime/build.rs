//! RocksDB linked from a library built once (`scripts/rocksdb-lib.sh` sets `ROCKSDB_LIB_DIR` and
//! `ROCKSDB_STATIC`) needs the C++ standard library, which `librocksdb-sys` adds only when it
//! compiles RocksDB itself.
fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_LIB_DIR");
    println!("cargo:rerun-if-env-changed=ROCKSDB_STATIC");
    let prebuilt = std::env::var_os("ROCKSDB_LIB_DIR").is_some();
    let target = std::env::var("TARGET").unwrap_or_default();
    if prebuilt && target.contains("linux") {
        println!("cargo:rustc-link-lib=dylib=stdc++");
    } else if prebuilt && target.contains("apple") {
        println!("cargo:rustc-link-lib=dylib=c++");
    }
}
