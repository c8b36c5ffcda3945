//! Loading the guest image: the embedded default guest or a 64-bit ELF file, via linux-loader.

use crate::config::{Kernel, MIN_HEAP_BYTES};
use crate::error::Error;
use guest_abi::layout;
use linux_loader::loader::{Elf, KernelLoader};
use std::io::Cursor;
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The guest built from `guest-driver/` by `build.rs`.
pub static EMBEDDED_GUEST: &[u8] = include_bytes!(env!("PERIMETER_GUEST_IMAGE"));

/// Where an image landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// Entry point (every vCPU starts here).
    pub entry: u64,
    /// First byte after the highest segment (including `.bss`).
    pub end: u64,
}

/// Reads the image's bytes: the embedded guest or the file.
pub fn image_bytes(kernel: &Kernel) -> Result<(String, Vec<u8>), Error> {
    match kernel {
        Kernel::Embedded => Ok(("the embedded guest".into(), EMBEDDED_GUEST.to_vec())),
        Kernel::File(path) => {
            let name = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|source| Error::KernelFile {
                path: name.clone(),
                source,
            })?;
            Ok((name, bytes))
        }
    }
}

/// Checks the ELF header ourselves (linux-loader does not check class or machine), then loads
/// every PT_LOAD at its physical address and checks the image plus a minimal heap fit in RAM.
pub fn load(
    mem: &GuestMemoryMmap,
    name: &str,
    image: &[u8],
    mem_size: u64,
) -> Result<LoadedImage, Error> {
    let bad = |reason: String| Error::KernelFormat {
        path: name.into(),
        reason,
    };
    if image.len() < 64 || &image[..4] != b"\x7fELF" {
        return Err(bad(
            "not an ELF file (perimeter boots 64-bit x86 ELF images)".into(),
        ));
    }
    if image[4] != 2 || image[5] != 1 {
        return Err(bad("not a 64-bit little-endian ELF".into()));
    }
    let machine = u16::from_le_bytes([image[18], image[19]]);
    if machine != 62 {
        return Err(bad(format!("ELF machine {machine} is not x86-64 (62)")));
    }
    let result = Elf::load(mem, None, &mut Cursor::new(image), Some(GuestAddress(layout::IMAGE_BASE)))
        .map_err(|e| match e {
            linux_loader::loader::Error::Elf(linux_loader::loader::elf::Error::ReadKernelImage) => {
                bad(format!("a segment does not fit in {} MiB of RAM", mem_size >> 20))
            }
            linux_loader::loader::Error::Elf(linux_loader::loader::elf::Error::InvalidEntryAddress) => {
                bad("entry point below 1 MiB: perimeter boots static images linked at 0x100000 or above (is this a program rather than a guest kernel?)".into())
            }
            e => bad(e.to_string()),
        })?;
    let loaded = LoadedImage {
        entry: result.kernel_load.0,
        end: result.kernel_end,
    };
    let heap_start = loaded.end.next_multiple_of(2 << 20);
    if heap_start + MIN_HEAP_BYTES > mem_size {
        return Err(Error::BadInput(format!(
            "--memory {} MiB is too little for {name}: its image ends at {:#x}, and it needs RAM up to at least {} MiB",
            mem_size >> 20,
            loaded.end,
            (heap_start + MIN_HEAP_BYTES).div_ceil(1 << 20)
        )));
    }
    if loaded.entry < layout::IMAGE_BASE || loaded.entry >= loaded.end {
        return Err(bad(format!(
            "entry point {:#x} lies outside the image",
            loaded.entry
        )));
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(mib: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (mib << 20) as usize)]).unwrap()
    }

    #[test]
    fn loads_the_embedded_guest_at_1_mib() {
        let img = load(&mem(8), "g", EMBEDDED_GUEST, 8 << 20).unwrap();
        assert_eq!(img.entry, layout::IMAGE_BASE);
        assert!(img.end > img.entry);
    }

    #[test]
    fn rejects_non_elf_and_wrong_machine() {
        let e = load(&mem(8), "x", b"#!/bin/sh\necho hi\n", 8 << 20).unwrap_err();
        assert!(e.to_string().contains("not an ELF"), "{e}");
        let mut img = EMBEDDED_GUEST.to_vec();
        img[18] = 183; // aarch64
        let e = load(&mem(8), "x", &img, 8 << 20).unwrap_err();
        assert!(e.to_string().contains("not x86-64"), "{e}");
    }

    #[test]
    fn rejects_too_little_memory() {
        let e = load(&mem(2), "g", EMBEDDED_GUEST, 2 << 20).unwrap_err();
        assert!(e.to_string().contains("too little"), "{e}");
    }
}
