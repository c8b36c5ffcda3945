//! What differs between booting the project's own guests and booting Linux, in one place:
//! how the image is loaded and entered, the legacy devices Linux expects (a PIT to calibrate
//! against, the i8042 reset port, CMOS, an interrupt for COM1), how the console interrupts
//! (an MSI to a chosen vCPU, or an IOAPIC pin), the CPUID profile on PVM hosts, and whether
//! the [`BootParams`] block is written. [`crate::vm`] asks; it never tests the kind itself.

use crate::boot;
use crate::bus::Bus;
use crate::config::VmConfig;
use crate::devices::serial::{COM1_BASE, COM1_SIZE, IrqLine, SerialPort};
use crate::devices::virtio_mmio::{self, Irq};
use crate::error::{Error, Outcome};
use crate::irq::MsiRouter;
use crate::linux::{self, legacy};
use crate::loader;
use guest_abi::BootParams;
use kvm_bindings::{CpuId, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_regs, kvm_sregs};
use kvm_ioctls::{Cap, Kvm, VmFd};
use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use vm_memory::GuestMemoryMmap;

/// The transport slot of the virtio console (slot 0 holds a virtio-rng).
pub(crate) const CONSOLE_SLOT: u32 = 1;

/// The guest being booted, by how its vCPUs enter it.
#[derive(Clone, Copy)]
pub(crate) enum Entry {
    /// The project's guests: every vCPU at `entry`, rdi = boot parameters, rsi = CPU index.
    Perimeter(u64),
    /// Linux on one vCPU (64-bit boot protocol or PVH).
    Linux(linux::Entry),
}

impl Entry {
    /// Loads `image` (named `name`) into `mem` as whichever kind it is, after checking that
    /// `config` suits that kind.
    pub(crate) fn load(
        config: &VmConfig,
        mem: &GuestMemoryMmap,
        name: &str,
        image: &[u8],
        pvm: bool,
    ) -> Result<Entry, Error> {
        let mem_size = config.memory_bytes();
        let Some(format) = linux::detect(image) else {
            if config.initrd.is_some() {
                return Err(Error::BadInput(format!(
                    "--initrd is for Linux kernels, and {name} is not one"
                )));
            }
            return Ok(Entry::Perimeter(
                loader::load(mem, name, image, mem_size)?.entry,
            ));
        };
        if config.vcpus != 1 {
            return Err(Error::BadInput(format!(
                "--vcpus {}: perimeter boots Linux on one vCPU",
                config.vcpus
            )));
        }
        let initrd = match &config.initrd {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::BadInput(format!("cannot read initrd {}: {e}", path.display()))
            })?),
            None => None,
        };
        let setup = linux::Setup {
            image,
            format,
            initrd: initrd.as_deref(),
            cmdline: &config.cmdline,
            console_base: virtio_mmio::slot_base(CONSOLE_SLOT),
            pvm,
            pvh: config.pvh,
        };
        Ok(Entry::Linux(linux::load(mem, name, mem_size, &setup)?))
    }

    /// The in-kernel timers the guest needs besides the local APICs (after the irqchip):
    /// Linux calibrates against the PIT when kvmclock cannot tell it the TSC's rate.
    pub(crate) fn create_timers(&self, vm: &VmFd) -> Result<(), Error> {
        if let Entry::Linux(_) = self {
            let pit = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            vm.create_pit2(pit).map_err(Error::kvm("KVM_CREATE_PIT2"))?;
        }
        Ok(())
    }

    /// Puts COM1 on `pio`, writing to `out`, and returns it; for Linux also the ports it
    /// probes (the i8042's reset line, which ends the run through `outcome`, and CMOS), and
    /// COM1's interrupt.
    pub(crate) fn add_legacy_ports(
        &self,
        pio: &mut Bus,
        router: &MsiRouter,
        outcome: Sender<Outcome>,
        out: Box<dyn Write + Send>,
    ) -> Result<Arc<SerialPort>, Error> {
        let serial = match self {
            Entry::Perimeter(_) => SerialPort::new(out, IrqLine(None)),
            Entry::Linux(_) => {
                let panic = legacy::PanicNote::default();
                let reset = legacy::ResetPort::new(outcome, panic.clone());
                pio.insert(legacy::I8042_COMMAND, 1, Arc::new(reset))?;
                pio.insert(legacy::CMOS_BASE, 2, Arc::new(legacy::Cmos))?;
                let out = Box::new(legacy::PanicWatch::new(out, panic));
                SerialPort::new(out, IrqLine(Some(router.pin(linux::COM1_GSI)?)))
            }
        };
        let serial = Arc::new(serial);
        pio.insert(COM1_BASE, COM1_SIZE, serial.clone())?;
        Ok(serial)
    }

    /// How the console interrupts: an MSI to `--console-irq-vcpu`, or Linux's IOAPIC pin.
    pub(crate) fn console_irq(&self, config: &VmConfig) -> Irq {
        match self {
            Entry::Perimeter(_) => Irq::Msi {
                dest: config.console_irq_vcpu,
            },
            Entry::Linux(_) => Irq::Pin(linux::CONSOLE_GSI),
        }
    }

    /// Adjusts the supported CPUID for the guest: Linux on a PVM host gets a qemu64-like
    /// profile (it would use what PVM cannot run).
    pub(crate) fn adjust_cpuid(&self, kvm: &Kvm, cpuid: &mut CpuId, pvm: bool) {
        if let (Entry::Linux(_), true) = (self, pvm) {
            let deadline = kvm.check_extension(Cap::TscDeadlineTimer);
            linux::cpuid::qemu64_profile(cpuid, deadline);
        }
    }

    /// The registers vCPU `cpu` starts with, from KVM's defaults `sregs`.
    pub(crate) fn entry_state(&self, sregs: kvm_sregs, cpu: u32) -> (kvm_sregs, kvm_regs) {
        match *self {
            Entry::Perimeter(rip) => (boot::long_mode_sregs(sregs), boot::entry_regs(rip, cpu)),
            Entry::Linux(linux::Entry::ZeroPage(rip)) => (linux::sregs(sregs), linux::regs(rip)),
            Entry::Linux(linux::Entry::Pvh(rip)) => (linux::pvh_sregs(sregs), linux::pvh_regs(rip)),
        }
    }

    /// Writes `params` and the command line where the project's guests read them (Linux got
    /// its zero page or start info when it was loaded).
    pub(crate) fn write_boot_params(
        &self,
        mem: &GuestMemoryMmap,
        params: &BootParams,
        cmdline: &str,
    ) -> Result<(), Error> {
        match self {
            Entry::Perimeter(_) => boot::write_boot_params(mem, params, cmdline),
            Entry::Linux(_) => Ok(()),
        }
    }
}
