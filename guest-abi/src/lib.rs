//! The contract between perimeter's VMM and the guests it boots.
//!
//! Both sides compile this one definition: the VMM (`vmm/`) writes [`BootParams`] into guest memory
//! and serves the [`debug`] MMIO page; the guest (`guest-driver/`) reads the one and writes the
//! other; both speak the virtio console's wire format as [`console`] defines it. Nothing here
//! depends on KVM or `std`.
#![no_std]

pub mod console;
pub mod debug;
pub mod histogram;
pub mod layout;
pub mod seeded;
pub mod workload;

/// `BootParams::magic`: "PERIMBP1".
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"PERIMBP1");
/// `BootParams::version` this crate describes.
pub const BOOT_VERSION: u32 = 1;
/// The most vCPUs a guest may be given.
pub const MAX_VCPUS: usize = 8;
/// The most MMIO devices a [`BootParams`] can list.
pub const MAX_MMIO_DEVICES: usize = 32;
/// The longest guest command line, in bytes, without its terminating NUL.
pub const MAX_CMDLINE: usize = 4095;

/// Exit code a guest uses when it panics (Rust's own convention).
pub const EXIT_PANIC: u32 = 101;
/// Guest exit codes above this are not passed through by the VMM (its own statuses live above).
pub const EXIT_CODE_MAX: u32 = 119;

/// Interrupt vector of the debug page's test interrupt (see [`debug::IRQ_TEST`]).
pub const IRQ_TEST_VECTOR: u8 = 0x40;
/// Interrupt vector the guest uses for its own wake-up IPIs.
pub const WAKE_VECTOR: u8 = 0xf0;
/// First interrupt vector the VMM hands out to MMIO devices ([`MmioDevice::vector`]).
pub const DEVICE_VECTOR_BASE: u8 = 0x50;

/// What kind of device an [`MmioDevice`] entry describes.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioKind {
    /// The debug page: exit, console and fault registers ([`debug`]).
    Debug = 1,
    /// A virtio-mmio transport (virtio 1.2 §4.2, version 2 registers).
    VirtioMmio = 2,
}

/// One MMIO device the VMM put in the guest's address space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmioDevice {
    /// Guest physical address of the first register.
    pub base: u64,
    /// Size of the register window in bytes.
    pub size: u64,
    /// An [`MmioKind`] value.
    pub kind: u32,
    /// Interrupt vector the device's MSI route delivers (0: the device has no interrupt).
    pub vector: u32,
    /// x2APIC ID the device's interrupt is sent to.
    pub dest_apic: u32,
    /// [`MMIO_LEVEL_IRQ`], or zero.
    pub flags: u32,
}

/// [`MmioDevice::flags`]: the interrupt is a level line behind an edge-triggered IOAPIC pin
/// (QEMU's virtio-mmio), so a driver must acknowledge the device (InterruptStatus and
/// InterruptACK) in its handler or no further interrupt arrives. perimeter's MSIs need no
/// acknowledgement.
pub const MMIO_LEVEL_IRQ: u32 = 1;

/// The block the VMM writes into guest memory and passes to every vCPU in `rdi`.
///
/// Every vCPU enters the image's ELF entry point in 64-bit mode with `rdi` = the address of this
/// block and `rsi` = its CPU index (0 for the bootstrap processor); see [`layout`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootParams {
    /// [`BOOT_MAGIC`].
    pub magic: u64,
    /// [`BOOT_VERSION`].
    pub version: u32,
    /// Number of vCPUs; their x2APIC IDs are 0..vcpus.
    pub vcpus: u32,
    /// Bytes of RAM, starting at guest physical address 0.
    pub mem_size: u64,
    /// TSC frequency in kHz, as KVM reports it for the vCPUs.
    pub tsc_khz: u64,
    /// Guest physical address of the command line (NUL-terminated).
    pub cmdline_addr: u64,
    /// Length of the command line in bytes, without the NUL.
    pub cmdline_len: u64,
    /// Number of valid entries in `mmio`.
    pub mmio_count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The MMIO devices present.
    pub mmio: [MmioDevice; MAX_MMIO_DEVICES],
}

impl BootParams {
    /// An empty block with the magic and version set.
    pub const fn new() -> Self {
        BootParams {
            magic: BOOT_MAGIC,
            version: BOOT_VERSION,
            vcpus: 0,
            mem_size: 0,
            tsc_khz: 0,
            cmdline_addr: 0,
            cmdline_len: 0,
            mmio_count: 0,
            reserved: 0,
            mmio: [MmioDevice {
                base: 0,
                size: 0,
                kind: 0,
                vector: 0,
                dest_apic: 0,
                flags: 0,
            }; MAX_MMIO_DEVICES],
        }
    }

    /// The valid device entries.
    pub fn devices(&self) -> &[MmioDevice] {
        let n = (self.mmio_count as usize).min(MAX_MMIO_DEVICES);
        &self.mmio[..n]
    }

    /// The block as bytes, for writing into guest memory.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `BootParams` is `repr(C)`, made only of integers, and has no padding
        // (checked by the `layout_has_no_padding` test), so every byte is initialised.
        unsafe {
            core::slice::from_raw_parts(
                (self as *const Self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
    }
}

impl Default for BootParams {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layout_has_no_padding() {
        assert_eq!(size_of::<MmioDevice>(), 32);
        assert_eq!(size_of::<BootParams>(), 56 + 32 * MAX_MMIO_DEVICES);
    }

    #[test]
    fn devices_never_reads_past_the_table() {
        let mut p = BootParams::new();
        p.mmio_count = 1000;
        assert_eq!(p.devices().len(), MAX_MMIO_DEVICES);
        p.mmio_count = 2;
        assert_eq!(p.devices().len(), 2);
    }
}
