//! Guest RAM: one anonymous mapping, backed by transparent huge pages where the host allows.
//!
//! Where the host's THP setting is `madvise` (Debian's and Ubuntu's default), anonymous memory
//! gets 4 KiB pages unless it asks for more, and every TLB miss of the guest then ends on a
//! 4 KiB page. A guest streaming small messages through its heap ran at about half the speed
//! it reached under QEMU, which asks. A host without THP refuses the advice and the guest runs
//! on small pages as before.

use crate::error::Error;
use std::io;
use vm_memory::{
    GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress,
};

/// Maps `size` bytes of guest RAM at guest address 0, asking for huge pages before the guest
/// or the loader touches any of it.
pub fn guest_memory(size: u64) -> Result<GuestMemoryMmap, Error> {
    let mem =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)]).map_err(|e| {
            Error::Host {
                what: "mapping guest memory",
                source: io::Error::other(e),
            }
        })?;
    for region in mem.iter() {
        let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else {
            continue;
        };
        // SAFETY: advice about a live anonymous mapping of `region.len()` bytes that `mem`
        // owns; MADV_HUGEPAGE changes how its pages are backed, never their contents. A host
        // without THP answers EINVAL, and small pages are what it has.
        let _ = unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
    }
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` of the mapping that holds `addr`, from `/proc/self/smaps`.
    fn vm_flags(addr: usize) -> Option<String> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((lo, hi)) = range.split_once('-')
                && let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
            if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return Some(flags.trim().to_string());
            }
        }
        None
    }

    #[test]
    fn guest_ram_asks_for_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            eprintln!("SKIPPED guest_ram_asks_for_huge_pages: this host has no THP");
            return;
        }
        let mem = guest_memory(64 << 20).unwrap();
        let region = mem.iter().next().unwrap();
        let host = region.get_host_address(MemoryRegionAddress(0)).unwrap() as usize;
        for addr in [host, host + region.len() as usize - 1] {
            let flags = vm_flags(addr).expect("the mapping is in smaps");
            // `hg`: the mapping was advised MADV_HUGEPAGE.
            assert!(flags.split(' ').any(|f| f == "hg"), "{flags}");
        }
    }
}
