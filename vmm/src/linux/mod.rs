//! Booting a Linux kernel on one vCPU: a bzImage through the 64-bit boot protocol with a zero
//! page (e820 map, command line, initrd); a vmlinux through its PVH entry (32-bit, paging off,
//! `hvm_start_info` with the same memory map, command line and initrd) when it has one, else
//! like a bzImage at its ELF entry.
//!
//! The platform Linux sees: COM1 (IRQ 4) for its console, the virtio console declared on the
//! command line (`virtio_mmio.device=4K@<base>:5`), KVM's IOAPIC found through an MP table
//! ([`mptable`]), KVM's PIT and kvmclock, and a keyboard controller whose only job is the
//! reset line: `reboot` (or a panic, with `panic=-1`) ends the run. No ACPI, no PCI. On a PVM
//! host the CPU is shown as a qemu64 ([`cpuid`]).

pub mod cpuid;
pub mod legacy;
pub mod mptable;

use crate::error::Error;
use kvm_bindings::{kvm_regs, kvm_sregs};
use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::elf::start_info::{
    XEN_HVM_START_MAGIC_VALUE, hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::{BzImage, Elf, KernelLoader, KernelLoaderResult, load_cmdline};
use std::io::Cursor;
use std::path::PathBuf;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// The zero page (`struct boot_params`).
pub const ZERO_PAGE_ADDR: u64 = 0x7000;
/// PVH: `hvm_start_info`, then its module list and memory map.
pub const START_INFO_ADDR: u64 = 0x6000;
const MODLIST_ADDR: u64 = 0x6040;
const MEMMAP_ADDR: u64 = 0x6100;
/// The kernel command line.
pub const CMDLINE_ADDR: u64 = 0x8000;
/// The longest command line x86 Linux takes, with its NUL.
pub const CMDLINE_MAX: usize = 2048;
/// The GSI (= ISA IRQ = IOAPIC pin) of COM1.
pub const COM1_GSI: u32 = 4;
/// The GSI of the virtio console.
pub const CONSOLE_GSI: u32 = 5;
/// Where a bzImage's protected-mode part is loaded and where `startup_64` runs from.
const HIGH_MEMORY: u64 = 0x10_0000;
/// Where a decompressing bzImage puts the kernel (CONFIG_PHYSICAL_START).
const LOAD_PHYSICAL_ADDR: u64 = 0x100_0000;
/// Entry GDT selectors the boot protocol asks for: __BOOT_CS and __BOOT_DS.
const BOOT_CS: u16 = 0x10;
const BOOT_DS: u16 = 0x18;
const BOOT_TR: u16 = 0x20;
const GDT: [u64; 5] = [
    0,
    0,
    0x00af_9b00_0000_ffff, // 64-bit code
    0x00cf_9300_0000_ffff, // flat data
    0x0000_8b00_0000_0067, // a TSS slot for KVM's sake
];
/// PVH's entry GDT: 32-bit flat code (0x08) and data (0x10), and a TSS slot (0x18).
const PVH_GDT: [u64; 4] = [
    0,
    0x00cf_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x0000_8b00_0000_0067,
];
const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const XLF_KERNEL_64: u16 = 1;

/// The two kinds of Linux image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// A compressed kernel with the x86 boot protocol's setup header.
    BzImage,
    /// The kernel's ELF file (no decompression: faster where ring 0 is emulated).
    Vmlinux,
}

/// Which Linux format `image` is, or `None` for anything else (the project's own guests).
pub fn detect(image: &[u8]) -> Option<Format> {
    if image.get(0x202..0x206) == Some(b"HdrS") {
        return Some(Format::BzImage);
    }
    has_linux_note(image).then_some(Format::Vmlinux)
}

