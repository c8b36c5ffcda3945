//! Builds the guest (`guest-driver/`, its own cargo workspace) and hands its image to the
//! `perimeter` binary, which embeds it as the default guest.
//!
//! The guest builds in release mode with its own target directory under `OUT_DIR` and its own
//! flags (from its `build.rs` and workspace profile), so that nothing of the host build (rustflags,
//! wrappers such as clippy-driver, the profile) leaks into it, and a plain `cargo run --release`
//! at the root needs no other step.
//!
//! It also hands over the commit the binary is built from (`--version` shows it), watching
//! what moves HEAD so that a new commit rebuilds with the new id.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `git -C root ARGS` printed, trimmed; `None` outside a git checkout or without git.
fn git(root: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The short id of HEAD, and the files whose change means HEAD may have moved.
fn commit(root: &Path) -> Option<(String, Vec<PathBuf>)> {
    let id = git(root, &["rev-parse", "--short=12", "HEAD"])?;
    let git_dir = PathBuf::from(git(root, &["rev-parse", "--absolute-git-dir"])?);
    let common = git(root, &["rev-parse", "--git-common-dir"]).map(|d| root.join(d));
    let mut watch = vec![git_dir.join("HEAD")];
    if let (Some(common), Some(name)) = (common, git(root, &["symbolic-ref", "-q", "HEAD"])) {
        watch.push(common.join(name));
        watch.push(common.join("packed-refs"));
    }
    // A path that does not exist would rerun this script on every build.
    watch.retain(|p| p.exists());
    Some((id, watch))
}

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest_dir
        .parent()
        .expect("vmm/ sits in the workspace root")
        .to_path_buf();
    let guest = root.join("guest-driver");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    let target_dir = out.join("guest-target");

    for dir in ["guest-driver/kernel/src", "guest-abi/src", "streams/src"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    for file in [
        "guest-driver/Cargo.toml",
        "guest-driver/Cargo.lock",
        "guest-driver/kernel/Cargo.toml",
        "guest-driver/kernel/build.rs",
        "guest-driver/kernel/linker.ld",
        "guest-abi/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let id = match commit(&root) {
        Some((id, watch)) => {
            for p in watch {
                println!("cargo:rerun-if-changed={}", p.display());
            }
            id
        }
        None => "unknown".into(),
    };
    println!("cargo:rustc-env=PERIMETER_COMMIT={id}");

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--locked")
        .arg("--manifest-path")
        .arg(guest.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // The outer build's settings must not reach the guest.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS"
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
        {
            cmd.env_remove(&key);
        }
    }
    let status = cmd
        .status()
        .expect("could not run cargo to build the guest");
    if !status.success() {
        panic!("building the guest (guest-driver/) failed: {status}");
    }
    let image = target_dir.join("release").join("perimeter-guest");
    println!("cargo:rustc-env=PERIMETER_GUEST_IMAGE={}", image.display());
}
