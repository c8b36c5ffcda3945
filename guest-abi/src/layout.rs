//! Guest physical memory layout shared by the VMM and the guest.
//!
//! ```text
//! 0x0000_0500  GDT used for entry (the guest loads its own)
//! 0x0000_7000  BootParams                       (BOOT_PARAMS_ADDR)
//! 0x0000_8000  command line, NUL-terminated      (CMDLINE_ADDR, ≤ 4 KiB)
//! 0x0000_9000  entry page tables: identity map of 4 GiB with 2 MiB pages
//! 0x0010_0000  the image (ELF PT_LOADs at their p_paddr)
//!   ...        RAM up to mem_size (≤ MMIO_HOLE_START)
//! 0xd000_0000  debug page                        (DEBUG_BASE)
//! 0xd000_1000  virtio-mmio transports, 4 KiB apart (VIRTIO_MMIO_BASE)
//! 0xfec0_0000  IOAPIC;  0xfee0_0000  local APIC
//! ```
//!
//! Memory the VMM hands over is zero apart from what it wrote, so the guest need not clear `.bss`.

/// Where the VMM writes the [`BootParams`](crate::BootParams).
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
/// Where the VMM writes the command line.
pub const CMDLINE_ADDR: u64 = 0x8000;
/// Where the image is linked and loaded.
pub const IMAGE_BASE: u64 = 0x10_0000;
/// RAM must end at or below this address; the MMIO hole starts here.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// The debug page.
pub const DEBUG_BASE: u64 = 0xd000_0000;
/// Size of the debug page.
pub const DEBUG_SIZE: u64 = 0x1000;
/// The first virtio-mmio transport.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_1000;
/// Size of (and distance between) virtio-mmio transports.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