/// True for a 64-bit ELF with a note owned by "Linux" (every vmlinux has one).
fn has_linux_note(image: &[u8]) -> bool {
    let u16_at = |at: usize| {
        image
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |at: usize| {
        image
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    if image.get(..5) != Some(b"\x7fELF\x02") {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let ph = (phoff as usize).saturating_add(i * usize::from(phentsize));
        if u32_at(ph) != Some(4) {
            return false; // not PT_NOTE
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            return false;
        };
        let (mut at, end) = (off as usize, (off.saturating_add(size)) as usize);
        while at + 12 <= end {
            let (Some(namesz), Some(descsz)) = (u32_at(at), u32_at(at + 4)) else {
                return false;
            };
            let name = at + 12;
            if image.get(name..name + namesz as usize) == Some(b"Linux\0") {
                return true;
            }
            at = name
                + (namesz as usize).next_multiple_of(4)
                + (descsz as usize).next_multiple_of(4);
        }
        false
    })
}

/// Where `images/linux/build-kernel` and `build-initramfs` leave this host's vmlinux and
/// the initramfs: `$PERIMETER_CACHE/linux/{pvm|stock}/vmlinux` and
/// `$PERIMETER_CACHE/linux/initramfs.cpio` (default cache `~/.cache/perimeter`).
pub fn built_artifacts() -> (PathBuf, PathBuf) {
    let cache = std::env::var_os("PERIMETER_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/perimeter")))
        .unwrap_or_default()
        .join("linux");
    let variant = if cpuid::pvm_host() { "pvm" } else { "stock" };
    (
        cache.join(variant).join("vmlinux"),
        cache.join("initramfs.cpio"),
    )
}

/// What to boot and with what.
pub struct Setup<'a> {
    /// The kernel image's bytes and their format.
    pub image: &'a [u8],
    /// Its format.
    pub format: Format,
    /// The initial RAM disk's bytes (an uncompressed cpio is fastest on PVM hosts).
    pub initrd: Option<&'a [u8]>,
    /// The user's part of the command line (after perimeter's).
    pub cmdline: &'a str,
    /// The console transport's MMIO base.
    pub console_base: u64,
    /// Add the PVM host's command-line words ([`cpuid::PVM_CMDLINE`]).
    pub pvm: bool,
    /// Enter a vmlinux through its PVH entry when it has one.
    pub pvh: bool,
}

/// How the vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// 64-bit long mode at this address, `rsi` = the zero page ([`sregs`], [`regs`]).
    ZeroPage(u64),
    /// 32-bit protected mode at this address, `rbx` = `hvm_start_info` ([`pvh_sregs`],
    /// [`pvh_regs`]).
    Pvh(u64),
}

