//! perimeter's KVM side: builds a VM, boots a guest image in long mode on 1–8 vCPUs, serves its
//! MMIO and port I/O, and reports how it ended. The `perimeter` binary is a thin CLI over [`vm`].
//!
//! | module | what |
//! |---|---|
//! | [`bench`] | `perimeter bench`: the benchmark matrix, optionally beside QEMU |
//! | [`config`] | what to boot, validated |
//! | [`control`] | the control socket (JSON lines: ports, stats, add, remove, shutdown) and `perimeter ctl`, its client |
//! | [`loader`] | the embedded guest and ELF loading (linux-loader) |
//! | [`boot`] | long-mode entry state: GDT, page tables, registers, boot parameters |
//! | [`linux`] | booting Linux: zero page, MP table, CPUID profile, reset and panic |
//! | [`vm`] | building, running and tearing down a VM; the event loop |
//! | `guest_kind` | what differs between the project's guests and Linux: loading, entry, legacy devices, interrupts, CPUID |
//! | [`memory`] | guest RAM: mapped, backed by huge pages where the host allows |
//! | [`metrics`] | `--metrics FILE`: the statistics appended as a JSON line every `--metrics-every` |
//! | [`vcpu`] | vCPU threads and exit dispatch |
//! | [`affinity`] | `--pin-vcpus`: a host CPU for each vCPU thread, the rest for the others |
//! | [`bus`] | MMIO and port-I/O address dispatch |
//! | [`irq`] | GSI routing: irqfds routed as MSI |
//! | [`devices`] | the debug page (with its round-trip stage registers) and COM1, the 8250 UART with its `--serial` backends (`devices/serial/`) |
//! | [`results`] | the guest's `@result` lines: collected, checked, shown |
//! | [`error`] | errors, outcomes and exit statuses |
//! | [`signals`] | SIGINT, SIGTERM, SIGHUP: a clean stop with the statistics |
//! | [`seccomp`] | the system-call filter of a running VM |

pub mod affinity;
pub mod bench;
pub mod boot;
pub mod bus;
pub mod config;
pub mod control;
pub mod devices;
pub mod error;
mod guest_kind;
pub mod irq;
pub mod linux;
pub mod loader;
pub mod memory;
pub mod metrics;
pub mod results;
pub mod seccomp;
pub mod signals;
pub mod vcpu;
pub mod vm;

pub use config::{Kernel, VmConfig};
pub use error::{Error, Outcome};
