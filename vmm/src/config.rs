//! What a `perimeter run` is asked to boot, checked before anything is created.

use crate::devices::serial::SerialSpec;
use crate::error::Error;
use device_model::console::backend::{BackendKind, FaultSpec, PortSpec, check_ports, path_key};
use guest_abi::{MAX_CMDLINE, MAX_VCPUS, layout};
use std::path::PathBuf;
use std::time::Duration;

/// Smallest RAM we accept before even looking at the image.
pub const MIN_MEMORY_MIB: u64 = 4;
/// Largest RAM: it must end below the MMIO hole.
pub const MAX_MEMORY_MIB: u64 = layout::MMIO_HOLE_START >> 20;
/// Heap the default guest needs above its image (the loader checks this for every image).
pub const MIN_HEAP_BYTES: u64 = 1 << 20;

/// Which image to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// The guest built from `guest-driver/` and embedded in the binary.
    Embedded,
    /// A file: a 64-bit ELF image of ours, or a Linux bzImage or vmlinux (told apart by
    /// their contents).
    File(PathBuf),
}

/// A validated VM configuration.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The image.
    pub kernel: Kernel,
    /// Number of vCPUs (1..=8).
    pub vcpus: u32,
    /// RAM in MiB.
    pub memory_mib: u64,
    /// Guest command line (for Linux, after perimeter's own part).
    pub cmdline: String,
    /// Initial RAM disk for a Linux kernel.
    pub initrd: Option<PathBuf>,
    /// Enter a vmlinux through its PVH entry when it has one (else at its 64-bit entry with
    /// a zero page, as a bzImage).
    pub pvh: bool,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// The console's ports, port 0 first (default: one console port on stdio).
    pub ports: Vec<PortSpec>,
    /// Host-side buffer faults for the console's STREAMS pool.
    pub faults: Vec<FaultSpec>,
    /// Where to listen for control commands ([`crate::control`]).
    pub control: Option<PathBuf>,
    /// COM1's backend.
    pub serial: SerialSpec,
    /// Where to append the statistics periodically ([`crate::metrics`]).
    pub metrics: Option<PathBuf>,
    /// How often (`--metrics-every`).
    pub metrics_every: Duration,
    /// Confine the whole process with [`crate::seccomp`] once the VM is set up. For a
    /// process that exists to run this VM (`perimeter run`): afterwards it can open no file
    /// and start no program.
    pub seccomp: bool,
    /// How long the console polls its transmit rings after a notification (zero: not).
    pub tx_poll: Duration,
    /// The vCPU the console's interrupt goes to (our guest; Linux takes it on its pin).
    pub console_irq_vcpu: u32,
    /// Give each vCPU thread a host CPU of its own ([`crate::affinity`]).
    pub pin_vcpus: bool,
}