/// Loads the kernel, the initrd, the command line, the zero page (and for PVH the start
/// info), the entry GDT and the MP table into `mem` (which the identity map of
/// [`crate::boot`] already covers); returns how to enter it.
pub fn load(mem: &GuestMemoryMmap, name: &str, mem_size: u64, s: &Setup) -> Result<Entry, Error> {
    let bad = |reason: String| Error::KernelFormat {
        path: name.into(),
        reason,
    };
    let mut cursor = Cursor::new(s.image);
    let too_small = |e| {
        Error::BadInput(format!(
            "--memory {} MiB is too little for {name}: {e}",
            mem_size >> 20
        ))
    };
    let (entry, hdr, kernel_end, pvh) = match s.format {
        Format::BzImage => {
            let r = BzImage::load(mem, None, &mut cursor, Some(GuestAddress(HIGH_MEMORY)))
                .map_err(|e| bad(format!("not a loadable bzImage: {e}")))?;
            let hdr = r.setup_header.unwrap_or_default();
            let (version, xloadflags, init_size) = (hdr.version, hdr.xloadflags, hdr.init_size);
            if version < 0x20c || xloadflags & XLF_KERNEL_64 == 0 {
                return Err(bad(format!(
                    "boot protocol {}.{:02} without a 64-bit entry (perimeter needs 2.12 or later)",
                    version >> 8,
                    version & 0xff
                )));
            }
            // The decompressor runs the kernel at LOAD_PHYSICAL_ADDR and needs init_size there.
            let end =
                (r.kernel_load.0 + r.kernel_end).max(LOAD_PHYSICAL_ADDR + u64::from(init_size));
            (r.kernel_load.0 + 0x200, hdr, end, None)
        }
        Format::Vmlinux => {
            let r: KernelLoaderResult =
                Elf::load(mem, None, &mut cursor, Some(GuestAddress(HIGH_MEMORY))).map_err(
                    |e| match e {
                        linux_loader::loader::Error::Elf(
                            linux_loader::loader::elf::Error::ReadKernelImage,
                        ) => too_small("a segment does not fit".into()),
                        e => bad(e.to_string()),
                    },
                )?;
            let hdr = setup_header {
                boot_flag: 0xaa55,
                header: 0x5372_6448,
                kernel_alignment: 0x100_0000,
                initrd_addr_max: 0x7fff_ffff,
                ..Default::default()
            };
            let pvh = match r.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(at) if s.pvh => Some(at.0),
                _ => None,
            };
            (r.kernel_load.0, hdr, r.kernel_end, pvh)
        }
    };
    if kernel_end > mem_size {
        return Err(too_small(format!(
            "the kernel needs RAM up to {} MiB",
            kernel_end.div_ceil(1 << 20)
        )));
    }

    let mut params = boot_params {
        hdr,
        ..Default::default()
    };
    params.hdr.type_of_loader = 0xff;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    if let Some(initrd) = s.initrd {
        let top = mem_size.min(u64::from(params.hdr.initrd_addr_max) + 1);
        let start = top.checked_sub(initrd.len() as u64).map(|a| a & !0xfff);
        let start = start
            .filter(|a| *a >= kernel_end.next_multiple_of(0x1000))
            .ok_or_else(|| {
                too_small(format!(
                    "the kernel ends at {} MiB and the initrd ({} KiB) must fit above it",
                    kernel_end.div_ceil(1 << 20),
                    initrd.len().div_ceil(1024)
                ))
            })?;
        mem.write_slice(initrd, GuestAddress(start))
            .map_err(|e| too_small(e.to_string()))?;
        params.hdr.ramdisk_image = start as u32;
        params.hdr.ramdisk_size = initrd.len() as u32;
    }
    let e820 = [
        (0, mptable::MPTABLE_ADDR, E820_RAM),
        (
            mptable::MPTABLE_ADDR,
            HIGH_MEMORY - mptable::MPTABLE_ADDR,
            E820_RESERVED,
        ),
        (HIGH_MEMORY, mem_size - HIGH_MEMORY, E820_RAM),
    ];
    for (i, (addr, size, r#type)) in e820.into_iter().enumerate() {
        params.e820_table[i] = boot_e820_entry { addr, size, r#type };
    }
    params.e820_entries = e820.len() as u8;

    let line = cmdline(s)?;
    load_cmdline(mem, GuestAddress(CMDLINE_ADDR), &line)
        .map_err(|e| Error::BadInput(format!("--cmdline: {e}")))?;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
        .map_err(|e| too_small(e.to_string()))?;
    let gdt: &[u64] = if pvh.is_some() { &PVH_GDT } else { &GDT };
    for (i, d) in gdt.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(crate::boot::GDT_ADDR + 8 * i as u64))
            .map_err(|e| too_small(e.to_string()))?;
    }
    mptable::write(mem).map_err(|e| too_small(e.to_string()))?;
    let Some(pvh_entry) = pvh else {
        return Ok(Entry::ZeroPage(entry));
    };
    write_start_info(mem, &params, &e820).map_err(|e| too_small(e.to_string()))?;
    Ok(Entry::Pvh(pvh_entry))
}

