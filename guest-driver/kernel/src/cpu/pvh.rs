//! The PVH entry, so that the same image boots under QEMU (`-M microvm -kernel guest.elf`).
//!
//! QEMU's firmware (qboot) enters `pvh_start32`, the address in the `Xen` ELF note of type 18
//! (XEN_ELFNOTE_PHYS32_ENTRY), in 32-bit protected mode with paging off and `ebx` = the
//! `hvm_start_info`. Fourteen instructions (ring 0, so emulated on PVM hosts: no loops) load
//! static page tables (identity map of 4 GiB, 2 MiB pages, user-accessible), enter long mode
//! and jump to the shared `_start` as CPU 0 with `rdi` = the start info. [`boot_params`] then
//! describes that machine as a [`BootParams`] so the rest of the guest does not care who booted it:
//! one vCPU, RAM from the memory map, the command line, the TSC rate from `tsc_khz=` (or the
//! hypervisor's CPUID leaf), and each `virtio_mmio.device=SIZE@BASE:GSI` entry (QEMU adds them
//! with `acpi=off`) as a device whose GSI is routed through the IOAPIC to a vector of its own.
//! There is no debug page: output goes to COM1 and exit to `isa-debug-exit` at port 0xf4.

use crate::cpu::mmio::{read_u32, write_u32};
use guest_abi::workload::parse_size;
use guest_abi::{
    BootParams, DEVICE_VECTOR_BASE, MAX_MMIO_DEVICES, MMIO_LEVEL_IRQ, MmioDevice, MmioKind,
};

/// `hvm_start_info::magic`.
const START_MAGIC: u32 = 0x336e_c578;
/// E820 type of usable RAM.
const E820_RAM: u32 = 1;
/// Where microvm's IOAPIC sits.
const IOAPIC_BASE: u64 = 0xfec0_0000;
/// The longest command line read.
const MAX_CMDLINE: usize = guest_abi::MAX_CMDLINE;

core::arch::global_asm!(
    r#"
.section .note.Xen, "a", @note
.balign 4
    .long 4, 8, 18
    .asciz "Xen"
.balign 4
    /* QEMU reads a size_t here for ELF64, linux-loader a u32: an 8-byte value serves both. */
    .quad pvh_start32
.balign 4

.section .text.pvh, "ax"
.code32
.global pvh_start32
pvh_start32:
    mov eax, offset pvh_pml4
    mov cr3, eax
    mov eax, 0x620              /* CR4 = PAE | OSFXSR | OSXMMEXCPT */
    mov cr4, eax
    mov ecx, 0xc0000080         /* EFER = LME */
    mov eax, 0x100
    xor edx, edx
    wrmsr
    mov eax, 0x80000033         /* CR0 = PG | NE | ET | MP | PE */
    mov cr0, eax
    lgdt [gdt_ptr]              /* the 32-bit form reads the low half of the 64-bit base */
    .byte 0xea
    .long pvh_start64
    .short 0x08                 /* ljmp 0x08:pvh_start64 (a 64-bit code segment) */
.code64
pvh_start64:
    mov eax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov edi, ebx                /* rdi = &hvm_start_info */
    xor esi, esi                /* CPU 0 */
    jmp _start

.section .data
.balign 4096
pvh_pml4:
    .quad pvh_pdpt + 7
    .fill 511, 8, 0
pvh_pdpt:
    .quad pvh_pd + 7, pvh_pd + 0x1007, pvh_pd + 0x2007, pvh_pd + 0x3007
    .fill 508, 8, 0
pvh_pd:
    /* Present, writable, user, 2 MiB; the top gigabyte (MMIO) uncached. */
.set pvh_i, 0
.rept 1536
    .quad (pvh_i << 21) | 0x87
    .set pvh_i, pvh_i + 1
.endr
.rept 512
    .quad (pvh_i << 21) | 0x9f
    .set pvh_i, pvh_i + 1
.endr
"#
);

/// The head of Xen's `hvm_start_info` (version 1).
#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// One `hvm_memmap_table_entry`.
#[repr(C)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

static PARAMS: spin::Once<BootParams> = spin::Once::new();

/// Whether `addr` (from `rdi` at entry) holds a PVH start info rather than perimeter's block.
pub fn is_start_info(addr: u64) -> bool {
    // SAFETY: the caller checked `addr` is non-zero and 8-byte aligned; both loaders put their
    // block in identity-mapped RAM below 1 MiB, and a u32 read there has no side effects.
    addr != 0 && unsafe { core::ptr::read_volatile(addr as *const u32) } == START_MAGIC
}