impl VmConfig {
    /// Checks every field; the error says which one is wrong and why.
    pub fn validate(&self) -> Result<(), Error> {
        if self.vcpus == 0 || self.vcpus as usize > MAX_VCPUS {
            return Err(Error::BadInput(format!(
                "--vcpus {} is out of range: 1 to {MAX_VCPUS}",
                self.vcpus
            )));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(Error::BadInput(format!(
                "--memory {} MiB is out of range: {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB",
                self.memory_mib
            )));
        }
        if self.cmdline.len() > MAX_CMDLINE {
            return Err(Error::BadInput(format!(
                "--cmdline is {} bytes long; at most {MAX_CMDLINE}",
                self.cmdline.len()
            )));
        }
        if self.cmdline.contains('\0') {
            return Err(Error::BadInput("--cmdline contains a NUL byte".into()));
        }
        if self.console_irq_vcpu >= self.vcpus {
            return Err(Error::BadInput(format!(
                "--console-irq-vcpu {}: the VM has {} vCPU(s), numbered from 0",
                self.console_irq_vcpu, self.vcpus
            )));
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::BadInput(
                "--timeout must be more than 0 seconds".into(),
            ));
        }
        check_ports(&self.ports).map_err(|e| Error::BadInput(format!("--port: {e}")))?;
        // The paths perimeter creates, each taken once.
        let mut taken: Vec<(String, &std::path::Path)> = self
            .ports
            .iter()
            .filter_map(|p| match &p.backend {
                BackendKind::Socket(s) => Some((format!("port {:?}", p.name), s.as_path())),
                BackendKind::File { out, .. } => {
                    Some((format!("port {:?}", p.name), out.as_path()))
                }
                _ => None,
            })
            .collect();
        if !(Duration::from_millis(10)..=Duration::from_secs(86_400)).contains(&self.metrics_every)
        {
            return Err(Error::BadInput(format!(
                "--metrics-every {:?}: from 0.01 seconds to a day",
                self.metrics_every
            )));
        }
        for (flag, path) in [
            ("--control", self.control.as_deref()),
            ("--serial", self.serial.path()),
            ("--metrics", self.metrics.as_deref()),
        ] {
            let Some(path) = path else { continue };
            if let Some((user, _)) = taken.iter().find(|(_, t)| path_key(t) == path_key(path)) {
                return Err(Error::BadInput(format!(
                    "{flag} {}: {user} uses that path",
                    path.display()
                )));
            }
            taken.push((flag.to_string(), path));
        }
        Ok(())
    }

    /// RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib << 20
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: Kernel::Embedded,
            vcpus: 1,
            memory_mib: 64,
            cmdline: String::new(),
            initrd: None,
            pvh: true,
            timeout: None,
            ports: PortSpec::defaults(),
            faults: Vec::new(),
            control: None,
            serial: SerialSpec::Stdio,
            metrics: None,
            metrics_every: Duration::from_secs(1),
            seccomp: false,
            tx_poll: device_model::console::DEFAULT_TX_POLL,
            console_irq_vcpu: 0,
            pin_vcpus: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(c: VmConfig, needle: &str) {
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains(needle), "{e}");
        assert_eq!(e.status(), crate::error::STATUS_BAD_INPUT);
    }

    #[test]
    fn default_is_valid() {
        VmConfig::default().validate().unwrap();
    }

    #[test]
    fn rejects_each_bad_field() {
        bad(
            VmConfig {
                vcpus: 0,
                ..Default::default()
            },
            "--vcpus 0",
        );
        bad(
            VmConfig {
                vcpus: 9,
                ..Default::default()
            },
            "--vcpus 9",
        );
        bad(
            VmConfig {
                memory_mib: 1,
                ..Default::default()
            },
            "--memory 1 MiB",
        );
        bad(
            VmConfig {
                memory_mib: 4096,
                ..Default::default()
            },
            "--memory 4096 MiB",
        );
        bad(
            VmConfig {
                cmdline: "x".repeat(5000),
                ..Default::default()
            },
            "5000 bytes",
        );
        bad(
            VmConfig {
                cmdline: "a\0b".into(),
                ..Default::default()
            },
            "NUL",
        );
        bad(
            VmConfig {
                timeout: Some(Duration::ZERO),
                ..Default::default()
            },
            "--timeout",
        );
        bad(
            VmConfig {
                vcpus: 2,
                console_irq_vcpu: 2,
                ..Default::default()
            },
            "--console-irq-vcpu 2: the VM has 2 vCPU(s)",
        );
        bad(
            VmConfig {
                ports: Vec::new(),
                ..Default::default()
            },
            "--port: give 1 to 31 ports",
        );
    }

    #[test]
    fn a_path_perimeter_creates_is_taken_once() {
        let port = PortSpec::parse("name=p,backend=socket:/tmp/same").unwrap();
        let serial = SerialSpec::Socket("/tmp/same".into());
        bad(
            VmConfig {
                ports: vec![port.clone()],
                serial: serial.clone(),
                ..Default::default()
            },
            "--serial /tmp/same: port \"p\" uses that path",
        );
        bad(
            VmConfig {
                control: Some("/tmp/same".into()),
                serial: SerialSpec::File("/tmp/same".into()),
                ..Default::default()
            },
            "--serial /tmp/same: --control uses that path",
        );
        bad(
            VmConfig {
                ports: vec![port],
                control: Some("/tmp/same".into()),
                ..Default::default()
            },
            "--control /tmp/same: port \"p\" uses that path",
        );
        VmConfig {
            control: Some("/tmp/ctl".into()),
            serial,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }
}
