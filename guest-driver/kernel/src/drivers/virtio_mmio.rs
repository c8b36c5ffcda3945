//! The virtio-mmio transport (virtio 1.2 §4.2, version 2 registers) from the driver's side:
//! the status handshake, feature negotiation, queue setup and the configuration space.

use crate::cpu::mmio::{read_u32, write_u32};
use crate::drivers::ProbeError;

const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
/// DriverFeatures.
pub const DRIVER_FEATURES: u64 = 0x020;
/// DriverFeaturesSel.
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
/// QueueSel.
pub const QUEUE_SEL: u64 = 0x030;
/// QueueNumMax.
pub const QUEUE_NUM_MAX: u64 = 0x034;
/// QueueNum.
pub const QUEUE_NUM: u64 = 0x038;
/// QueueReady.
pub const QUEUE_READY: u64 = 0x044;
/// QueueNotify.
pub const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
/// Status.
pub const STATUS: u64 = 0x070;
/// QueueDescLow (High follows).
pub const QUEUE_DESC: u64 = 0x080;
/// QueueDriverLow (High follows).
pub const QUEUE_DRIVER: u64 = 0x090;
/// QueueDeviceLow (High follows).
pub const QUEUE_DEVICE: u64 = 0x0a0;
/// The start of the device's configuration space.
pub const CONFIG: u64 = 0x100;

/// Status ACKNOWLEDGE.
pub const ACKNOWLEDGE: u32 = 1;
/// Status DRIVER.
pub const DRIVER: u32 = 2;
/// Status DRIVER_OK.
pub const DRIVER_OK: u32 = 4;
/// Status FEATURES_OK.
pub const FEATURES_OK: u32 = 8;
/// Status DEVICE_NEEDS_RESET.
pub const NEEDS_RESET: u32 = 64;

/// VIRTIO_F_VERSION_1.
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_RING_F_EVENT_IDX.
pub const F_EVENT_IDX: u64 = 1 << 29;

/// One virtio-mmio device's registers.
#[derive(Clone, Copy, Debug)]
pub struct Transport {
    base: u64,
}

impl Transport {
    /// The first virtio-mmio device of type `device_id` the VMM lists, with its transport.
    pub fn find(device_id: u32) -> Option<(guest_abi::MmioDevice, Transport)> {
        crate::cpu::bootinfo::params()
            .devices()
            .iter()
            .find_map(|d| {
                (d.kind == guest_abi::MmioKind::VirtioMmio as u32)
                    .then(|| Transport::probe(d.base, device_id))
                    .flatten()
                    .map(|t| (*d, t))
            })
    }

    /// The transport at `base` if it holds a version-2 device of type `device_id`.
    pub fn probe(base: u64, device_id: u32) -> Option<Transport> {
        let t = Transport { base };
        (t.r(MAGIC) == 0x7472_6976 && t.r(VERSION) == 2 && t.r(DEVICE_ID) == device_id).then_some(t)
    }

    fn r(&self, off: u64) -> u32 {
        read_u32(self.base + off)
    }

    fn w(&self, off: u64, v: u32) {
        write_u32(self.base + off, v)
    }

    /// Reads the register at `off` (any register: for drivers that test the device).
    pub fn read_reg(&self, off: u64) -> u32 {
        self.r(off)
    }

    /// Writes `v` to the register at `off`, whatever the device's state.
    pub fn write_reg(&self, off: u64, v: u32) {
        self.w(off, v)
    }

    /// Resets the device and negotiates: accepts the offered features among `wanted`
    /// (VERSION_1 is required). Returns the accepted set.
    pub fn negotiate(&self, wanted: u64) -> Result<u64, ProbeError> {
        self.w(STATUS, 0);
        self.w(STATUS, ACKNOWLEDGE);
        self.w(STATUS, ACKNOWLEDGE | DRIVER);
        let mut offered = 0u64;
        for sel in 0..2u32 {
            self.w(DEVICE_FEATURES_SEL, sel);
            offered |= u64::from(self.r(DEVICE_FEATURES)) << (32 * sel);
        }
        if offered & F_VERSION_1 == 0 {
            return Err(ProbeError::NotVersion1);
        }
        let accepted = offered & wanted;
        for sel in 0..2u32 {
            self.w(DRIVER_FEATURES_SEL, sel);
            self.w(DRIVER_FEATURES, (accepted >> (32 * sel)) as u32);
        }
        self.w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if self.r(STATUS) & FEATURES_OK == 0 {
            return Err(ProbeError::FeaturesRefused);
        }
        Ok(accepted)
    }

    /// Largest size of queue `index` (0: the queue does not exist).
    pub fn queue_max(&self, index: u16) -> u16 {
        self.w(QUEUE_SEL, index.into());
        self.r(QUEUE_NUM_MAX).min(u32::from(u16::MAX)) as u16
    }

    /// Gives queue `index` its size and ring addresses and enables it.
    pub fn setup_queue(
        &self,
        index: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), ProbeError> {
        self.w(QUEUE_SEL, index.into());
        if self.r(QUEUE_NUM_MAX) < u32::from(size) {
            return Err(ProbeError::QueueSize {
                queue: index,
                wanted: size,
            });
        }
        self.w(QUEUE_NUM, size.into());
        for (reg, addr) in [
            (QUEUE_DESC, desc),
            (QUEUE_DRIVER, driver),
            (QUEUE_DEVICE, device),
        ] {
            self.w(reg, addr as u32);
            self.w(reg + 4, (addr >> 32) as u32);
        }
        self.w(QUEUE_READY, 1);
        Ok(())
    }

    /// Sets DRIVER_OK.
    pub fn driver_ok(&self) -> Result<(), ProbeError> {
        self.w(STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        if self.r(STATUS) & NEEDS_RESET != 0 {
            return Err(ProbeError::NeedsReset);
        }
        Ok(())
    }

    /// Reads InterruptStatus and acknowledges what it holds; returns it (bit 0: used
    /// buffers, bit 1: configuration change). Two exits to the VMM: not for fast paths.
    pub fn take_interrupt_status(&self) -> u32 {
        let status = self.r(INTERRUPT_STATUS);
        self.w(INTERRUPT_ACK, status);
        status
    }

    /// The QueueNotify register (an ioeventfd on perimeter: no exit to the VMM).
    pub fn notify_address(&self) -> u64 {
        self.base + QUEUE_NOTIFY
    }

    /// Reads a 32-bit configuration field.
    pub fn config_u32(&self, off: u64) -> u32 {
        self.r(CONFIG + off)
    }

    /// Writes a 32-bit configuration field.
    pub fn set_config_u32(&self, off: u64, v: u32) {
        self.w(CONFIG + off, v)
    }
}
