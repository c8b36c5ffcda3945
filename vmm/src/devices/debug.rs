//! The debug page (`guest_abi::debug`): exit, console and fault registers for guests that run at
//! ring 3 and so cannot do port I/O, and the relay behind the test-interrupt register.

use super::stages::StageRegisters;
use crate::bus::{Action, BusDevice};
use crate::error::Outcome;
use crate::results::{GuestResult, LineSplitter};
use event_manager::{EventOps, EventSubscriber, Events};
use guest_abi::debug::{self, FAULT_FRAME_SIZE, FaultFrame};
use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// The debug page on the MMIO bus.
pub struct DebugPage {
    mem: GuestMemoryMmap,
    outcome: Sender<Outcome>,
    out: Mutex<Box<dyn Write + Send>>,
    err: Mutex<Box<dyn Write + Send>>,
    /// Standard output split into text and `@result` lines.
    split: Mutex<LineSplitter>,
    results: Arc<Mutex<Vec<GuestResult>>>,
    /// The round-trip stamping registers.
    pub stages: StageRegisters,
}

fn word(data: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    let n = data.len().min(8);
    w[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(w)
}

impl DebugPage {
    /// A debug page that reads console buffers from `mem`, prints to `out`/`err`, collects
    /// `@result` lines of standard output into `results` and reports the end of the run on
    /// `outcome`.
    pub fn new(
        mem: GuestMemoryMmap,
        outcome: Sender<Outcome>,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
        results: Arc<Mutex<Vec<GuestResult>>>,
    ) -> Self {
        DebugPage {
            mem,
            outcome,
            out: Mutex::new(out),
            err: Mutex::new(err),
            split: Mutex::new(LineSplitter::default()),
            results,
            stages: StageRegisters::default(),
        }
    }

    fn print_out(&self, bytes: &[u8]) {
        let mut split = self.split.lock().unwrap_or_else(|e| e.into_inner());
        split.feed(bytes, &mut |b| self.print(&self.out, b), &mut |r| {
            self.results
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(GuestResult::parse(r))
        });
    }

    fn print(&self, to: &Mutex<Box<dyn Write + Send>>, bytes: &[u8]) {
        let mut w = to.lock().unwrap_or_else(|e| e.into_inner());
        // A closed host stdout must not stop the guest.
        let _ = w.write_all(bytes).and_then(|()| w.flush());
    }

    fn console(&self, to: &Mutex<Box<dyn Write + Send>>, value: u64) {
        let (addr, len) = debug::console_buffer(value);
        let mut buf = vec![0u8; len];
        match self.mem.read_slice(&mut buf, GuestAddress(addr)) {
            Ok(()) if std::ptr::eq(to, &self.out) => self.print_out(&buf),
            Ok(()) => self.print(to, &buf),
            Err(_) => self.print(
                &self.err,
                format!("perimeter: guest console buffer {addr:#x}+{len} is outside RAM\n")
                    .as_bytes(),
            ),
        }
    }

    fn fault(&self, vcpu: u32, addr: u64) -> String {
        let mut b = [0u8; FAULT_FRAME_SIZE];
        if self.mem.read_slice(&mut b, GuestAddress(addr)).is_err() {
            return format!(
                "unexpected exception on vCPU {vcpu} (fault frame {addr:#x} is outside RAM)"
            );
        }
        let f = FaultFrame::from_bytes(&b);
        let mut s = format!(
            "unexpected exception {} (vector {}, error {:#x}) on vCPU {vcpu} at rip {:#x} in ring {}, rsp {:#x}",
            f.name(),
            f.vector,
            f.error,
            f.rip,
            f.cs & 3,
            f.rsp
        );
        if f.vector == 14 {
            s += &format!(", faulting address {:#x}", f.cr2);
        }
        s
    }
}

impl BusDevice for DebugPage {
    fn read(&self, _vcpu: u32, _offset: u64, _data: &mut [u8]) {}

    fn write(&self, vcpu: u32, offset: u64, data: &[u8]) -> Action {
        let value = word(data);
        match (offset, data.len()) {
            (debug::EXIT, 4) => {
                let _ = self.outcome.send(Outcome::Exited(value as u32));
                Action::Stop
            }
            (debug::CONSOLE_BYTE, 1) => {
                self.print_out(data);
                Action::Continue
            }
            (debug::CONSOLE_OUT, 8) => {
                self.console(&self.out, value);
                Action::Continue
            }
            (debug::CONSOLE_ERR, 8) => {
                self.console(&self.err, value);
                Action::Continue
            }
            (debug::FAULT, 8) => {
                let _ = self.outcome.send(Outcome::Crashed(self.fault(vcpu, value)));
                Action::Stop
            }
            (debug::STAGES_BEGIN, 4) => {
                self.stages.begin(value as u32);
                Action::Continue
            }
            (debug::TSC_SYNC, 8) => {
                self.stages.sync(&self.mem, value);
                Action::Continue
            }
            (debug::STAGES_TRIPS, 8) => {
                self.stages.trips(&self.mem, value);
                Action::Continue
            }
            (debug::STAGES_END, 4) => {
                if let Some(r) = self.stages.end() {
                    self.results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(r);
                }
                Action::Continue
            }
            // IRQ_TEST writes for an existing CPU never get here (an ioeventfd takes them);
            // other writes, and writes of the wrong width, are ignored.
            _ => Action::Continue,
        }
    }
}

/// Relays IRQ_TEST writes (ioeventfd, datamatch = CPU index) to per-CPU irqfds routed as MSI.
pub struct IrqTestRelay {
    /// (ioeventfd, irqfd) for each CPU, by index.
    pub pairs: Vec<(EventFd, EventFd)>,
}

impl EventSubscriber for IrqTestRelay {
    fn process(&self, events: Events, _ops: &mut EventOps) {
        if let Some((kick, irq)) = self.pairs.get(events.data() as usize)
            && kick.read().is_ok()
        {
            let _ = irq.write(1);
        }
    }

    fn init(&self, ops: &mut EventOps) {
        for (i, (kick, _)) in self.pairs.iter().enumerate() {
            ops.add(Events::with_data(kick, i as u32, EventSet::IN))
                .expect("registering an eventfd with a fresh epoll cannot fail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::test_sink::Sink;
    use std::sync::mpsc;

    fn page() -> (DebugPage, mpsc::Receiver<Outcome>, Sink, Sink) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let (tx, rx) = mpsc::channel();
        let (out, err) = (Sink::default(), Sink::default());
        (
            DebugPage::new(
                mem,
                tx,
                Box::new(out.clone()),
                Box::new(err.clone()),
                Arc::default(),
            ),
            rx,
            out,
            err,
        )
    }

    #[test]
    fn console_reads_the_buffer_from_guest_memory() {
        let (p, _rx, out, err) = page();
        p.mem.write_slice(b"hello\n", GuestAddress(0x100)).unwrap();
        let w = debug::console_word(0x100, 6).unwrap();
        assert_eq!(
            p.write(0, debug::CONSOLE_OUT, &w.to_le_bytes()),
            Action::Continue
        );
        p.write(0, debug::CONSOLE_BYTE, b"!");
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello\n!");
        let outside = debug::console_word(0xfff0, 100).unwrap();
        p.write(0, debug::CONSOLE_ERR, &outside.to_le_bytes());
        assert!(String::from_utf8_lossy(&err.0.lock().unwrap()).contains("outside RAM"));
    }

    #[test]
    fn result_lines_are_collected_not_printed() {
        let (p, _rx, out, _) = page();
        let line = b"@result workload=tx bytes=3\nafter\n";
        p.mem.write_slice(line, GuestAddress(0x100)).unwrap();
        let w = debug::console_word(0x100, line.len()).unwrap();
        p.write(0, debug::CONSOLE_OUT, &w.to_le_bytes());
        assert_eq!(out.0.lock().unwrap().as_slice(), b"after\n");
        let r = p.results.lock().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].get("bytes"), Some("3"));
    }

    #[test]
    fn exit_and_fault_end_the_run() {
        let (p, rx, _, _) = page();
        assert_eq!(p.write(1, debug::EXIT, &7u32.to_le_bytes()), Action::Stop);
        assert_eq!(rx.try_recv().unwrap(), Outcome::Exited(7));
        let frame: [u64; 8] = [0xdead, 14, 4, 0x10_1234, 0x23, 0x202, 0x8000, 0x1b];
        let bytes: Vec<u8> = frame.iter().flat_map(|w| w.to_le_bytes()).collect();
        p.mem.write_slice(&bytes, GuestAddress(0x200)).unwrap();
        assert_eq!(
            p.write(1, debug::FAULT, &0x200u64.to_le_bytes()),
            Action::Stop
        );
        let Outcome::Crashed(why) = rx.try_recv().unwrap() else {
            panic!()
        };
        assert!(
            why.contains("#PF") && why.contains("0xdead") && why.contains("ring 3"),
            "{why}"
        );
        assert!(why.contains("vCPU 1"), "{why}");
        assert_eq!(
            p.write(0, debug::FAULT, &u64::MAX.to_le_bytes()),
            Action::Stop
        );
        let Outcome::Crashed(why) = rx.try_recv().unwrap() else {
            panic!()
        };
        assert!(why.contains("outside RAM"), "{why}");
    }

    #[test]
    fn wrong_widths_are_ignored() {
        let (p, rx, out, _) = page();
        assert_eq!(p.write(0, debug::EXIT, &[1]), Action::Continue);
        assert_eq!(
            p.write(0, debug::CONSOLE_OUT, &[1, 2, 3, 4]),
            Action::Continue
        );
        assert!(rx.try_recv().is_err());
        assert!(out.0.lock().unwrap().is_empty());
    }
}
