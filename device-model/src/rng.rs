//! virtio-rng (virtio 1.2 §5.4, device ID 4): one request queue whose device-writable buffers
//! the device fills with bytes from a host source.
//!
//! It is the smallest real virtio device, and perimeter attaches one to every VM so that the
//! transport's whole path (ioeventfd queue notification, descriptor chains, used ring, irqfd
//! routed as MSI, InterruptStatus/ACK) is exercised by every boot, before the console exists.

use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC};
use crate::virtio::{ActivateError, Activation, Signals, VirtioDevice};
use event_manager::{EventOps, EventSubscriber, Events};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// virtio device ID of an entropy source.
pub const RNG_DEVICE_ID: u32 = 4;
/// Size of the request queue.
pub const RNG_QUEUE_SIZE: u16 = 64;
/// The most bytes one request gets (larger buffers are filled only this far).
pub const RNG_MAX_REQUEST: u32 = 64 * 1024;

struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    signals: Arc<Signals>,
}

/// Counters of the device's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RngCounters {
    /// Requests completed.
    pub requests: u64,
    /// Bytes handed to the guest.
    pub bytes: u64,
    /// Requests with a bad buffer (outside memory, no writable descriptor), completed empty.
    pub bad_requests: u64,
    /// Times the ring itself was broken (avail index or a head out of range): the device stops
    /// and asks the driver for a reset.
    pub broken_rings: u64,
}

/// The entropy device.
pub struct Rng {
    source: Box<dyn Read + Send>,
    active: Option<Active>,
    counters: RngCounters,
}

impl Rng {
    /// A device that hands out bytes read from `source` (the VMM uses `/dev/urandom`).
    pub fn new(source: Box<dyn Read + Send>) -> Self {
        Rng {
            source,
            active: None,
            counters: RngCounters::default(),
        }
    }

    /// What it has done.
    pub fn counters(&self) -> RngCounters {
        self.counters
    }

    /// Stops serving a ring the guest broke and asks for a reset.
    fn broken_ring(&mut self) {
        self.counters.broken_rings += 1;
        if let Some(a) = self.active.take() {
            let _ = a.signals.request_reset();
        }
    }

    /// Serves every available request; interrupts the driver if the ring says so.
    ///
    /// Every pass of the inner loop either completes a request or stops: a guest that publishes
    /// an avail index more than a queue size ahead, or a head the device cannot read, gets
    /// DEVICE_NEEDS_RESET instead of a device that spins.
    pub fn process_queue(&mut self) {
        let mut served = false;
        loop {
            let Some(a) = self.active.as_mut() else {
                return;
            };
            // Disable notifications while draining, re-enable, and drain again if more came.
            let _ = a.queue.disable_notification(&a.mem);
            loop {
                let pending = match a.queue.avail_idx(&a.mem, Ordering::Acquire) {
                    Ok(avail) => avail.0.wrapping_sub(a.queue.next_avail()),
                    Err(_) => return self.broken_ring(),
                };
                if pending == 0 {
                    break;
                }
                if pending > a.queue.size() {
                    return self.broken_ring();
                }
                let Some(chain) = a.queue.pop_descriptor_chain(&a.mem) else {
                    return self.broken_ring();
                };
                let head = chain.head_index();
                let mut written = 0u32;
                let mut bad = true;
                for d in chain.writable() {
                    let want = d.len().min(RNG_MAX_REQUEST - written) as usize;
                    let mut buf = vec![0u8; want];
                    if self.source.read_exact(&mut buf).is_err()
                        || a.mem.write_slice(&buf, d.addr()).is_err()
                    {
                        bad = true;
                        break;
                    }
                    bad = false;
                    written += want as u32;
                    if written == RNG_MAX_REQUEST {
                        break;
                    }
                }
                if bad {
                    self.counters.bad_requests += 1;
                    written = 0;
                }
                if a.queue.add_used(&a.mem, head, written).is_err() {
                    return self.broken_ring();
                }
                self.counters.requests += 1;
                self.counters.bytes += u64::from(written);
                served = true;
            }
            if !matches!(a.queue.enable_notification(&a.mem), Ok(true)) {
                break;
            }
        }
        if let Some(a) = self.active.as_mut()
            && served
            && a.queue.needs_notification(&a.mem).unwrap_or(true)
        {
            let _ = a.signals.used_buffers();
        }
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        RNG_DEVICE_ID
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[RNG_QUEUE_SIZE]
    }
    fn features(&self) -> u64 {
        EVENT_IDX | INDIRECT_DESC
    }
    fn read_config(&self, _offset: u64, _data: &mut [u8]) {}
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
        let q = a
            .queues
            .into_iter()
            .next()
            .ok_or_else(|| ActivateError("no request queue".into()))?;
        if !q.queue.ready() {
            return Err(ActivateError("the request queue is not ready".into()));
        }
        self.active = Some(Active {
            mem: a.mem,
            queue: q.queue,
            signals: a.signals,
        });
        Ok(())
    }
    fn reset(&mut self) {
        self.active = None;
    }
}

