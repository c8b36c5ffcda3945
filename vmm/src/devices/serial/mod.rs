//! COM1: the 8250 UART at 0x3f8 (vm-superio) and where its bytes go and come from (`--serial`).
//!
//! | file | what it holds |
//! |------|---------------|
//! | `mod.rs` | the UART on the port-I/O bus, its counters, the wake-up when its receive FIFO empties |
//! | `backend.rs` | `--serial stdio \| file:PATH \| socket:PATH \| null`: parsing, and opening each before the VM runs |
//! | `input.rs` | the thread that moves the host's input into the receive FIFO as fast as the guest reads it |
//!
//! Output is written as the guest writes each byte: the vCPU never waits for a reader that is
//! not there (a socket without a client, or one that reads too slowly, loses the byte, and the
//! loss is counted). Input is never lost: the input thread holds what the FIFO cannot take
//! yet and waits for the guest to empty it. The interrupt line is an irqfd when the guest
//! needs one (Linux transmits from its interrupt handler and reads its input there), else
//! nowhere.

mod backend;
mod input;

pub use backend::{SerialBackend, SerialSpec};

use crate::bus::{Action, BusDevice};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use vm_superio::serial::SerialEvents;
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

/// What COM1 moved, for `--stats`, `--json` and the control socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SerialStats {
    /// Bytes the guest wrote that the backend took.
    pub out_bytes: u64,
    /// Bytes the guest wrote that the backend could not take (no client, a full socket, a
    /// failing file), counted and dropped.
    pub out_lost: u64,
    /// Bytes of input the guest's receive FIFO took.
    pub in_bytes: u64,
    /// Clients that connected to a `socket:` backend.
    pub connects: u64,
}

/// The counters behind [`SerialStats`], shared by the UART and the input thread.
#[derive(Debug, Default)]
pub struct SerialCounters {
    out_bytes: AtomicU64,
    out_lost: AtomicU64,
    in_bytes: AtomicU64,
    connects: AtomicU64,
}

impl SerialCounters {
    /// A snapshot.
    pub fn stats(&self) -> SerialStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SerialStats {
            out_bytes: get(&self.out_bytes),
            out_lost: get(&self.out_lost),
            in_bytes: get(&self.in_bytes),
            connects: get(&self.connects),
        }
    }
}

/// Set when the guest empties the receive FIFO; the input thread waits on it.
#[derive(Default)]
struct Room {
    emptied: Mutex<bool>,
    cv: Condvar,
}

impl Room {
    fn notify(&self) {
        *self.emptied.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Waits until the FIFO emptied since the last wait, or `timeout` passed; true if it
    /// emptied.
    fn wait(&self, timeout: Duration) -> bool {
        let g = self.emptied.lock().unwrap_or_else(|e| e.into_inner());
        let (mut g, _) = self
            .cv
            .wait_timeout_while(g, timeout, |e| !*e)
            .unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *g)
    }
}

/// The UART's events: counting, and waking the input thread.
struct Events {
    counters: Arc<SerialCounters>,
    room: Arc<Room>,
}

impl SerialEvents for Events {
    fn buffer_read(&self) {}
    fn out_byte(&self) {
        self.counters.out_bytes.fetch_add(1, Ordering::Relaxed);
    }
    fn tx_lost_byte(&self) {
        let n = self.counters.out_lost.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            log::warn!(
                "COM1: the guest's output is being dropped (no client, or it cannot keep up); counted in out_lost"
            );
        }
    }
    fn in_buffer_empty(&self) {
        self.room.notify();
    }
}

/// COM1 on the port-I/O bus.
pub struct SerialPort {
    uart: Mutex<Serial<IrqLine, Events, Box<dyn Write + Send>>>,
    counters: Arc<SerialCounters>,
    room: Arc<Room>,
}

impl SerialPort {
    /// A UART that writes what the guest sends to `out` and raises `irq`.
    pub fn new(out: Box<dyn Write + Send>, irq: IrqLine) -> Self {
        let counters = Arc::new(SerialCounters::default());
        let room = Arc::new(Room::default());
        let events = Events {
            counters: counters.clone(),
            room: room.clone(),
        };
        SerialPort {
            uart: Mutex::new(Serial::with_events(irq, events, out)),
            counters,
            room,
        }
    }

