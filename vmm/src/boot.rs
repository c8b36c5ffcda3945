//! The state every vCPU starts in: 64-bit long mode with paging on, entered at the image's entry
//! point with `rdi` = boot parameters and `rsi` = the CPU index (see `guest_abi::layout`).
//!
//! The VMM writes a minimal GDT and an identity map of the low 4 GiB (2 MiB pages, user-
//! accessible so the guest's ring 3 can run anywhere, uncached over the 3–4 GiB MMIO hole), so
//! the guest's CPL0 stub runs no set-up loops (every ring-0 instruction is emulated on PVM).

use crate::error::Error;
use guest_abi::{BootParams, layout};
use kvm_bindings::{kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Entry GDT: null, 64-bit code (0x08), data (0x10), and a TSS slot (0x18) for KVM's sake.
pub const GDT_ADDR: u64 = 0x500;
const GDT: [u64; 4] = [
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x0000_8b00_0000_0067,
];
/// Page-map level 4; the PDPT and four page directories follow, one page each.
pub const PML4_ADDR: u64 = 0x9000;
const PDPT_ADDR: u64 = 0xa000;
const PD_ADDR: u64 = 0xb000;
/// Entry stack pointer handed to the guest (the stub switches to its own stacks at once).
pub const ENTRY_RSP: u64 = 0x8_0000;

const PTE_PRESENT: u64 = 1;
const PTE_WRITE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_PWT: u64 = 1 << 3;
const PTE_PCD: u64 = 1 << 4;
const PTE_HUGE: u64 = 1 << 7;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Writes the entry GDT and page tables into guest memory.
pub fn write_entry_tables(mem: &GuestMemoryMmap) -> Result<(), Error> {
    let write = |addr: u64, v: u64| {
        mem.write_obj(v, GuestAddress(addr))
            .map_err(|e| Error::BadInput(format!("guest memory too small for boot tables: {e}")))
    };
    for (i, d) in GDT.iter().enumerate() {
        write(GDT_ADDR + 8 * i as u64, *d)?;
    }
    write(PML4_ADDR, PDPT_ADDR | PTE_PRESENT | PTE_WRITE | PTE_USER)?;
    for gib in 0..4u64 {
        let pd = PD_ADDR + gib * 0x1000;
        write(PDPT_ADDR + gib * 8, pd | PTE_PRESENT | PTE_WRITE | PTE_USER)?;
        for j in 0..512u64 {
            let addr = (gib << 30) | (j << 21);
            let mut e = addr | PTE_PRESENT | PTE_WRITE | PTE_USER | PTE_HUGE;
            if addr >= layout::MMIO_HOLE_START {
                e |= PTE_PWT | PTE_PCD;
            }
            write(pd + j * 8, e)?;
        }
    }
    Ok(())
}

/// Writes the boot parameters and the command line.
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    params: &BootParams,
    cmdline: &str,
) -> Result<(), Error> {
    let fail = |e: vm_memory::GuestMemoryError| {
        Error::BadInput(format!("guest memory too small for boot parameters: {e}"))
    };
    mem.write_slice(params.as_bytes(), GuestAddress(layout::BOOT_PARAMS_ADDR))
        .map_err(fail)?;
    let mut line = cmdline.as_bytes().to_vec();
    line.push(0);
    mem.write_slice(&line, GuestAddress(layout::CMDLINE_ADDR))
        .map_err(fail)
}

fn segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// Special registers for long mode with the entry tables; `sregs` is what KVM reported.
pub fn long_mode_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = segment(0x08, 0xb, true);
    let data = segment(0x10, 0x3, false);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        selector: 0x18,
        type_: 0xb,
        s: 0,
        limit: 0x67,
        ..code
    };
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr0 = CR0_PG | CR0_NE | CR0_ET | CR0_MP | CR0_PE;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// General registers at entry for CPU `cpu`.
pub fn entry_regs(entry: u64, cpu: u32) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rsp: ENTRY_RSP,
        rflags: 0x2,
        rdi: layout::BOOT_PARAMS_ADDR,
        rsi: u64::from(cpu),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestAddress;

    fn read(mem: &GuestMemoryMmap, a: u64) -> u64 {
        mem.read_obj(GuestAddress(a)).unwrap()
    }

    #[test]
    fn identity_maps_4_gib_user_accessible_and_uncached_above_3_gib() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write_entry_tables(&mem).unwrap();
        assert_eq!(read(&mem, PML4_ADDR), PDPT_ADDR | 7);
        for gib in 0..4 {
            let pd = read(&mem, PDPT_ADDR + 8 * gib) & !0xfff;
            for j in [0u64, 1, 511] {
                let e = read(&mem, pd + 8 * j);
                assert_eq!(
                    e & !0x1fffff,
                    (gib << 30) | (j << 21),
                    "gib {gib} entry {j}"
                );
                assert_eq!(e & 0x87, 0x87);
                assert_eq!(e & 0x18 != 0, gib == 3);
            }
        }
        assert_eq!(read(&mem, GDT_ADDR + 8), 0x00af_9b00_0000_ffff);
    }

    #[test]
    fn boot_params_and_cmdline_land_where_the_abi_says() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut p = BootParams::new();
        p.vcpus = 2;
        write_boot_params(&mem, &p, "a=b").unwrap();
        assert_eq!(read(&mem, layout::BOOT_PARAMS_ADDR), guest_abi::BOOT_MAGIC);
        let mut line = [0u8; 4];
        mem.read_slice(&mut line, GuestAddress(layout::CMDLINE_ADDR))
            .unwrap();
        assert_eq!(&line, b"a=b\0");
    }

    #[test]
    fn registers_enter_long_mode_at_the_entry() {
        let s = long_mode_sregs(kvm_sregs::default());
        assert_eq!((s.cr0, s.cr4, s.efer), (0x8000_0033, 0x620, 0x500));
        assert_eq!((s.cs.l, s.cs.db, s.cs.selector), (1, 0, 0x08));
        let r = entry_regs(0x10_0000, 3);
        assert_eq!(
            (r.rip, r.rsi, r.rdi),
            (0x10_0000, 3, layout::BOOT_PARAMS_ADDR)
        );
    }
}
