//! Interrupt routing: irqfds whose GSIs are routed as MSIs to a chosen vCPU and vector.
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole table, so the table is kept here and always includes
//! KVM's default routes for GSIs 0–23 (PIC and IOAPIC pins); MSI routes start at GSI 24. KVM
//! injects MSI-routed irqfds inline, which is faster than the IOAPIC path (see the recipe).

use crate::error::Error;
use kvm_bindings::{
    KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KvmIrqRouting, kvm_irq_routing_entry, kvm_irq_routing_irqchip,
    kvm_irq_routing_msi,
};
use kvm_ioctls::VmFd;
use std::sync::{Arc, Mutex};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// The first GSI handed out for MSI routes.
pub const FIRST_MSI_GSI: u32 = 24;
const IOAPIC_PINS: u32 = 24;

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip = kvm_irq_routing_irqchip { irqchip: chip, pin };
    e
}

/// The MSI message that delivers `vector` to x2APIC ID `dest` (fixed, physical, edge).
pub fn msi(gsi: u32, dest: u32, vector: u8) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi = kvm_irq_routing_msi {
        address_lo: 0xfee0_0000 | ((dest & 0xff) << 12),
        // Destination IDs above 255 go in address_hi bits 31..8 (x2APIC extended IDs).
        address_hi: dest & !0xff,
        data: u32::from(vector),
        ..Default::default()
    };
    e
}

/// KVM's default routes for GSIs 0–23.
pub fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        if gsi < 8 {
            v.push(irqchip(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            v.push(irqchip(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
        v.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    v
}

/// The VM's GSI routing table and the irqfds bound to its MSI routes.
pub struct MsiRouter {
    vm: Arc<VmFd>,
    table: Mutex<Vec<kvm_irq_routing_entry>>,
}

impl MsiRouter {
    /// A router for `vm` (whose in-kernel irqchip must exist).
    pub fn new(vm: Arc<VmFd>) -> Self {
        MsiRouter {
            vm,
            table: Mutex::new(default_routes()),
        }
    }

    /// Adds an MSI route for (`dest`, `vector`) and returns an irqfd bound to it: writing 1 to
    /// the eventfd raises the interrupt.
    pub fn add(&self, dest: u32, vector: u8) -> Result<EventFd, Error> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let gsi = table
            .iter()
            .map(|e| e.gsi + 1)
            .max()
            .unwrap_or(0)
            .max(FIRST_MSI_GSI);
        table.push(msi(gsi, dest, vector));
        let routing = KvmIrqRouting::from_entries(&table)
            .map_err(|_| Error::BadInput("too many interrupt routes".into()))?;
        if let Err(e) = self.vm.set_gsi_routing(&routing) {
            table.pop();
            return Err(Error::Kvm {
                what: "KVM_SET_GSI_ROUTING",
                source: e,
            });
        }
        drop(table);
        self.pin(gsi)
    }

    /// An irqfd on `gsi` as routed now: for GSIs 0–23, KVM's default route to that IOAPIC
    /// pin (edge: KVM's irqfd pulses the line), which legacy guests like Linux program.
    pub fn pin(&self, gsi: u32) -> Result<EventFd, Error> {
        let fd = EventFd::new(EFD_NONBLOCK).map_err(Error::host("eventfd for an irqfd"))?;
        self.vm
            .register_irqfd(&fd, gsi)
            .map_err(Error::kvm("KVM_IRQFD"))?;
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_routes_cover_pic_and_ioapic_pins() {
        let r = default_routes();
        assert_eq!(r.len(), 16 + 24);
        // SAFETY (test): irqchip entries were written through the `irqchip` union field.
        let pins: Vec<(u32, u32, u32)> = r
            .iter()
            .map(|e| unsafe { (e.gsi, e.u.irqchip.irqchip, e.u.irqchip.pin) })
            .collect();
        assert!(pins.contains(&(10, KVM_IRQCHIP_PIC_SLAVE, 2)));
        assert!(pins.contains(&(23, KVM_IRQCHIP_IOAPIC, 23)));
    }

    #[test]
    fn msi_message_encodes_destination_and_vector() {
        let e = msi(30, 3, 0x40);
        // SAFETY (test): written through the `msi` union field.
        let m = unsafe { e.u.msi };
        assert_eq!((e.gsi, e.type_), (30, KVM_IRQ_ROUTING_MSI));
        assert_eq!((m.address_lo, m.address_hi, m.data), (0xfee0_3000, 0, 0x40));
    }
}
