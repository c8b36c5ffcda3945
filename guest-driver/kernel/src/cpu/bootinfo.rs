//! What the VMM told the guest: the [`BootParams`] block and the command line.
//!
//! perimeter writes the block itself; under QEMU the PVH start info is translated into one
//! ([`crate::cpu::pvh`]) and the machine has no debug page ([`pvh_boot`]).

use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use guest_abi::{BOOT_MAGIC, BOOT_VERSION, BootParams, MAX_CMDLINE, MAX_VCPUS};

static PARAMS: AtomicPtr<BootParams> = AtomicPtr::new(core::ptr::null_mut());
static PVH: AtomicBool = AtomicBool::new(false);

/// Whether the guest came in through the PVH entry (QEMU): no debug page, so output goes to
/// COM1 and the exit code to `isa-debug-exit`.
pub fn pvh_boot() -> bool {
    PVH.load(Ordering::Relaxed)
}

/// Validates and records the block at `addr` (from `rdi` at entry). Panics when it is not one.
pub fn init(addr: u64) {
    if addr == 0 || !addr.is_multiple_of(8) {
        panic!("no boot parameters (rdi = {addr:#x})");
    }
    if crate::cpu::pvh::is_start_info(addr) {
        PVH.store(true, Ordering::Relaxed);
        let p = crate::cpu::pvh::boot_params(addr);
        PARAMS.store(p as *const BootParams as *mut BootParams, Ordering::Release);
        return;
    }
    // SAFETY: the VMM wrote a BootParams at `addr` in identity-mapped RAM and never changes it;
    // the guest never writes there (the heap starts above the image).
    let p = unsafe { &*(addr as *const BootParams) };
    if p.magic != BOOT_MAGIC || p.version != BOOT_VERSION {
        panic!(
            "bad boot parameters: magic {:#x} version {}",
            p.magic, p.version
        );
    }
    if p.vcpus == 0 || p.vcpus as usize > MAX_VCPUS {
        panic!("bad boot parameters: {} vCPUs", p.vcpus);
    }
    PARAMS.store(addr as *mut BootParams, Ordering::Release);
}

/// The boot parameters ([`init`] must have run).
pub fn params() -> &'static BootParams {
    let p = PARAMS.load(Ordering::Acquire);
    assert!(!p.is_null(), "boot parameters read before init");
    // SAFETY: set once by `init` from a validated, never-written block (perimeter's, or the
    // one `pvh` built and never changes).
    unsafe { &*p }
}

/// The command line, or "" when it is missing or not UTF-8.
pub fn cmdline() -> &'static str {
    let p = params();
    let len = (p.cmdline_len as usize).min(MAX_CMDLINE);
    if p.cmdline_addr == 0 || len == 0 {
        return "";
    }
    // SAFETY: the VMM wrote `cmdline_len` bytes at `cmdline_addr` in RAM and never changes them.
    let bytes = unsafe { core::slice::from_raw_parts(p.cmdline_addr as *const u8, len) };
    core::str::from_utf8(bytes).unwrap_or("")
}

/// The value of `key=value` on the command line, if present (the last one wins).
pub fn arg(key: &str) -> Option<&'static str> {
    cmdline()
        .split_ascii_whitespace()
        .filter_map(|w| w.split_once('='))
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .next_back()
}
