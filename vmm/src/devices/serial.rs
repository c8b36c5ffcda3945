//! The 8250 UART at 0x3f8 (vm-superio), for guests that use port I/O. Output goes to the host's
//! standard output. Its interrupt line is an irqfd when the guest needs one (Linux transmits
//! from its interrupt handler once user space writes to the console), else nowhere.

use crate::bus::{Action, BusDevice};
use std::io::Write;
use std::sync::Mutex;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

/// COM1's I/O base.
pub const COM1_BASE: u64 = 0x3f8;
/// Number of COM1 registers.
pub const COM1_SIZE: u64 = 8;

/// The UART's interrupt line: an irqfd, or nowhere.
pub struct IrqLine(pub Option<EventFd>);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.as_ref().map_or(Ok(()), |fd| fd.write(1))
    }
}

/// COM1 on the port-I/O bus.
pub struct SerialPort {
    uart: Mutex<Serial<IrqLine, vm_superio::serial::NoEvents, Box<dyn Write + Send>>>,
}

impl SerialPort {
    /// A UART that writes what the guest sends to `out` and raises `irq`.
    pub fn new(out: Box<dyn Write + Send>, irq: IrqLine) -> Self {
        SerialPort {
            uart: Mutex::new(Serial::new(irq, out)),
        }
    }
}

impl BusDevice for SerialPort {
    fn read(&self, _vcpu: u32, offset: u64, data: &mut [u8]) {
        if let [b] = data {
            *b = self
                .uart
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read(offset as u8);
        }
    }

    fn write(&self, _vcpu: u32, offset: u64, data: &[u8]) -> Action {
        if let [b] = data {
            // A failing host stdout is not the guest's problem: the byte is dropped.
            let _ = self
                .uart
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(offset as u8, *b);
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_sink::Sink;

    #[test]
    fn bytes_written_to_thr_reach_the_sink_and_lsr_says_empty() {
        let sink = Sink::default();
        let port = SerialPort::new(Box::new(sink.clone()), IrqLine(None));
        for b in b"hi\n" {
            port.write(0, 0, &[*b]);
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"hi\n");
        let mut lsr = [0u8];
        port.read(0, 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter holding register empty");
    }

    #[test]
    fn transmit_interrupt_reaches_the_irqfd() {
        let fd = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let port = SerialPort::new(
            Box::new(std::io::sink()),
            IrqLine(Some(fd.try_clone().unwrap())),
        );
        port.write(0, 1, &[0x02]); // IER: transmitter empty
        port.write(0, 0, b"x");
        assert!(fd.read().unwrap() >= 1);
    }
}
