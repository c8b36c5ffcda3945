//! The CPU a Linux guest is shown on a PVM host: a "qemu64" with Intel's vendor string.
//!
//! kvm_pvm emulates guest ring-0 code, and its emulator lacks `cmpxchg16b`, `xrstor`, `rdtscp`,
//! most SSE and (with an AMD vendor string) some x87 instructions that Linux would pick from
//! CPUID. So on a PVM host the table KVM supports is masked down to what QEMU's `qemu64` model
//! offers, with the hypervisor bit set so Linux finds kvmclock. Hardware-KVM hosts keep KVM's
//! table.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};
use std::path::Path;

/// True when `/dev/kvm` is kvm_pvm (software virtualization of guest ring 0).
pub fn pvm_host() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The kernel command-line words that hide the same features a second time (they show in
/// the guest's `/proc/cpuinfo` flags as absent even if a later CPUID leaf leaks them).
pub const PVM_CMDLINE: &str = "noxsave clearcpuid=cx16,popcnt,movbe,bmi1,bmi2,abm,adx,avx,avx2,\
fma,f16c,aes,pclmulqdq,smap,pcid,invpcid,fsgsbase,rdrand,rdseed,rdtscp";

const HIGHEST_BASIC: u32 = 0xd;
const HIGHEST_EXTENDED: u32 = 0x8000_0008;
/// "GenuineIntel" as CPUID leaf 0 spells it in EBX, EDX, ECX.
const INTEL: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e];
/// Family 15, model 107, stepping 1: QEMU's qemu64 (no family-6 Intel errata paths).
const QEMU64_SIGNATURE: u32 = 0x0006_0fb1;
const ECX1_SSE3: u32 = 1 << 0;
const ECX1_X2APIC: u32 = 1 << 21;
const ECX1_TSC_DEADLINE: u32 = 1 << 24;
const ECX1_HYPERVISOR: u32 = 1 << 31;
const ECX81_LAHF_LM: u32 = 1 << 0;
const EDX81_SYSCALL: u32 = 1 << 11;
const EDX81_NX: u32 = 1 << 20;
const EDX81_LM: u32 = 1 << 29;

/// Masks KVM's supported table to the qemu64 profile. `tsc_deadline`: the in-kernel LAPIC
/// offers the TSC-deadline timer (KVM leaves that bit out of the supported table).
pub fn qemu64_profile(cpuid: &mut CpuId, tsc_deadline: bool) {
    let kept: Vec<kvm_cpuid_entry2> = cpuid
        .as_slice()
        .iter()
        .filter(|e| match e.function {
            f @ 0..=0x3fff_ffff => f <= HIGHEST_BASIC,
            0x4000_0000..=0x7fff_ffff => true,
            f => f <= HIGHEST_EXTENDED,
        })
        .map(|e| masked(*e, tsc_deadline))
        .collect();
    *cpuid = CpuId::from_entries(&kept).expect("fewer entries than KVM gave");
}

fn masked(mut e: kvm_cpuid_entry2, tsc_deadline: bool) -> kvm_cpuid_entry2 {
    match e.function {
        0 => {
            e.eax = e.eax.min(HIGHEST_BASIC);
            [e.ebx, e.edx, e.ecx] = INTEL;
        }
        1 => {
            e.eax = QEMU64_SIGNATURE;
            e.ecx &= ECX1_SSE3 | ECX1_X2APIC;
            e.ecx |= ECX1_HYPERVISOR;
            if tsc_deadline {
                e.ecx |= ECX1_TSC_DEADLINE;
            }
        }
        // Structured extended features (fsgsbase, bmi, avx2, smap, ...) and xsave state.
        7 | 0xd => [e.eax, e.ebx, e.ecx, e.edx] = [0; 4],
        0x8000_0000 => e.eax = e.eax.min(HIGHEST_EXTENDED),
        0x8000_0001 => {
            e.ecx &= ECX81_LAHF_LM;
            e.edx &= EDX81_SYSCALL | EDX81_NX | EDX81_LM;
        }
        _ => {}
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, r: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: r[0],
            ebx: r[1],
            ecx: r[2],
            edx: r[3],
            ..Default::default()
        }
    }

    fn get(c: &CpuId, function: u32) -> Option<kvm_cpuid_entry2> {
        c.as_slice()
            .iter()
            .find(|e| e.function == function)
            .copied()
    }

    /// Something like an AMD EPYC host's table.
    fn epyc() -> CpuId {
        let all = u32::MAX;
        CpuId::from_entries(&[
            entry(0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            entry(1, 0, [0x00a0_0f11, 0x0080_0800, 0xfef8_3203, 0x178b_fbff]),
            entry(7, 0, [0, all, all, all]),
            entry(0xd, 0, [7, 0x340, 0x340, 0]),
            entry(0x10, 0, [all; 4]),
            entry(0x4000_0001, 0, [0x0100_7afb, 0, 0, 0]),
            entry(0x8000_0000, 0, [0x8000_0021, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, all, all]),
            entry(0x8000_0008, 0, [0x3030, 0, 0, 0]),
            entry(0x8000_001f, 0, [all; 4]),
        ])
        .unwrap()
    }

    #[test]
    fn intel_vendor_and_no_cx16_xsave_popcnt_or_rdtscp() {
        let mut c = epyc();
        qemu64_profile(&mut c, true);
        let l0 = get(&c, 0).unwrap();
        assert_eq!((l0.eax, [l0.ebx, l0.edx, l0.ecx]), (0xd, INTEL));
        let l1 = get(&c, 1).unwrap();
        assert_eq!(l1.ecx & (1 << 13), 0, "cx16");
        assert_eq!(l1.ecx & (1 << 26), 0, "xsave");
        assert_eq!(l1.ecx & (1 << 23), 0, "popcnt");
        assert_eq!(
            l1.ecx,
            ECX1_SSE3 | ECX1_X2APIC | ECX1_TSC_DEADLINE | ECX1_HYPERVISOR
        );
        assert_eq!(l1.edx, 0x178b_fbff, "basic features stay");
        assert_eq!(get(&c, 7).unwrap().ebx, 0);
        assert_eq!(get(&c, 0xd).unwrap().eax, 0);
        let l81 = get(&c, 0x8000_0001).unwrap();
        assert_eq!(l81.edx & (1 << 27), 0, "rdtscp");
        assert_eq!(l81.edx, EDX81_SYSCALL | EDX81_NX | EDX81_LM);
        assert_eq!(l81.ecx, ECX81_LAHF_LM);
    }

    #[test]
    fn leaves_beyond_the_profile_go_and_kvm_leaves_stay() {
        let mut c = epyc();
        qemu64_profile(&mut c, false);
        assert!(get(&c, 0x10).is_none());
        assert!(get(&c, 0x8000_001f).is_none());
        assert_eq!(get(&c, 0x8000_0000).unwrap().eax, HIGHEST_EXTENDED);
        assert_eq!(get(&c, 0x8000_0008).unwrap().eax, 0x3030);
        assert_eq!(get(&c, 0x4000_0001).unwrap().eax, 0x0100_7afb);
        assert_eq!(get(&c, 1).unwrap().ecx & ECX1_TSC_DEADLINE, 0);
    }
}