    /// The port's counters.
    pub fn counters(&self) -> Arc<SerialCounters> {
        self.counters.clone()
    }

    fn uart(&self) -> std::sync::MutexGuard<'_, Serial<IrqLine, Events, Box<dyn Write + Send>>> {
        self.uart.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts as much of `input` in the receive FIFO as it has room for (raising the receive
    /// interrupt if the guest enabled it); how many bytes it took (0 when full, or while the
    /// guest has the UART in loopback mode).
    pub fn enqueue(&self, input: &[u8]) -> usize {
        let n = self.uart().enqueue_raw_bytes(input).unwrap_or(0);
        self.counters
            .in_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Waits until the guest empties the receive FIFO, or `timeout` passes; true if it did.
    pub fn wait_for_room(&self, timeout: Duration) -> bool {
        self.room.wait(timeout)
    }
}

impl BusDevice for SerialPort {
    fn read(&self, _vcpu: u32, offset: u64, data: &mut [u8]) {
        if let [b] = data {
            *b = self.uart().read(offset as u8);
        }
    }

    fn write(&self, _vcpu: u32, offset: u64, data: &[u8]) -> Action {
        if let [b] = data {
            // A byte the backend cannot take is the host's problem, not the guest's: it is
            // counted (`out_lost`) and dropped.
            let _ = self.uart().write(offset as u8, *b);
        }
        Action::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_sink::Sink;

    const LSR: u64 = 5;
    const IER: u64 = 1;

    #[test]
    fn bytes_written_to_thr_reach_the_sink_and_lsr_says_empty() {
        let sink = Sink::default();
        let port = SerialPort::new(Box::new(sink.clone()), IrqLine(None));
        for b in b"hi\n" {
            port.write(0, 0, &[*b]);
        }
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"hi\n");
        let mut lsr = [0u8];
        port.read(0, LSR, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "transmitter holding register empty");
        assert_eq!(port.counters().stats().out_bytes, 3);
    }

    #[test]
    fn transmit_interrupt_reaches_the_irqfd() {
        let fd = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let port = SerialPort::new(
            Box::new(std::io::sink()),
            IrqLine(Some(fd.try_clone().unwrap())),
        );
        port.write(0, IER, &[0x02]); // transmitter empty
        port.write(0, 0, b"x");
        assert!(fd.read().unwrap() >= 1);
    }

    /// A writer that refuses everything, as a socket without a client does.
    struct Refusing;
    impl Write for Refusing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::NotConnected.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_the_backend_refuses_is_counted_as_lost() {
        let port = SerialPort::new(Box::new(Refusing), IrqLine(None));
        for b in b"lost" {
            port.write(0, 0, &[*b]);
        }
        let s = port.counters().stats();
        assert_eq!((s.out_bytes, s.out_lost), (0, 4));
    }

    #[test]
    fn input_fills_the_fifo_raises_the_interrupt_and_waits_for_room() {
        let fd = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let port = SerialPort::new(
            Box::new(std::io::sink()),
            IrqLine(Some(fd.try_clone().unwrap())),
        );
        port.write(0, IER, &[0x01]); // received data available
        let input: Vec<u8> = (0..100).collect();
        let first = port.enqueue(&input);
        assert_eq!(first, 64, "the FIFO holds 64 bytes");
        assert!(fd.read().unwrap() >= 1, "receive interrupt");
        assert_eq!(port.enqueue(&input[first..]), 0, "full");
        // The guest reads every byte in order; the FIFO then has room again, and the waiter
        // is woken at once rather than after its timeout.
        for want in 0..first as u8 {
            let mut lsr = [0u8];
            port.read(0, LSR, &mut lsr);
            assert_ne!(lsr[0] & 0x01, 0, "data ready");
            let mut b = [0u8];
            port.read(0, 0, &mut b);
            assert_eq!(b[0], want);
        }
        assert!(
            port.wait_for_room(Duration::from_secs(30)),
            "the FIFO emptied"
        );
        assert!(!port.wait_for_room(Duration::ZERO), "once");
        assert_eq!(port.enqueue(&input[first..]), 36);
        assert_eq!(port.counters().stats().in_bytes, 100);
    }
}
