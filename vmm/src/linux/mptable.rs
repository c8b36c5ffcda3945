//! The Intel MultiProcessor table: how a Linux guest without ACPI learns where the IOAPIC is
//! and which pin each ISA interrupt arrives on.
//!
//! One CPU, one ISA bus, KVM's IOAPIC, and ISA IRQ `i` on IOAPIC pin `i` for every pin: the
//! same as KVM's default GSI routes, which [`crate::irq`] keeps. Layout and values follow the
//! MP specification 1.4 (structures as in Linux's `asm/mpspec_def.h`).

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Where the table goes: the last KiB below 640 KiB, which Linux scans and the e820 map
/// reserves.
pub const MPTABLE_ADDR: u64 = 0x9_fc00;
/// The local APIC's address.
const LAPIC_ADDR: u32 = 0xfee0_0000;
/// KVM's IOAPIC: its address, version and the ID we give it (any ID no CPU has).
const IOAPIC_ADDR: u32 = 0xfec0_0000;
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_ID: u8 = 1;
const IOAPIC_PINS: u8 = 24;
const SPEC_REV: u8 = 4;

/// The bytes of the floating pointer and the configuration table for one CPU.
pub fn build() -> Vec<u8> {
    let mut entries = Vec::new();
    // Processor: APIC ID 0, version 0x14, enabled and bootstrap, family 6, FPU + APIC.
    entries.extend_from_slice(&[0, 0, 0x14, 0b11]);
    entries.extend_from_slice(&0x600u32.to_le_bytes());
    entries.extend_from_slice(&0x201u32.to_le_bytes());
    entries.extend_from_slice(&[0; 8]);
    // Bus 0: ISA.
    entries.extend_from_slice(&[1, 0]);
    entries.extend_from_slice(b"ISA   ");
    // The IOAPIC, usable.
    entries.extend_from_slice(&[2, IOAPIC_ID, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    // Interrupt sources: vectored, flags 0 (as the bus says: edge, active high), ISA IRQ i
    // to pin i.
    for pin in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[3, 0, 0, 0, 0, pin, IOAPIC_ID, pin]);
    }
    // Local interrupts: ExtINT on LINT0 and NMI on LINT1 of every CPU.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);

    let mut config = Vec::new();
    config.extend_from_slice(b"PCMP");
    let length = 44 + entries.len();
    config.extend_from_slice(&(length as u16).to_le_bytes());
    config.extend_from_slice(&[SPEC_REV, 0]); // checksum at 7, filled below
    config.extend_from_slice(b"PERIMETR");
    config.extend_from_slice(b"VIRTIO-CONS ");
    config.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    config.extend_from_slice(&0u16.to_le_bytes());
    let count = 1 + 1 + 1 + u16::from(IOAPIC_PINS) + 2;
    config.extend_from_slice(&count.to_le_bytes());
    config.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    config.extend_from_slice(&[0; 4]); // no extended table
    config.extend_from_slice(&entries);
    config[7] = checksum(&config);

    let mut table = Vec::new();
    table.extend_from_slice(b"_MP_");
    table.extend_from_slice(&(MPTABLE_ADDR as u32 + 16).to_le_bytes());
    table.extend_from_slice(&[1, SPEC_REV, 0, 0, 0, 0, 0, 0]); // 1 paragraph; checksum at 10
    table[10] = checksum(&table);
    table.extend_from_slice(&config);
    table
}

/// Writes the table at [`MPTABLE_ADDR`].
pub fn write(mem: &GuestMemoryMmap) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_slice(&build(), GuestAddress(MPTABLE_ADDR))
}

/// The byte that makes `bytes` sum to 0 modulo 256.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_sub(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
    }

    #[test]
    fn both_checksums_hold_and_the_pointer_finds_the_table() {
        let t = build();
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(sum(&t[..16]), 0);
        let at = u32::from_le_bytes(t[4..8].try_into().unwrap()) as usize - MPTABLE_ADDR as usize;
        assert_eq!(&t[at..at + 4], b"PCMP");
        let len = u16::from_le_bytes([t[at + 4], t[at + 5]]) as usize;
        assert_eq!(at + len, t.len());
        assert_eq!(sum(&t[at..at + len]), 0);
        assert!(t.len() <= 1024, "fits below 640 KiB");
    }

    #[test]
    fn entries_name_one_cpu_one_ioapic_and_every_pin() {
        let t = build();
        let mut at = 16 + 44;
        let (mut cpus, mut ioapics, mut sources) = (0, 0, Vec::new());
        let count = u16::from_le_bytes([t[16 + 34], t[16 + 35]]);
        for _ in 0..count {
            match t[at] {
                0 => {
                    cpus += 1;
                    assert_eq!(t[at + 3] & 3, 3, "enabled bootstrap CPU");
                    at += 20;
                    continue;
                }
                2 => {
                    ioapics += 1;
                    assert_eq!(&t[at + 4..at + 8], &IOAPIC_ADDR.to_le_bytes());
                }
                3 => sources.push((t[at + 5], t[at + 7])),
                1 | 4 => {}
                other => panic!("unknown entry type {other}"),
            }
            at += 8;
        }
        assert_eq!(at, t.len());
        assert_eq!((cpus, ioapics), (1, 1));
        let expected: Vec<(u8, u8)> = (0..24).map(|i| (i, i)).collect();
        assert_eq!(sources, expected, "ISA IRQ i on pin i");
    }
}