/// Runs the device's queue on the VMM's event loop when the driver notifies it.
pub struct RngEvents {
    /// The device (shared with its transport).
    pub device: Arc<Mutex<Rng>>,
    /// The transport's notification eventfd for the request queue.
    pub notify: EventFd,
}

impl EventSubscriber for RngEvents {
    fn process(&self, _events: Events, _ops: &mut EventOps) {
        if self.notify.read().is_ok() {
            self.device
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .process_queue();
        }
    }
    fn init(&self, ops: &mut EventOps) {
        ops.add(Events::new(&self.notify, EventSet::IN))
            .expect("a fresh epoll accepts an eventfd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::ActiveQueue;
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn counted_signals() -> (Arc<Signals>, Arc<std::sync::atomic::AtomicUsize>) {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n2 = n.clone();
        let s = Signals::new(Box::new(move || {
            n2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }));
        (Arc::new(s), n)
    }

    /// A device over `mock`'s queue that hands out `byte`s, activated, with counted interrupts.
    fn active_rng(
        mem: &GuestMemoryMmap,
        mock: &MockSplitQueue<'_, GuestMemoryMmap>,
        byte: u8,
    ) -> (Rng, Arc<Signals>, Arc<std::sync::atomic::AtomicUsize>) {
        let mut rng = Rng::new(Box::new(std::io::repeat(byte)));
        let (signals, irqs) = counted_signals();
        let queue: Queue = mock.create_queue().unwrap();
        let notify = EventFd::new(EFD_NONBLOCK).unwrap();
        rng.activate(Activation {
            mem: mem.clone(),
            acked_features: crate::virtio::features::VERSION_1,
            queues: vec![ActiveQueue {
                index: 0,
                queue,
                notify,
            }],
            signals: signals.clone(),
        })
        .unwrap();
        (rng, signals, irqs)
    }

    #[test]
    fn fills_writable_buffers_and_interrupts() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mock = MockSplitQueue::new(&mem, 16);
        let descs = [
            RawDescriptor::from(Descriptor::new(0x8000, 16, 2 /* WRITE */, 0)),
            RawDescriptor::from(Descriptor::new(0x9000, 8, 2, 0)),
        ];
        mock.add_desc_chains(&descs, 0).unwrap();
        let (mut rng, signals, irqs) = active_rng(&mem, &mock, 0xab);
        rng.process_queue();

        let mut got = [0u8; 16];
        mem.read_slice(&mut got, GuestAddress(0x8000)).unwrap();
        assert_eq!(got, [0xab; 16]);
        assert_eq!(
            rng.counters(),
            RngCounters {
                requests: 2,
                bytes: 24,
                ..Default::default()
            }
        );
        assert_eq!(irqs.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(signals.interrupt_status(), 1);
        // Used ring: idx 2, first element (id 0, len 16).
        let used = mock.used_addr();
        let idx: u16 = mem.read_obj(used.unchecked_add(2)).unwrap();
        let len: u32 = mem.read_obj(used.unchecked_add(8)).unwrap();
        assert_eq!((idx, len), (2, 16));
    }

    #[test]
    fn a_buffer_outside_memory_completes_empty() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mock = MockSplitQueue::new(&mem, 16);
        let descs = [RawDescriptor::from(Descriptor::new(0xff_fff0, 64, 2, 0))];
        mock.add_desc_chains(&descs, 0).unwrap();
        let (mut rng, _, _) = active_rng(&mem, &mock, 1);
        rng.process_queue();
        assert_eq!(
            rng.counters(),
            RngCounters {
                requests: 1,
                bytes: 0,
                bad_requests: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn an_avail_index_far_ahead_needs_reset_instead_of_spinning() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mock = MockSplitQueue::new(&mem, 16);
        let descs = [RawDescriptor::from(Descriptor::new(0x8000, 16, 2, 0))];
        mock.add_desc_chains(&descs, 0).unwrap();
        mock.avail().idx().store(0x8000); // 0x8000 requests in a 16-entry ring
        let (mut rng, signals, irqs) = active_rng(&mem, &mock, 1);
        rng.process_queue();
        assert_eq!(rng.counters().broken_rings, 1);
        assert_eq!(rng.counters().requests, 0);
        assert!(signals.needs_reset());
        assert_eq!(
            irqs.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "a config interrupt"
        );
        rng.process_queue(); // stopped: a further kick does nothing
        assert_eq!(rng.counters().broken_rings, 1);
    }
}
