//! One thread per vCPU: `KVM_RUN` in a loop, dispatching exits to the buses.
//!
//! A vCPU thread ends when its guest ends the run (exit or fault register: the device reports
//! the outcome), when it crashes (reported here), or when the VM asks every vCPU to stop: the
//! stop flag is set and the thread is kicked out of `KVM_RUN` with [`KICK_SIGNAL`].

use crate::bus::{Action, Bus};
use crate::error::Outcome;
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

/// The real-time signal used to kick vCPU threads out of `KVM_RUN` (SIGRTMIN + 0).
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler; its only job is to make `KVM_RUN` return `EINTR`.
pub fn install_kick_handler() -> std::io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// Port 0xf4: a 32-bit write ends the run with that exit code (for port-I/O guests).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// A vCPU and everything its exits can reach.
pub struct Vcpu {
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Its index (= its x2APIC ID).
    pub index: u32,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Port-I/O devices.
    pub pio: Arc<Bus>,
    /// Where crashes and port exits are reported.
    pub outcome: Sender<Outcome>,
    /// Set when the VM is shutting down.
    pub stop: Arc<AtomicBool>,
}

enum Next {
    Continue,
    Stop,
    Crash(String),
    InternalError,
}

impl Vcpu {
    /// Runs until the guest or the VM stops this vCPU.
    pub fn run(mut self) {
        while !self.stop.load(Ordering::Acquire) {
            let next = match self.fd.run() {
                Ok(exit) => handle(exit, self.index, &self.mmio, &self.pio, &self.outcome),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Next::Continue,
                Err(e) => Next::Crash(format!("KVM_RUN failed on vCPU {}: {e}", self.index)),
            };
            match next {
                Next::Continue => {}
                Next::Stop => return,
                Next::Crash(why) => return self.crash(why),
                Next::InternalError => {
                    let why = self.internal_error();
                    return self.crash(why);
                }
            }
        }
    }

    fn crash(&self, why: String) {
        let _ = self.outcome.send(Outcome::Crashed(why));
    }
}

/// Decides what one exit means; devices do the work.
fn handle(exit: VcpuExit<'_>, cpu: u32, mmio: &Bus, pio: &Bus, outcome: &Sender<Outcome>) -> Next {
    match exit {
        VcpuExit::MmioWrite(addr, data) => match mmio.write(cpu, addr, data) {
            Some(Action::Stop) => Next::Stop,
            _ => Next::Continue,
        },
        VcpuExit::MmioRead(addr, data) => {
            mmio.read(cpu, addr, data);
            Next::Continue
        }
        VcpuExit::IoOut(DEBUG_EXIT_PORT, data) if data.len() == 4 => {
            let code = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            let _ = outcome.send(Outcome::Exited(code));
            Next::Stop
        }
        VcpuExit::IoOut(port, data) => match pio.write(cpu, port.into(), data) {
            Some(Action::Stop) => Next::Stop,
            _ => Next::Continue,
        },
        VcpuExit::IoIn(port, data) => {
            if !pio.read(cpu, port.into(), data) {
                data.fill(0xff); // an empty ISA bus reads as all ones
            }
            Next::Continue
        }
        VcpuExit::Shutdown => Next::Crash(format!("triple fault on vCPU {cpu}")),
        VcpuExit::InternalError => Next::InternalError,
        VcpuExit::FailEntry(reason, hw_cpu) => Next::Crash(format!(
            "KVM could not enter vCPU {cpu} (hardware reason {reason:#x} on host CPU {hw_cpu})"
        )),
        VcpuExit::SystemEvent(kind, _) => Next::Crash(format!(
            "vCPU {cpu} requested a system event ({kind}: reset or shutdown)"
        )),
        VcpuExit::Hlt => Next::Crash(format!("vCPU {cpu} halted with no irqchip to wake it")),
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => Next::Continue,
        other => Next::Crash(format!("unexpected KVM exit on vCPU {cpu}: {other:?}")),
    }
}

impl Vcpu {
    /// Describes a `KVM_EXIT_INTERNAL_ERROR`: on PVM hosts this is usually an instruction the
    /// emulator cannot run at ring 0 (SSE, `rdtscp`), whose bytes KVM reports.
    fn internal_error(&mut self) -> String {
        let cpu = self.index;
        let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
        let run = self.fd.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active field.
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let n = (internal.ndata as usize).min(internal.data.len());
        let what = match internal.suberror {
            1 => "emulation failure (an instruction the emulator cannot run at ring 0?)",
            2 => "simultaneous exceptions",
            3 => "delivery event failure",
            _ => "internal error",
        };
        let data: Vec<String> = internal.data[..n]
            .iter()
            .map(|d| format!("{d:#x}"))
            .collect();
        format!(
            "KVM {what} on vCPU {cpu} at rip {rip:#x} (suberror {}, data [{}])",
            internal.suberror,
            data.join(", ")
        )
    }
}
