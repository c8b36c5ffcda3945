//! Putting a virtio device on the MMIO bus: its transport, queue notifications as ioeventfds
//! (datamatch = queue index on QueueNotify) and its interrupt as an irqfd, routed as an MSI
//! (our guests) or to an IOAPIC pin (Linux, which finds the device on its command line).

use crate::bus::{Action, Bus, BusDevice};
use crate::error::Error;
use crate::irq::MsiRouter;
use device_model::virtio::{MmioTransport, Signals, VirtioDevice};
use guest_abi::{DEVICE_VECTOR_BASE, MmioDevice, MmioKind, layout};
use kvm_ioctls::{IoEventAddress, VmFd};
use std::io;
use std::sync::{Arc, Mutex};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY;
use vm_memory::GuestMemoryMmap;

/// A transport on the bus.
pub struct VirtioMmio(pub Mutex<MmioTransport>);

impl BusDevice for VirtioMmio {
    fn read(&self, _vcpu: u32, offset: u64, data: &mut [u8]) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(offset, data);
    }
    fn write(&self, _vcpu: u32, offset: u64, data: &[u8]) -> Action {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(offset, data);
        Action::Continue
    }
}

/// Where a device's interrupt goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Irq {
    /// An MSI to this x2APIC ID, at the slot's vector (`DEVICE_VECTOR_BASE + slot`).
    Msi {
        /// The destination CPU.
        dest: u32,
    },
    /// An IOAPIC pin (GSI 0–23).
    Pin(u32),
}

/// The MMIO base of transport slot `slot`.
pub fn slot_base(slot: u32) -> u64 {
    layout::VIRTIO_MMIO_BASE + u64::from(slot) * layout::VIRTIO_MMIO_SIZE
}

/// Puts `device` in transport slot `slot` with its interrupt sent to `irq`; returns its
/// boot-parameter entry and its transport.
pub fn attach(
    vm: &VmFd,
    router: &MsiRouter,
    bus: &mut Bus,
    mem: &GuestMemoryMmap,
    slot: u32,
    device: Arc<Mutex<dyn VirtioDevice>>,
    irq: Irq,
) -> Result<(MmioDevice, Arc<VirtioMmio>), Error> {
    let base = slot_base(slot);
    let vector = u8::try_from(u32::from(DEVICE_VECTOR_BASE) + slot)
        .map_err(|_| Error::BadInput(format!("no interrupt vector for virtio slot {slot}")))?;
    let (irq, dest) = match irq {
        Irq::Msi { dest } => (router.add(dest, vector)?, dest),
        Irq::Pin(gsi) => (router.pin(gsi)?, 0),
    };
    let signals = Arc::new(Signals::new(Box::new(move || irq.write(1))));
    let transport =
        MmioTransport::new(device, mem.clone(), signals).map_err(|e: io::Error| Error::Host {
            what: "eventfds for a virtio transport",
            source: e,
        })?;
    let notify = IoEventAddress::Mmio(base + u64::from(VIRTIO_MMIO_QUEUE_NOTIFY));
    for (index, fd) in transport.queue_events().iter().enumerate() {
        vm.register_ioevent(fd, &notify, index as u32)
            .map_err(Error::kvm("KVM_IOEVENTFD"))?;
    }
    let dev = Arc::new(VirtioMmio(Mutex::new(transport)));
    bus.insert(base, layout::VIRTIO_MMIO_SIZE, dev.clone())?;
    let entry = MmioDevice {
        base,
        size: layout::VIRTIO_MMIO_SIZE,
        kind: MmioKind::VirtioMmio as u32,
        vector: vector.into(),
        dest_apic: dest,
        flags: 0,
    };
    Ok((entry, dev))
}
