//! Link arguments for the guest image: a static, non-PIE ELF at 1 MiB laid out by `linker.ld`.
//! They apply to this package's binary only, never to dependencies or build scripts.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = format!("{dir}/linker.ld");
    for arg in [
        "-nostartfiles",
        "-static",
        "-no-pie",
        "-Wl,--build-id=none",
        "-Wl,-z,norelro",
        "-Wl,-z,max-page-size=4096",
        &format!("-T{script}"),
    ] {
        println!("cargo:rustc-link-arg-bins={arg}");
    }
    println!("cargo:rerun-if-changed={script}");
}