/// PVH's start info: the same memory map, command line and initrd as the zero page's.
fn write_start_info(
    mem: &GuestMemoryMmap,
    params: &boot_params,
    e820: &[(u64, u64, u32)],
) -> Result<(), vm_memory::GuestMemoryError> {
    let (initrd, initrd_size) = (params.hdr.ramdisk_image, params.hdr.ramdisk_size);
    let info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        nr_modules: u32::from(initrd_size != 0),
        modlist_paddr: MODLIST_ADDR,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    mem.write_obj(info, GuestAddress(START_INFO_ADDR))?;
    let module = hvm_modlist_entry {
        paddr: initrd.into(),
        size: initrd_size.into(),
        ..Default::default()
    };
    mem.write_obj(module, GuestAddress(MODLIST_ADDR))?;
    for (i, &(addr, size, type_)) in e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr,
            size,
            type_,
            reserved: 0,
        };
        mem.write_obj(entry, GuestAddress(MEMMAP_ADDR + 24 * i as u64))?;
    }
    Ok(())
}

/// perimeter's part of the command line, then the user's.
fn cmdline(s: &Setup) -> Result<Cmdline, Error> {
    let bad = |e: linux_loader::cmdline::Error| {
        Error::BadInput(format!(
            "--cmdline: {e} (at most {} bytes with perimeter's part, printable ASCII)",
            CMDLINE_MAX - 1
        ))
    };
    let mut line = Cmdline::new(CMDLINE_MAX).map_err(bad)?;
    line.insert_str("console=ttyS0 reboot=k panic=-1")
        .map_err(bad)?;
    if s.pvm {
        line.insert_str(cpuid::PVM_CMDLINE).map_err(bad)?;
    }
    line.add_virtio_mmio_device(0x1000, GuestAddress(s.console_base), CONSOLE_GSI, None)
        .map_err(bad)?;
    if !s.cmdline.trim().is_empty() {
        line.insert_str(s.cmdline.trim()).map_err(bad)?;
    }
    Ok(line)
}

/// Special registers at entry: long mode on the identity map, with the boot protocol's
/// selectors.
pub fn sregs(kvm: kvm_sregs) -> kvm_sregs {
    let mut s = crate::boot::long_mode_sregs(kvm);
    s.cs.selector = BOOT_CS;
    for seg in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
        seg.selector = BOOT_DS;
    }
    s.tr.selector = BOOT_TR;
    s.gdt.limit = (GDT.len() * 8 - 1) as u16;
    s
}

/// Special registers at PVH's entry: 32-bit protected mode, flat segments, paging off.
pub fn pvh_sregs(mut s: kvm_sregs) -> kvm_sregs {
    let code = kvm_bindings::kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x08,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 1,
        s: 1,
        l: 0,
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    let data = kvm_bindings::kvm_segment {
        selector: 0x10,
        type_: 0x3,
        ..code
    };
    s.cs = code;
    for seg in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
        *seg = data;
    }
    s.tr = kvm_bindings::kvm_segment {
        selector: 0x18,
        type_: 0xb,
        s: 0,
        db: 0,
        g: 0,
        limit: 0x67,
        ..code
    };
    s.gdt.base = crate::boot::GDT_ADDR;
    s.gdt.limit = (PVH_GDT.len() * 8 - 1) as u16;
    s.idt.base = 0;
    s.idt.limit = 0;
    s.cr0 = 0x11; // PE | ET
    s.cr3 = 0;
    s.cr4 = 0;
    s.efer = 0;
    s
}

/// General registers at PVH's entry: `rbx` points at `hvm_start_info`.
pub fn pvh_regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rbx: START_INFO_ADDR,
        rflags: 0x2,
        ..Default::default()
    }
}

