//! Linux's own virtio_console driver against perimeter's device: boots the Linux test guest
//! (`images/linux/`) with the conformance program as PID 1 and checks both sides: the guest's
//! lines (port names, hvc0, data both ways) and the host's (what reached each backend, the
//! guest's PORT_OPEN events, init's exit status through the reset port).
//!
//! Slow where kernel code is emulated (kvm_pvm: about 3 minutes), so it runs only when
//! `PERIMETER_LINUX=1` is set (`scripts/test-linux` builds the kernel and initramfs, then sets
//! it); otherwise it says on stderr that it is skipped. With the variable set, missing
//! artifacts or a missing `/dev/kvm` fail the test.

mod common;

use common::{json, perimeter, port_stats, status, text, tmp_dir};
use std::path::PathBuf;

/// Bytes each data check moves (per direction).
const BYTES: u64 = 256 * 1024;

/// The kernel and initramfs the scripts in images/linux/ build.
fn artifacts() -> (PathBuf, PathBuf) {
    let cache = std::env::var_os("PERIMETER_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/perimeter"))
        .join("linux");
    let variant = if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        "pvm"
    } else {
        "stock"
    };
    let (kernel, initrd) = (
        cache.join(variant).join("vmlinux"),
        cache.join("initramfs.cpio"),
    );
    for f in [&kernel, &initrd] {
        assert!(
            f.exists(),
            "{} is missing: run images/linux/build-kernel and images/linux/build-initramfs (scripts/test-linux does both)",
            f.display()
        );
    }
    (kernel, initrd)
}

fn wanted(test: &str) -> bool {
    if std::env::var("PERIMETER_LINUX").as_deref() == Ok("1") {
        assert!(
            std::path::Path::new("/dev/kvm").exists(),
            "PERIMETER_LINUX=1 but /dev/kvm is missing"
        );
        return true;
    }
    eprintln!(
        "\n*** SKIPPED {test}: set PERIMETER_LINUX=1 to boot the Linux guest (scripts/test-linux) ***\n"
    );
    false
}

/// The guest's line for check `what` (`conform: ok WHAT: ...`), which must have passed.
fn passed<'a>(stdout: &'a str, what: &str) -> &'a str {
    let ok = format!("conform: ok {what}: ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(ok.as_str()))
        .unwrap_or_else(|| panic!("no `{ok}` line in the guest's output:\n{stdout}"))
}

#[test]
fn linux_virtio_console_driver_passes_the_conformance_run() {
    if !wanted("linux_virtio_console_driver_passes_the_conformance_run") {
        return;
    }
    let (kernel, initrd) = artifacts();
    let dir = tmp_dir("linux");
    let console_out = dir.join("console.out");
    let cmdline = format!(
        "rdinit=/conform conform_ports=console,echo,sink,source,idle conform_bytes={BYTES}"
    );
    let console = format!(
        "name=console,backend=file:{},console",
        console_out.display()
    );
    let o = perimeter(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--memory",
        "256",
        "--timeout",
        "900",
        "--cmdline",
        &cmdline,
        "--port",
        &console,
        "--port",
        "name=echo,backend=echo",
        "--port",
        "name=sink,backend=null",
        "--port",
        "name=source,backend=pattern",
        "--port",
        "name=idle,backend=null",
        "--json",
    ]);
    let (stdout, stderr) = (text(&o.stdout), text(&o.stderr));
    eprintln!("{stdout}\n{stderr}");
    assert_eq!(
        status(&o),
        0,
        "init's exit status is the number of failed checks"
    );
    assert!(stdout.contains("conform: 6 passed, 0 failed"), "{stdout}");

    // Names in port order, as Linux shows them.
    assert_eq!(passed(&stdout, "names"), "console echo sink source idle");
    // hvc0 is the console port: its line reached the console port's backend.
    passed(&stdout, "hvc0");
    let console_text = std::fs::read_to_string(&console_out).unwrap();
    assert!(
        console_text.contains("conform: hello from hvc0"),
        "{console_text:?}"
    );

    let doc = json(&o);
    // Guest to host: the null backend took every byte, with the guest's checksum.
    let sink_line = passed(&stdout, "port 2 (sink)");
    let sink = port_stats(&doc, "sink");
    assert_eq!(sink["out_bytes"], BYTES, "{sink}");
    let crc = sink["out_crc32"].as_u64().unwrap();
    assert!(
        sink_line.contains(&format!("crc32 {crc:#010x}")),
        "{sink_line} vs {sink}"
    );
    // Host to guest: the guest checked the pattern; the host counted what it delivered.
    passed(&stdout, "port 3 (source)");
    assert!(port_stats(&doc, "source")["rx_bytes"].as_u64().unwrap() >= BYTES);
    // Both ways through the echo backend.
    let echo_line = passed(&stdout, "port 1 (echo)");
    assert!(
        echo_line.contains("200 round trips of 64 bytes"),
        "{echo_line}"
    );
    let echo = port_stats(&doc, "echo");
    // The stream, then the round trips of 64 bytes.
    let both = Some(BYTES + 200 * 64);
    assert_eq!(
        (echo["tx_bytes"].as_u64(), echo["rx_bytes"].as_u64()),
        (both, both),
        "{echo}"
    );
    // Every data port was opened and closed by the guest, and the device saw both.
    passed(&stdout, "port 4 (idle)");
    for name in ["echo", "sink", "source", "idle"] {
        let p = port_stats(&doc, name);
        assert!(p["guest_opens"].as_u64() >= Some(1), "{p}");
        assert!(p["guest_closes"].as_u64() >= Some(1), "{p}");
        assert_eq!(p["drops"], 0, "{p}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