/// Describes the machine QEMU's start info at `addr` tells of (computed once).
pub fn boot_params(addr: u64) -> &'static BootParams {
    PARAMS.call_once(|| {
        // SAFETY: `is_start_info(addr)`: qboot wrote a version ≥ 1 start info there, below
        // 1 MiB, which nothing of ours overwrites (the image starts at 1 MiB, the heap at 2).
        let info = unsafe { &*(addr as *const StartInfo) };
        let mut p = BootParams::new();
        p.vcpus = 1;
        p.mem_size = ram_end(info);
        p.cmdline_addr = info.cmdline_paddr;
        p.cmdline_len = cmdline_len(info.cmdline_paddr) as u64;
        // The command line is readable from here on (bootinfo reads it from `p`).
        let cmdline = if p.cmdline_len == 0 {
            ""
        } else {
            // SAFETY: `cmdline_len` bytes before a NUL at `cmdline_paddr`, in RAM qboot wrote.
            let b = unsafe {
                core::slice::from_raw_parts(info.cmdline_paddr as *const u8, p.cmdline_len as usize)
            };
            core::str::from_utf8(b).unwrap_or("")
        };
        p.tsc_khz = cmdline
            .split_ascii_whitespace()
            .find_map(|w| w.strip_prefix("tsc_khz="))
            .and_then(|v| v.parse().ok())
            .or_else(cpuid_tsc_khz)
            .unwrap_or_else(|| panic!("PVH boot: no tsc_khz= on the command line"));
        for (i, (base, size, gsi)) in cmdline
            .split_ascii_whitespace()
            .filter_map(|w| w.strip_prefix("virtio_mmio.device="))
            .filter_map(parse_virtio_mmio)
            .take(MAX_MMIO_DEVICES)
            .enumerate()
        {
            let vector = DEVICE_VECTOR_BASE + i as u8;
            route_gsi(gsi, vector, 0);
            p.mmio[i] = MmioDevice {
                base,
                size,
                kind: MmioKind::VirtioMmio as u32,
                vector: vector.into(),
                dest_apic: 0,
                flags: MMIO_LEVEL_IRQ,
            };
            p.mmio_count = i as u32 + 1;
        }
        p
    })
}

/// The end of the RAM range that holds the image (the heap runs up to it).
fn ram_end(info: &StartInfo) -> u64 {
    if info.version < 1 || info.memmap_paddr == 0 {
        panic!(
            "PVH boot: start info version {} has no memory map",
            info.version
        );
    }
    // SAFETY: version ≥ 1, so qboot wrote `memmap_entries` entries at `memmap_paddr`.
    let map = unsafe {
        core::slice::from_raw_parts(
            info.memmap_paddr as *const MemmapEntry,
            info.memmap_entries.min(128) as usize,
        )
    };
    let image = guest_abi::layout::IMAGE_BASE;
    map.iter()
        .filter(|e| e.kind == E820_RAM && e.size != 0)
        .find(|e| e.addr <= image && image < e.addr.saturating_add(e.size))
        .map(|e| (e.addr + e.size).min(guest_abi::layout::MMIO_HOLE_START))
        .unwrap_or_else(|| panic!("PVH boot: no RAM at the image's address"))
}

/// Length of the NUL-terminated command line at `addr` (at most [`MAX_CMDLINE`]).
fn cmdline_len(addr: u64) -> usize {
    if addr == 0 {
        return 0;
    }
    // SAFETY: qboot wrote a NUL-terminated string at `addr` in low RAM; reading up to the NUL
    // (or MAX_CMDLINE bytes of RAM) stays in memory it owns.
    (0..MAX_CMDLINE)
        .find(|&i| unsafe { core::ptr::read((addr + i as u64) as *const u8) } == 0)
        .unwrap_or(MAX_CMDLINE)
}

/// KVM's TSC rate from the hypervisor timing leaf 0x4000_0010, when offered.
fn cpuid_tsc_khz() -> Option<u64> {
    let max = core::arch::x86_64::__cpuid(0x4000_0000).eax;
    (max >= 0x4000_0010)
        .then(|| u64::from(core::arch::x86_64::__cpuid(0x4000_0010).eax))
        .filter(|&khz| khz != 0)
}

/// Parses Linux's `SIZE@BASE:IRQ[:ID]` (numbers decimal or 0x-hex, SIZE with K/M/G).
pub fn parse_virtio_mmio(spec: &str) -> Option<(u64, u64, u32)> {
    let (size, rest) = spec.split_once('@')?;
    let mut parts = rest.split(':');
    let base = parse_size(parts.next()?)?;
    let irq = parse_size(parts.next()?)?;
    Some((base, parse_size(size)?, u32::try_from(irq).ok()?))
}

/// Routes IOAPIC pin `gsi` to `vector` on `apic`: fixed, physical, edge, active high.
/// Edge, because the stub sends the EOI before the ring-3 handler acknowledges the device: a
/// level pin would fire again at once.
fn route_gsi(gsi: u32, vector: u8, apic: u32) {
    let pins = ((ioapic_read(1) >> 16) & 0xff) + 1;
    if gsi >= pins {
        panic!("PVH boot: GSI {gsi} beyond the IOAPIC's {pins} pins");
    }
    ioapic_write(0x11 + 2 * gsi, apic << 24);
    ioapic_write(0x10 + 2 * gsi, u32::from(vector));
}

fn ioapic_read(reg: u32) -> u32 {
    write_u32(IOAPIC_BASE, reg);
    read_u32(IOAPIC_BASE + 0x10)
}

fn ioapic_write(reg: u32, value: u32) {
    write_u32(IOAPIC_BASE, reg);
    write_u32(IOAPIC_BASE + 0x10, value);
}