/// General registers at entry: `rsi` points at the zero page.
pub fn regs(entry: u64) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsi: ZERO_PAGE_ADDR,
        rsp: crate::boot::ENTRY_RSP,
        rflags: 0x2,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal vmlinux: one PT_LOAD at 16 MiB (entry there) and a "Linux" note.
    fn tiny_vmlinux() -> Vec<u8> {
        let mut f = vec![0u8; 0x200];
        f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        f[0x10] = 2; // ET_EXEC
        f[0x12] = 62; // x86-64
        f[0x14] = 1;
        f[0x18..0x20].copy_from_slice(&LOAD_PHYSICAL_ADDR.to_le_bytes());
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        f[0x34] = 64; // e_ehsize
        f[0x36] = 56; // e_phentsize
        f[0x38] = 2; // e_phnum
        let phdr = |f: &mut Vec<u8>, at: usize, kind: u32, off: u64, paddr: u64, size: u64| {
            f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            f[at + 16..at + 24].copy_from_slice(&(paddr | 0xffff_ffff_8000_0000).to_le_bytes());
            f[at + 24..at + 32].copy_from_slice(&paddr.to_le_bytes());
            f[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
            f[at + 40..at + 48].copy_from_slice(&size.to_le_bytes());
        };
        phdr(&mut f, 64, 1, 0x100, LOAD_PHYSICAL_ADDR, 0x100);
        phdr(&mut f, 120, 4, 0x180, 0, 44);
        // Note: namesz 6, descsz 4, type 0, "Linux\0\0\0", desc.
        f[0x180..0x18c].copy_from_slice(&[6, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0]);
        f[0x18c..0x192].copy_from_slice(b"Linux\0");
        // Note: namesz 4, descsz 4, type 18 (PVH entry), "Xen\0", the 32-bit entry.
        f[0x198..0x1a4].copy_from_slice(&[4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0]);
        f[0x1a4..0x1a8].copy_from_slice(b"Xen\0");
        f[0x1a8..0x1ac].copy_from_slice(&(PVH_ENTRY as u32).to_le_bytes());
        f
    }

    const PVH_ENTRY: u64 = LOAD_PHYSICAL_ADDR + 0x40;

    fn mem(mib: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (mib << 20) as usize)]).unwrap()
    }

    fn setup<'a>(image: &'a [u8], initrd: Option<&'a [u8]>, cmdline: &'a str) -> Setup<'a> {
        Setup {
            image,
            format: Format::Vmlinux,
            initrd,
            cmdline,
            console_base: 0xd000_2000,
            pvm: true,
            pvh: false,
        }
    }

    #[test]
    fn tells_linux_images_from_ours() {
        assert_eq!(detect(&tiny_vmlinux()), Some(Format::Vmlinux));
        assert_eq!(detect(crate::loader::EMBEDDED_GUEST), None);
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect(&bz), Some(Format::BzImage));
        // A note header that points past the end of the file is not a crash.
        let mut broken = tiny_vmlinux();
        broken[120 + 32] = 0xff;
        broken[0x180] = 0xff;
        assert_eq!(detect(&broken), None);
        assert_eq!(detect(b"\x7fELF\x02"), None);
    }

    #[test]
    fn zero_page_holds_e820_cmdline_and_the_initrd_at_the_top_of_ram() {
        let m = mem(64);
        let initrd = vec![0x5a; 10_000];
        let entry = load(
            &m,
            "k",
            64 << 20,
            &setup(&tiny_vmlinux(), Some(&initrd), "quiet"),
        )
        .unwrap();
        assert_eq!(entry, Entry::ZeroPage(LOAD_PHYSICAL_ADDR));
        let p: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        let (image, size, loader) = (
            p.hdr.ramdisk_image,
            p.hdr.ramdisk_size,
            p.hdr.type_of_loader,
        );
        assert_eq!((image, size, loader), ((64 << 20) - 0x3000, 10_000, 0xff));
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(u64::from(image))).unwrap(),
            0x5a
        );
        let entries = p.e820_entries as usize;
        let table = p.e820_table;
        let e820: Vec<(u64, u64, u32)> = table[..entries]
            .iter()
            .map(|e| (e.addr, e.size, e.r#type))
            .collect();
        assert_eq!(
            e820,
            [
                (0, 0x9_fc00, 1),
                (0x9_fc00, 0x6_0400, 2),
                (0x10_0000, (64 << 20) - 0x10_0000, 1)
            ]
        );
        let mut line = vec![0u8; CMDLINE_MAX];
        m.read_slice(&mut line, GuestAddress(CMDLINE_ADDR)).unwrap();
        let line = String::from_utf8_lossy(&line[..line.iter().position(|b| *b == 0).unwrap()])
            .into_owned();
        assert!(
            line.starts_with("console=ttyS0 reboot=k panic=-1 noxsave clearcpuid=cx16"),
            "{line}"
        );
        assert!(
            line.ends_with("virtio_mmio.device=4K@0xd0002000:5 quiet"),
            "{line}"
        );
        let mp: [u8; 4] = m.read_obj(GuestAddress(mptable::MPTABLE_ADDR)).unwrap();
        assert_eq!(&mp, b"_MP_");
    }

    #[test]
    fn pvh_start_info_carries_the_same_map_cmdline_and_initrd() {
        let m = mem(64);
        let (image, initrd) = (tiny_vmlinux(), vec![1u8; 5000]);
        let s = Setup {
            pvh: true,
            ..setup(&image, Some(&initrd), "")
        };
        assert_eq!(load(&m, "k", 64 << 20, &s).unwrap(), Entry::Pvh(PVH_ENTRY));
        let info: hvm_start_info = m.read_obj(GuestAddress(START_INFO_ADDR)).unwrap();
        assert_eq!(
            (info.magic, info.version, info.nr_modules),
            (XEN_HVM_START_MAGIC_VALUE, 1, 1)
        );
        assert_eq!((info.cmdline_paddr, info.memmap_entries), (CMDLINE_ADDR, 3));
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(info.modlist_paddr)).unwrap();
        assert_eq!((module.paddr, module.size), ((64 << 20) - 0x2000, 5000));
        let last: hvm_memmap_table_entry =
            m.read_obj(GuestAddress(info.memmap_paddr + 48)).unwrap();
        assert_eq!(
            (last.addr, last.size, last.type_),
            (HIGH_MEMORY, (64 << 20) - HIGH_MEMORY, 1)
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(crate::boot::GDT_ADDR + 8))
                .unwrap(),
            PVH_GDT[1]
        );
        let sr = pvh_sregs(kvm_sregs::default());
        assert_eq!(
            (sr.cr0, sr.efer, sr.cs.db, sr.cs.l, sr.cs.selector),
            (0x11, 0, 1, 0, 0x08)
        );
        assert_eq!(pvh_regs(PVH_ENTRY).rbx, START_INFO_ADDR);
    }

    #[test]
    fn refuses_what_cannot_boot() {
        let vmlinux = tiny_vmlinux();
        let big = vec![0; 60 << 20];
        let e = load(&mem(64), "k", 64 << 20, &setup(&vmlinux, Some(&big), "")).unwrap_err();
        assert!(
            e.to_string()
                .contains("initrd (61440 KiB) must fit above it"),
            "{e}"
        );
        let e = load(&mem(64), "k", 64 << 20, &setup(&vmlinux, None, "x\u{1}y")).unwrap_err();
        assert!(e.to_string().starts_with("--cmdline"), "{e}");
        let e = load(
            &mem(64),
            "k",
            64 << 20,
            &setup(&vmlinux, None, &"a".repeat(3000)),
        )
        .unwrap_err();
        assert!(e.to_string().contains("at most 2047 bytes"), "{e}");
        let e = load(&mem(8), "k", 8 << 20, &setup(&vmlinux, None, "")).unwrap_err();
        assert!(e.to_string().contains("too little"), "{e}");
        let mut bz = vec![0u8; 0x1000];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let s = Setup {
            format: Format::BzImage,
            ..setup(&bz, None, "")
        };
        let e = load(&mem(64), "k", 64 << 20, &s).unwrap_err();
        assert!(e.to_string().contains("cannot load kernel k"), "{e}");
    }

    #[test]
    fn entry_state_follows_the_boot_protocol() {
        let s = sregs(kvm_sregs::default());
        assert_eq!(
            (s.cs.selector, s.ds.selector, s.ss.selector, s.tr.selector),
            (0x10, 0x18, 0x18, 0x20)
        );
        assert_eq!((s.cs.l, s.gdt.limit), (1, 39));
        let r = regs(0x100_0000);
        assert_eq!((r.rip, r.rsi), (0x100_0000, ZERO_PAGE_ADDR));
    }
}
