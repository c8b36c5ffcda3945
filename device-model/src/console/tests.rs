//! The console against a fake guest driver (mock rings in plain memory) and a deterministic
//! STREAMS platform: every piece of background work runs in the test thread.

use super::defs::*;
use super::*;
use crate::testing::FakeGuest;
use crate::virtio::features::{EVENT_IDX, INDIRECT_DESC, VERSION_1};
use crate::virtio::status::{DEVICE_NEEDS_RESET, DRIVER_OK};
use port::lock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use streams::{DetPlatform, Errno, FaultPolicy, ReadResult, Stream, Streams, StreamsConfig};
use virtio_bindings::virtio_mmio::VIRTIO_MMIO_CONFIG_GENERATION;

const ALL: u64 = VERSION_1 | EVENT_IDX | INDIRECT_DESC | F_SIZE | F_MULTIPORT | F_EMERG_WRITE;

struct Rig {
    /// Background work runs in host threads (a [`ConsoleRuntime`]); wait instead of running it.
    host: bool,
    g: FakeGuest,
    h: ConsoleHandle,
    s: Streams,
    console: Arc<Mutex<Console>>,
    /// Buffers posted per queue: head -> (address, length).
    bufs: HashMap<(u16, u16), (u64, u32)>,
    /// The deterministic platform's clock (None for a rig over host threads).
    clock: Option<Arc<DetPlatform>>,
}

fn rig_with(ports: &[(&str, bool)], config: StreamsConfig) -> Rig {
    let clock = Arc::new(DetPlatform::new());
    let s = Streams::new(clock.clone(), config);
    let ports = ports
        .iter()
        .map(|(n, c)| {
            (
                PortConfig {
                    name: n.to_string(),
                    console: *c,
                    plugged: true,
                },
                Vec::new(),
            )
        })
        .collect();
    let c = Console::new(&s, ports).unwrap();
    let h = c.handle();
    // Deterministic: no poller thread at work (tests of polling drive it themselves).
    h.set_tx_poll(std::time::Duration::ZERO);
    let console = Arc::new(Mutex::new(c));
    let h2 = h.clone();
    let g = FakeGuest::new(
        console.clone(),
        64 << 20,
        Box::new(move |q| h2.queue_notified(q)),
    );
    Rig {
        host: false,
        g,
        h,
        s,
        console,
        bufs: HashMap::new(),
        clock: Some(clock),
    }
}

/// A rig over a running console with backends (host threads).
fn runtime_rig(rt: &ConsoleRuntime) -> Rig {
    let h = rt.handle();
    let h2 = h.clone();
    let console = rt.device();
    let g = FakeGuest::new(
        console.clone(),
        64 << 20,
        Box::new(move |q| h2.queue_notified(q)),
    );
    Rig {
        host: true,
        g,
        h,
        s: rt.streams().clone(),
        console,
        bufs: HashMap::new(),
        clock: None,
    }
}

/// Polls `f` until it holds or 10 s pass.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

fn rig(ports: &[(&str, bool)]) -> Rig {
    rig_with(ports, StreamsConfig::default())
}

fn crc(b: &[u8]) -> u32 {
    crc32fast::hash(b)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

impl Rig {
    fn run(&self) {
        if self.host {
            self.s.quiesce();
        } else {
            self.s.run_until_idle();
        }
    }

    fn stream(&self, port: u32) -> Arc<Stream> {
        lock(&self.console).stream(port).unwrap().clone()
    }

    /// Negotiates `features` and starts all queues (or the first two without MULTIPORT).
    fn up(&mut self, features: u64) {
        assert!(self.g.negotiate(features));
        let n = if features & F_MULTIPORT != 0 {
            queue_count(self.h.ports() as u32) as u16
        } else {
            2
        };
        self.g.start(n);
        assert_eq!(
            self.g.status() & (DRIVER_OK | DEVICE_NEEDS_RESET),
            DRIVER_OK
        );
        self.run();
    }

    fn post(&mut self, q: u16, len: u32, write: bool, indirect: bool) -> u16 {
        let a = self.g.alloc(len.into());
        let head = self
            .g
            .post(q, &[(a, len, write)], indirect)
            .expect("ring space");
        self.bufs.insert((q, head), (a, len));
        head
    }

    fn kick(&mut self, q: u16) {
        self.g.kick(q);
        self.run();
    }

    fn ctl_send(&mut self, id: u32, event: u16, value: u16) {
        let c = Control { id, event, value };
        let a = self.g.alloc(8);
        self.g.write(a, &c.encode());
        self.g.post(CTRL_TX_QUEUE, &[(a, 8, false)], false).unwrap();
        self.kick(CTRL_TX_QUEUE);
        let used = self.g.used(CTRL_TX_QUEUE);
        assert!(!used.is_empty(), "the device took the control message");
    }

    /// Control messages the device sent, with their payloads; reposts the buffers.
    fn ctl_recv(&mut self) -> Vec<(Control, Vec<u8>)> {
        let mut out = Vec::new();
        let used = self.g.used(CTRL_RX_QUEUE);
        for &(head, len) in &used {
            let (a, _) = self.bufs.remove(&(CTRL_RX_QUEUE, head)).unwrap();
            let b = self.g.read(a, len as usize);
            out.push((Control::decode(&b).unwrap(), b[8..].to_vec()));
        }
        for _ in &used {
            self.post(CTRL_RX_QUEUE, 256, true, false);
        }
        self.kick(CTRL_RX_QUEUE);
        out
    }

    /// The MULTIPORT handshake up to every port opened by the guest.
    fn handshake(&mut self) -> Vec<(Control, Vec<u8>)> {
        for _ in 0..32 {
            self.post(CTRL_RX_QUEUE, 256, true, false);
        }
        self.kick(CTRL_RX_QUEUE);
        self.ctl_send(0, event::DEVICE_READY, 1);
        let mut seen = self.ctl_recv();
        let adds: Vec<u32> = seen
            .iter()
            .filter(|(c, _)| c.event == event::DEVICE_ADD)
            .map(|(c, _)| c.id)
            .collect();
        assert_eq!(adds, (0..self.h.ports() as u32).collect::<Vec<_>>());
        for p in adds {
            self.ctl_send(p, event::PORT_READY, 1);
            seen.extend(self.ctl_recv());
            self.ctl_send(p, event::PORT_OPEN, 1);
        }
        seen
    }

    /// The guest sends `data` on port `port` in buffers of `chunk` bytes.
    fn guest_send(&mut self, port: u32, data: &[u8], chunk: usize, indirect: bool) {
        let q = tx_queue(port);
        for c in data.chunks(chunk) {
            let a = self.g.alloc(c.len() as u64);
            self.g.write(a, c);
            self.g
                .post(q, &[(a, c.len() as u32, false)], indirect)
                .expect("ring space");
        }
        self.kick(q);
    }

    /// Everything waiting at port `port`'s stream head (the backend's view).
    fn host_read(&self, port: u32) -> Vec<u8> {
        let st = self.stream(port);
        let mut out = Vec::new();
        while let ReadResult::Data(m) = st.read() {
            for b in m.blocks() {
                out.extend_from_slice(b.data());
            }
        }
        self.run();
        out
    }

    /// The guest's received bytes on port `port`, in order.
    fn guest_recv(&mut self, port: u32) -> Vec<u8> {
        let q = rx_queue(port);
        let mut out = Vec::new();
        for (head, len) in self.g.used(q) {
            let (a, _) = self.bufs.remove(&(q, head)).unwrap();
            out.extend(self.g.read(a, len as usize));
        }
        out
    }
}

#[test]
fn features_config_and_negotiation() {
    let mut r = rig(&[("console", true), ("data", false)]);
    r.g.wr(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 1);
    r.g.wr(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 3);
    assert_eq!(r.g.device_features(), ALL);
    let mut b = [0u8; 4];
    r.g.transport.read(0x100 + config::MAX_NR_PORTS, &mut b);
    assert_eq!(u32::from_le_bytes(b), 2);
    assert!(!r.g.negotiate(ALL & !VERSION_1), "VERSION_1 is required");
    r.g.wr(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 0);
    r.up(ALL);
    assert_eq!(r.g.features, ALL);
}

#[test]
fn the_multiport_handshake_names_ports_and_marks_the_console() {
    let mut r = rig(&[("console", true), ("data", false)]);
    r.h.set_host_open(1, true);
    r.h.set_size(0, 80, 25);
    r.up(ALL);
    let seen = r.handshake();
    let has = |id, ev, val: Option<u16>, payload: &[u8]| {
        seen.iter().any(|(c, p)| {
            c.id == id && c.event == ev && val.is_none_or(|v| c.value == v) && p == payload
        })
    };
    assert!(has(0, event::CONSOLE_PORT, Some(1), b""));
    assert!(!has(1, event::CONSOLE_PORT, None, b""));
    assert!(has(0, event::PORT_NAME, None, b"console"));
    assert!(has(1, event::PORT_NAME, None, b"data"));
    assert!(has(0, event::RESIZE, None, &resize_payload(80, 25)));
    assert!(
        has(1, event::PORT_OPEN, Some(1), b""),
        "the host side of port 1 is open"
    );
    assert!(
        !has(0, event::PORT_OPEN, Some(1), b""),
        "the host side of port 0 is closed"
    );
    assert!(r.h.port(0).unwrap().guest_open() && r.h.port(1).unwrap().guest_open());
    // The guest's PORT_OPEN is answered with the host side's state.
    r.ctl_send(1, event::PORT_OPEN, 1);
    r.run();
    let answer = r.ctl_recv();
    assert!(
        answer
            .iter()
            .any(|(c, _)| c.id == 1 && c.event == event::PORT_OPEN && c.value == 1),
        "{answer:?}"
    );
    // Later host events arrive as messages too.
    r.h.set_host_open(1, false);
    r.h.set_size(0, 100, 40);
    r.run();
    let later = r.ctl_recv();
    assert!(
        later
            .iter()
            .any(|(c, _)| c.id == 1 && c.event == event::PORT_OPEN && c.value == 0)
    );
    assert!(
        later
            .iter()
            .any(|(c, p)| c.id == 0 && c.event == event::RESIZE && p == &resize_payload(100, 40))
    );
    // Control messages for ports that do not exist are ignored.
    r.ctl_send(99, event::PORT_OPEN, 1);
    assert_eq!(r.g.status() & DEVICE_NEEDS_RESET, 0);
    // The guest's opens and closes are counted (the handshake opened each port once).
    r.ctl_send(1, event::PORT_OPEN, 0);
    r.run();
    let p1 = &r.h.stats(&[]).ports[1];
    assert_eq!((p1.guest_opens, p1.guest_closes), (2, 1));
}

#[test]
fn data_both_ways_on_every_port_with_checksums() {
    for indirect in [false, true] {
        let mut r = rig(&[("a", true), ("b", false), ("c", false)]);
        r.up(ALL);
        r.handshake();
        for p in 0..3u32 {
            let out = pattern(100_000 + p as usize, p as u8);
            r.guest_send(p, &out, 4096, indirect);
            assert_eq!(crc(&r.host_read(p)), crc(&out), "guest to host, port {p}");
            let inp = pattern(50_000, 100 + p as u8);
            r.stream(p).write(&inp).unwrap();
            for _ in 0..20 {
                r.post(rx_queue(p), 4096, true, indirect);
            }
            r.kick(rx_queue(p));
            assert_eq!(crc(&r.guest_recv(p)), crc(&inp), "host to guest, port {p}");
            let c = &r.h.port(p).unwrap().counters;
            assert_eq!(c.tx_bytes.load(Ordering::Relaxed), out.len() as u64);
            assert_eq!(c.rx_bytes.load(Ordering::Relaxed), inp.len() as u64);
            assert_eq!(c.drops.load(Ordering::Relaxed), 0);
        }
        assert!(r.g.irqs.load(Ordering::Relaxed) > 0);
    }
}

#[test]
fn a_removed_port_is_announced_and_gets_nothing_more() {
    let mut r = rig(&[("a", true), ("b", false)]);
    r.up(ALL);
    r.handshake();
    r.h.remove_port(1).unwrap();
    assert!(
        r.h.remove_port(1)
            .unwrap_err()
            .to_string()
            .contains("not plugged in")
    );
    assert!(r.h.remove_port(9).is_err());
    r.run();
    let seen = r.ctl_recv();
    assert!(
        seen.iter()
            .any(|(c, _)| c.id == 1 && c.event == event::DEVICE_REMOVE),
        "{seen:?}"
    );
    // Host data for the removed port stays with the host; port 0 still works.
    r.stream(1).write(b"too late").unwrap();
    r.post(rx_queue(1), 64, true, false);
    r.kick(rx_queue(1));
    assert!(r.guest_recv(1).is_empty());
    r.stream(0).write(b"still here").unwrap();
    r.post(rx_queue(0), 64, true, false);
    r.kick(rx_queue(0));
    assert_eq!(r.guest_recv(0), b"still here");
    // The driver's messages about the removed port are ignored, not acted on.
    r.ctl_send(1, event::PORT_OPEN, 1);
    assert!(!r.h.port(1).unwrap().guest_open());
    assert_eq!(r.g.status() & DEVICE_NEEDS_RESET, 0);
    // Plugged in again: announced, named on PORT_READY, and the data that waited arrives
    // once the guest opens it.
    r.h.add_port(1).unwrap();
    assert!(
        r.h.add_port(1)
            .unwrap_err()
            .to_string()
            .contains("already plugged in")
    );
    r.run();
    let seen = r.ctl_recv();
    assert!(
        seen.iter()
            .any(|(c, _)| c.id == 1 && c.event == event::DEVICE_ADD),
        "{seen:?}"
    );
    r.ctl_send(1, event::PORT_READY, 1);
    let seen = r.ctl_recv();
    assert!(
        seen.iter()
            .any(|(c, p)| c.id == 1 && c.event == event::PORT_NAME && p == b"b"),
        "{seen:?}"
    );
    r.ctl_send(1, event::PORT_OPEN, 1);
    r.post(rx_queue(1), 64, true, false);
    r.kick(rx_queue(1));
    assert_eq!(r.guest_recv(1), b"too late");
}

#[test]
fn an_unplugged_port_is_announced_only_when_added() {
    let mut r = rig(&[("a", true), ("later", false)]);
    r.h.remove_port(1).unwrap(); // as `--port ...,unplugged` starts it
    r.up(ALL);
    for _ in 0..8 {
        r.post(CTRL_RX_QUEUE, 256, true, false);
    }
    r.kick(CTRL_RX_QUEUE);
    r.ctl_send(0, event::DEVICE_READY, 1);
    let adds = |seen: &[(Control, Vec<u8>)]| -> Vec<u32> {
        seen.iter()
            .filter(|(c, _)| c.event == event::DEVICE_ADD)
            .map(|(c, _)| c.id)
            .collect()
    };
    let seen = r.ctl_recv();
    assert_eq!(adds(&seen), [0]);
    assert!(!seen.iter().any(|(c, _)| c.event == event::DEVICE_REMOVE));
    r.h.add_port(1).unwrap();
    r.run();
    assert_eq!(adds(&r.ctl_recv()), [1]);
}

#[test]
fn without_multiport_port_0_uses_queues_0_and_1() {
    let mut r = rig(&[("console", true), ("unused", false)]);
    r.up(ALL & !F_MULTIPORT);
    let out = pattern(10_000, 7);
    r.guest_send(0, &out, 1000, false);
    assert_eq!(r.host_read(0), out);
    r.stream(0).write(b"hello").unwrap();
    r.post(0, 64, true, false);
    r.kick(0);
    assert_eq!(r.guest_recv(0), b"hello");
}

#[test]
fn a_slow_backend_holds_the_guests_buffers_and_loses_nothing() {
    let mut r = rig(&[("a", true)]);
    r.up(ALL);
    r.handshake();
    let q = tx_queue(0);
    let total = QUEUE_SIZE as usize * 8192;
    let out = pattern(total, 3);
    r.guest_send(0, &out, 8192, false);
    // Flow control stops the device at the head's high-water mark: the rest of the guest's
    // buffers stay in the ring, and the taken ones are not returned until the host reads.
    assert!(
        r.g.used(q).is_empty(),
        "nothing returned before the backend reads"
    );
    let held = r.stream(0).head().events().len(); // the head saw only M_SETOPTS
    assert_eq!(held, 1);
    let tx =
        r.h.port(0)
            .unwrap()
            .counters
            .tx_bytes
            .load(Ordering::Relaxed);
    assert!(
        tx >= HEAD_HIWAT && tx < total as u64,
        "stopped at the mark: {tx}"
    );
    let mut got = Vec::new();
    while got.len() < total {
        let before = got.len();
        got.extend(r.host_read(0));
        assert!(got.len() > before, "reading lets the device go on");
    }
    assert_eq!(crc(&got), crc(&out));
    assert_eq!(r.g.used(q).len(), QUEUE_SIZE as usize);
}

#[test]
fn a_guest_without_receive_buffers_stops_the_backend_then_wakes_it() {
    let mut r = rig(&[("a", true)]);
    r.up(ALL);
    r.handshake();
    let st = r.stream(0);
    let woken = Arc::new(AtomicU32::new(0));
    let w = woken.clone();
    st.head().set_writable(move || {
        w.fetch_add(1, Ordering::Relaxed);
    });
    let mut sent = Vec::new();
    loop {
        let chunk = pattern(4096, sent.len() as u8);
        match st.write(&chunk) {
            Ok(()) => sent.extend(chunk),
            Err(e) => {
                assert_eq!(e, Errno::EAGAIN);
                break;
            }
        }
        r.run();
    }
    assert!(sent.len() >= RX_HIWAT, "flow control at the driver's mark");
    assert_eq!(woken.load(Ordering::Relaxed), 0);
    let mut got = Vec::new();
    while got.len() < sent.len() {
        for _ in 0..16 {
            r.post(rx_queue(0), 4096, true, false);
        }
        r.kick(rx_queue(0));
        got.extend(r.guest_recv(0));
    }
    assert_eq!(crc(&got), crc(&sent));
    assert!(
        woken.load(Ordering::Relaxed) >= 1,
        "the backend was told to go on"
    );
}

#[test]
fn a_blocked_port_does_not_stall_another() {
    let mut r = rig(&[("blocked", false), ("flowing", false)]);
    r.up(ALL);
    r.handshake();
    // Port 0's backend never reads; port 1 moves 4 MiB.
    r.guest_send(0, &pattern(1 << 20, 1), 65536, false);
    let out = pattern(4 << 20, 2);
    let mut got = Vec::new();
    for c in out.chunks(256 * 1024) {
        r.guest_send(1, c, 8192, false);
        got.extend(r.host_read(1));
        r.g.used(tx_queue(1));
    }
    assert_eq!(crc(&got), crc(&out));
    assert!(r.g.used(tx_queue(0)).is_empty(), "port 0 is still held");
}

#[test]
fn host_data_waits_until_the_guest_opens_the_port() {
    let mut r = rig(&[("a", false)]);
    r.up(ALL);
    for _ in 0..8 {
        r.post(CTRL_RX_QUEUE, 256, true, false);
    }
    r.kick(CTRL_RX_QUEUE);
    r.ctl_send(0, event::DEVICE_READY, 1);
    r.ctl_send(0, event::PORT_READY, 1);
    r.stream(0).write(b"early").unwrap();
    r.post(rx_queue(0), 64, true, false);
    r.kick(rx_queue(0));
    assert!(
        r.guest_recv(0).is_empty(),
        "held while the guest has the port closed"
    );
    r.ctl_send(0, event::PORT_OPEN, 1);
    assert_eq!(r.guest_recv(0), b"early");
}

#[test]
fn emergency_writes_reach_port_0_before_any_queue_exists() {
    let mut r = rig(&[("console", true)]);
    for &b in b"early!" {
        r.g.transport.write(0x100 + config::EMERG_WR, &[b, 0, 0, 0]);
    }
    r.run();
    assert_eq!(r.host_read(0), b"early!");
    assert_eq!(
        r.h.port(0)
            .unwrap()
            .counters
            .emerg_bytes
            .load(Ordering::Relaxed),
        6
    );
}

#[test]
fn resize_without_multiport_changes_the_config_space() {
    let mut r = rig(&[("console", true)]);
    r.up(ALL & !F_MULTIPORT);
    let gen0 = r.g.rd(VIRTIO_MMIO_CONFIG_GENERATION);
    let irqs = r.g.irqs.load(Ordering::Relaxed);
    r.h.set_size(0, 132, 43);
    r.run();
    let mut b = [0u8; 4];
    r.g.transport.read(0x100 + config::COLS, &mut b);
    assert_eq!(b, [132, 0, 43, 0]);
    assert_ne!(r.g.rd(VIRTIO_MMIO_CONFIG_GENERATION), gen0);
    assert!(
        r.g.irqs.load(Ordering::Relaxed) > irqs,
        "a configuration interrupt"
    );
}

#[test]
fn buffer_exhaustion_is_retried_and_the_data_arrives_intact() {
    let faults = [
        vec![FaultPolicy::EveryNth(3)],
        vec![FaultPolicy::Probability { p: 0.5, seed: 7 }],
        vec![FaultPolicy::Probability { p: 0.9, seed: 9 }],
    ];
    for f in faults {
        let mut r = rig(&[("a", true)]);
        r.up(ALL);
        r.handshake();
        r.s.set_faults(f.clone());
        let out = pattern(200_000, 5);
        r.guest_send(0, &out, 2048, false);
        let mut got = Vec::new();
        for _ in 0..10_000 {
            got.extend(r.host_read(0));
            if got.len() >= out.len() {
                break;
            }
            // Retries beyond a tick's worth wait for the clock.
            let clock = r.clock.clone().unwrap();
            clock.advance(&r.s, 1);
        }
        assert_eq!(crc(&got), crc(&out), "{f:?}");
        let c = &r.h.port(0).unwrap().counters;
        assert!(c.allocb_failures.load(Ordering::Relaxed) > 0, "{f:?}");
        assert!(c.bufcall_retries.load(Ordering::Relaxed) > 0, "{f:?}");
        assert_eq!(c.drops.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn a_pool_limit_throttles_instead_of_failing() {
    let mut config = StreamsConfig::default();
    config.pool.max_bytes = 16 * 1024;
    let mut r = rig_with(&[("a", true)], config);
    r.up(ALL);
    r.handshake();
    let st = r.stream(0);
    let inp = pattern(1 << 20, 9);
    let mut sent = 0;
    let mut got = Vec::new();
    while got.len() < inp.len() {
        while sent < inp.len() {
            let end = (sent + 4096).min(inp.len());
            match st.write(&inp[sent..end]) {
                Ok(()) => sent = end,
                Err(Errno::EAGAIN) | Err(Errno::ENOMEM) => break,
                Err(e) => panic!("{e:?}"),
            }
        }
        r.run();
        while r.g.free_descriptors(rx_queue(0)) > 200 {
            r.post(rx_queue(0), 4096, true, false);
        }
        r.kick(rx_queue(0));
        got.extend(r.guest_recv(0));
    }
    assert_eq!(crc(&got), crc(&inp));
}

#[test]
fn bad_buffers_are_returned_and_a_broken_ring_asks_for_a_reset() {
    let mut r = rig(&[("a", true), ("b", false)]);
    r.up(ALL);
    r.handshake();
    // A transmit buffer outside guest memory and a device-writable one: returned unused.
    r.g.post(tx_queue(0), &[(1 << 40, 100, false)], false)
        .unwrap();
    r.g.post(tx_queue(0), &[(0x30_0000, 100, true)], false)
        .unwrap();
    r.kick(tx_queue(0));
    assert_eq!(r.g.used(tx_queue(0)).len(), 2);
    assert_eq!(
        r.h.port(0)
            .unwrap()
            .counters
            .bad_descriptors
            .load(Ordering::Relaxed),
        2
    );
    assert_eq!(r.g.status() & DEVICE_NEEDS_RESET, 0);
    // Port 1 still works.
    r.guest_send(1, b"fine", 4, false);
    assert_eq!(r.host_read(1), b"fine");
    // An avail index far past the ring size breaks the ring.
    r.g.write(
        0x10_0000 + u64::from(tx_queue(1)) * 0x4000 + 0x1000 + 2,
        &1000u16.to_le_bytes(),
    );
    r.h.queue_notified(tx_queue(1)); // the fake guest's own count did not move
    r.run();
    assert_ne!(r.g.status() & DEVICE_NEEDS_RESET, 0);
}

#[test]
fn a_descriptor_loop_breaks_the_ring_and_nothing_of_it_reaches_the_host() {
    let mut r = rig(&[("a", true), ("b", false)]);
    r.up(ALL);
    r.handshake();
    // Two descriptors that name each other, made available by hand: virtio-queue's iterator
    // stops after a queue's worth of them, which used to hand the host 256 copies.
    let q = tx_queue(1);
    let (desc, avail) = (
        0x10_0000 + u64::from(q) * 0x4000,
        0x10_0000 + u64::from(q) * 0x4000 + 0x1000,
    );
    let buf = r.g.alloc(8);
    r.g.write(buf, b"loopdata");
    for (i, next) in [(0u64, 1u16), (1, 0)] {
        let mut d = [0u8; 16];
        d[0..8].copy_from_slice(&buf.to_le_bytes());
        d[8..12].copy_from_slice(&8u32.to_le_bytes());
        d[12..14].copy_from_slice(&1u16.to_le_bytes()); // NEXT
        d[14..16].copy_from_slice(&next.to_le_bytes());
        r.g.write(desc + 16 * i, &d);
    }
    r.g.write(avail + 4, &0u16.to_le_bytes());
    r.g.write(avail + 2, &1u16.to_le_bytes());
    r.h.queue_notified(q);
    r.run();
    assert_ne!(r.g.status() & DEVICE_NEEDS_RESET, 0);
    assert_eq!(r.host_read(1), b"");
    // Port 0 still works until the driver resets the device.
    r.guest_send(0, b"fine", 4, false);
    assert_eq!(r.host_read(0), b"fine");
}

#[test]
fn a_reset_forgets_old_buffers_and_the_device_starts_again() {
    let mut r = rig(&[("a", true)]);
    r.up(ALL);
    r.handshake();
    r.guest_send(0, b"before reset", 64, false);
    // The host holds the message across a reset: freeing it later must not touch the new ring.
    let st = r.stream(0);
    let ReadResult::Data(held) = st.read() else {
        panic!("no data")
    };
    r.g.wr(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 0);
    r.run();
    r.up(ALL);
    r.handshake();
    drop(held);
    r.run();
    assert!(r.g.used(tx_queue(0)).is_empty());
    r.guest_send(0, b"after", 64, false);
    assert_eq!(r.host_read(0), b"after");
    assert_eq!(r.g.used(tx_queue(0)).len(), 1);
}

#[test]
fn event_idx_suppresses_kicks_and_interrupts() {
    let mut r = rig(&[("a", true)]);
    r.up(ALL);
    r.handshake();
    let q = tx_queue(0);
    // The host does not read, so the device stops with notifications off: kicks are skipped.
    r.guest_send(0, &pattern(200 * 4096, 1), 4096, false);
    r.guest_send(0, &pattern(4096, 1), 4096, false);
    assert!(r.g.kicks_suppressed > 0);
    let c = &r.h.port(0).unwrap().counters;
    let _ = r.host_read(0);
    assert!(
        c.interrupts.load(Ordering::Relaxed) + c.interrupts_suppressed.load(Ordering::Relaxed) > 0
    );
    assert!(
        c.interrupts_suppressed.load(Ordering::Relaxed) > 0,
        "the guest asked only for the next one"
    );
    let _ = r.g.used(q);
}

/// Posts `data` as one buffer on queue `q` and offers a notification; whether the device
/// wanted it.
fn post_and_notify(r: &mut Rig, q: u16, data: &[u8]) -> bool {
    let a = r.g.alloc(data.len() as u64);
    r.g.write(a, data);
    r.g.post(q, &[(a, data.len() as u32, false)], false)
        .unwrap();
    r.g.kick(q)
}

#[test]
fn a_buffer_made_available_as_transmit_polling_stops_is_taken() {
    let mut r = rig(&[("a", true), ("b", false)]);
    r.up(ALL);
    r.handshake();
    let (poll, ports) = (r.h.0.poll.clone(), r.h.0.ports.clone());
    let q = tx_queue(1);
    poll.set_active(true);
    // The notification that started polling; the pass that empties the ring leaves it unarmed.
    assert!(post_and_notify(&mut r, q, b"first"));
    r.run();
    assert_eq!(r.host_read(1), b"first");
    // While polling the guest sends no notification; a sweep finds the ring moved.
    assert!(!post_and_notify(&mut r, q, b"second"), "no notification");
    let mut seen = vec![None; ports.len()];
    assert!(poll.sweep(&ports, &mut seen));
    r.run();
    assert_eq!(r.host_read(1), b"second");
    assert!(!poll.sweep(&ports, &mut seen), "nothing moved since");
    // A buffer made available just as polling stops, without a notification: stopping
    // re-arms the ring, looks once more and takes it.
    assert!(!post_and_notify(&mut r, q, b"third"), "no notification");
    poll.stop(&ports);
    r.run();
    assert_eq!(r.host_read(1), b"third");
    // Armed again: the next buffer notifies.
    assert!(post_and_notify(&mut r, q, b"fourth"));
    r.run();
    assert_eq!(r.host_read(1), b"fourth");
}

#[test]
fn without_polling_every_buffer_that_finds_its_ring_idle_notifies() {
    let mut r = rig(&[("a", true), ("b", false)]);
    r.up(ALL);
    r.handshake();
    let q = tx_queue(1);
    for i in 0..4u8 {
        assert!(post_and_notify(&mut r, q, &[i; 16]), "buffer {i} notifies");
        r.run();
        assert_eq!(r.host_read(1), [i; 16]);
    }
}

mod backends {
    //! The backends with real threads, sockets, files and ptys.
    use super::*;
    use crate::console::backend::{PortSpec, pattern_byte};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn spec(name: &str, backend: &str) -> PortSpec {
        PortSpec::parse(&format!("name={name},backend={backend}")).unwrap()
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("perimeter-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d.join(name)
    }

    impl Rig {
        /// Posts receive buffers until `n` bytes arrived on `port`.
        fn guest_recv_n(&mut self, port: u32, n: usize) -> Vec<u8> {
            let mut got = Vec::new();
            eventually("guest receive", || {
                while self.g.free_descriptors(rx_queue(port)) > 0 {
                    self.post(rx_queue(port), 4096, true, false);
                }
                self.g.kick(rx_queue(port));
                got.extend(self.guest_recv(port));
                got.len() >= n
            });
            got
        }
        /// Sends `data` as the ring allows, reclaiming used buffers.
        fn guest_send_all(&mut self, port: u32, data: &[u8], chunk: usize) {
            let q = tx_queue(port);
            for c in data.chunks(chunk) {
                eventually("transmit ring space", || {
                    self.g.used(q);
                    self.g.free_descriptors(q) > 0
                });
                let a = self.g.alloc(c.len() as u64);
                self.g.write(a, c);
                self.g
                    .post(q, &[(a, c.len() as u32, false)], false)
                    .unwrap();
                self.g.kick(q);
            }
        }
    }

    #[test]
    fn a_socket_keeps_output_until_a_client_comes_and_serves_the_next_one() {
        let path = tmp("sock");
        let rt = ConsoleRuntime::start(&[spec("s", &format!("socket:{}", path.display()))], &[])
            .unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        let out = pattern(300_000, 4);
        r.guest_send(0, &out, 4096, false);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            r.h.port(0)
                .unwrap()
                .counters
                .out_bytes
                .load(Ordering::Relaxed),
            0
        );
        let mut c = UnixStream::connect(&path).unwrap();
        let mut got = vec![0u8; out.len()];
        c.read_exact(&mut got).unwrap();
        assert_eq!(crc(&got), crc(&out), "kept while nobody listened");
        // Host to guest through the client.
        let inp = pattern(100_000, 8);
        c.write_all(&inp).unwrap();
        assert_eq!(crc(&r.guest_recv_n(0, inp.len())), crc(&inp));
        // The client leaves; the guest hears PORT_OPEN 0; the next client gets new output.
        drop(c);
        eventually("host close", || !r.h.port(0).unwrap().host_open());
        r.guest_send(0, b"second", 64, false);
        let mut c2 = UnixStream::connect(&path).unwrap();
        let mut b = [0u8; 6];
        c2.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"second");
        let seen = r.ctl_recv();
        assert!(
            seen.iter()
                .any(|(c, _)| c.event == event::PORT_OPEN && c.value == 0)
        );
        let st = rt.finish(Duration::from_secs(2));
        assert_eq!(st.ports[0].connects, 2);
        assert_eq!(st.ports[0].drops, 0);
        assert!(!path.exists(), "the socket file is removed at the end");
    }

    #[test]
    fn null_and_pattern_count_checksum_and_generate() {
        let rt = ConsoleRuntime::start(&[spec("n", "null"), spec("p", "pattern")], &[]).unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        let out = pattern(1 << 20, 6);
        r.guest_send_all(0, &out, 65536);
        let got = r.guest_recv_n(1, 200_000);
        for (i, &b) in got.iter().enumerate() {
            assert_eq!(b, pattern_byte(i as u64), "pattern byte {i}");
        }
        let st = finish_after_null_output(rt, &r, &out);
        assert_eq!(st.ports[0].drops + st.ports[1].drops, 0);
    }

    #[test]
    fn a_guest_that_notifies_only_when_asked_loses_nothing_while_the_device_polls() {
        // Three null ports; the device polls (the runtime's default); the guest notifies only
        // when EVENT_IDX asks, and pauses for random times around the poller's idle time, so
        // that buffers keep landing as polling periods end.
        let names = ["a", "b", "c"];
        let specs: Vec<PortSpec> = names.iter().map(|n| spec(n, "null")).collect();
        let rt = ConsoleRuntime::start(&specs, &[]).unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        let data: Vec<Vec<u8>> = (0..3).map(|p| pattern(600 * 512, p as u8)).collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for chunk in 0..600 {
            for (p, d) in data.iter().enumerate() {
                let q = tx_queue(p as u32);
                eventually("transmit ring space", || {
                    r.g.used(q);
                    r.g.free_descriptors(q) > 0
                });
                post_and_notify(&mut r, q, &d[chunk * 512..][..512]);
            }
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let pause = seed % 160;
            if pause < 100 {
                std::thread::sleep(Duration::from_micros(pause));
            }
        }
        for (p, d) in data.iter().enumerate() {
            let out = &r.h.port(p as u32).unwrap().counters.out_bytes;
            eventually("every buffer taken", || {
                out.load(Ordering::Relaxed) == d.len() as u64
            });
        }
        assert!(r.g.kicks_suppressed > 0, "polling saved notifications");
        let st = rt.finish(Duration::from_secs(2));
        assert!(st.tx_poll_found > 0, "{st:?}");
        for (p, d) in st.ports.iter().zip(&data) {
            assert_eq!(p.out_crc32, Some(crc(d)), "port {}", p.name);
            assert_eq!(p.drops, 0);
        }
    }

    /// Posts `data` on `port`'s transmit ring in `chunk`-byte buffers; their addresses.
    fn post_tx(r: &mut Rig, port: u32, data: &[u8], chunk: usize) -> Vec<(u64, usize)> {
        let q = tx_queue(port);
        let mut at = Vec::new();
        for c in data.chunks(chunk) {
            let a = r.g.alloc(c.len() as u64);
            r.g.write(a, c);
            r.g.post(q, &[(a, c.len() as u32, false)], false).unwrap();
            at.push((a, c.len()));
        }
        r.g.kick(q);
        at
    }

    /// Connects to `path` and reads `n` bytes.
    fn client_reads(path: &std::path::Path, n: usize) -> Vec<u8> {
        let mut c = UnixStream::connect(path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = vec![0u8; n];
        c.read_exact(&mut got).unwrap();
        got
    }

    /// A console whose last port is a socket nobody reads, on which the guest sent `first`:
    /// its buffers wait at the stream head, lent. The socket's path and the buffers.
    fn lent_at_the_head(
        ports: &[PortSpec],
        file: &str,
        first: &[u8],
    ) -> (ConsoleRuntime, Rig, std::path::PathBuf, Vec<(u64, usize)>) {
        let path = tmp(file);
        let mut ports = ports.to_vec();
        ports.push(spec("s", &format!("socket:{}", path.display())));
        let rt = ConsoleRuntime::start(&ports, &[]).unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        let id = ports.len() as u32 - 1;
        let bufs = post_tx(&mut r, id, first, 8192);
        let port = r.h.port(id).unwrap().clone();
        eventually("the buffers are taken", || {
            port.counters.tx_bytes.load(Ordering::Relaxed) == first.len() as u64
        });
        assert!(port.lent.outstanding() > 0);
        (rt, r, path, bufs)
    }

    #[test]
    fn after_a_reset_the_guests_old_transmit_buffers_are_not_read() {
        let first = pattern(96 * 1024, 1);
        let (rt, mut r, path, bufs) = lent_at_the_head(&[], "reset.sock", &first);
        let port = r.h.port(0).unwrap().clone();
        r.g.wr(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 0);
        assert_eq!(port.lent.outstanding(), 0, "the reset ended every loan");
        // The guest may use its memory again at once.
        let second = pattern(96 * 1024, 2);
        let mut off = 0;
        for (a, n) in bufs {
            r.g.write(a, &second[off..off + n]);
            off += n;
        }
        let got = client_reads(&path, first.len());
        assert!(got == first, "what the guest sent before the reset, intact");
        let st = rt.finish(Duration::from_secs(2));
        assert_eq!(st.ports[0].drops, 0);
    }

    #[test]
    fn removing_a_port_returns_the_buffers_its_backend_holds() {
        let first = pattern(64 * 1024, 3);
        let (rt, mut r, path, bufs) = lent_at_the_head(&[spec("n", "null")], "remove.sock", &first);
        assert!(r.g.used(tx_queue(1)).is_empty(), "held for the client");
        r.h.remove_port(1).unwrap();
        let back = r.g.used(tx_queue(1));
        assert_eq!(back.len(), bufs.len(), "every buffer returned");
        for (a, n) in bufs {
            r.g.write(a, &vec![0xee; n]);
        }
        let got = client_reads(&path, first.len());
        assert!(got == first, "the port's output still goes out, intact");
        let _ = rt.finish(Duration::from_secs(2));
    }

    #[test]
    fn a_removal_without_memory_for_copies_keeps_the_data() {
        let first = pattern(64 * 1024, 5);
        let (rt, mut r, path, _) = lent_at_the_head(&[spec("n", "null")], "nomem.sock", &first);
        rt.streams().set_faults(vec![FaultPolicy::EveryNth(1)]);
        r.h.remove_port(1).unwrap();
        rt.streams().set_faults(vec![]);
        assert!(
            r.g.used(tx_queue(1)).is_empty(),
            "no copies: the buffers wait"
        );
        let got = client_reads(&path, first.len());
        assert!(got == first, "nothing dropped");
        eventually("the buffers come back once written", || {
            !r.g.used(tx_queue(1)).is_empty()
        });
        let st = rt.finish(Duration::from_secs(2));
        assert_eq!(st.ports[1].drops, 0);
    }

    #[test]
    fn input_held_for_a_removed_port_shows_as_pending() {
        let (o, i) = (tmp("pending-out"), tmp("pending-in"));
        std::fs::write(&i, pattern(4 << 20, 4)).unwrap();
        let file = format!("file:{}:{}", o.display(), i.display());
        let rt = ConsoleRuntime::start(&[spec("n", "null"), spec("p", &file)], &[]).unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        let got = r.guest_recv_n(1, 100_000);
        assert!(got.len() >= 100_000);
        r.h.remove_port(1).unwrap();
        r.run();
        // The file keeps coming in; the removed port keeps it for a later add.
        let c = &r.h.port(1).unwrap().counters;
        eventually("input the guest will not get", || {
            c.in_bytes.load(Ordering::Relaxed) > c.rx_bytes.load(Ordering::Relaxed)
        });
        let st = rt.finish(Duration::from_secs(2));
        let p = &st.ports[1];
        assert!(p.pending_in_bytes > 0, "{p:?}");
        assert_eq!(p.in_bytes, p.rx_bytes + p.pending_in_bytes, "{p:?}");
        assert_eq!(p.drops, 0);
    }

    #[test]
    fn echo_sends_the_guests_output_back_to_it() {
        let rt = ConsoleRuntime::start(&[spec("e", "echo")], &[]).unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        let out = pattern(300_000, 9);
        r.guest_send_all(0, &out, 16384);
        let got = r.guest_recv_n(0, out.len());
        assert_eq!(got.len(), out.len());
        assert!(got == out, "the echo differs");
        let st = rt.finish(Duration::from_secs(2));
        assert_eq!(st.ports[0].out_bytes, out.len() as u64);
        assert_eq!((st.ports[0].drops, st.ports[0].pending_out_bytes), (0, 0));
    }

    #[test]
    fn files_take_output_and_give_input() {
        let (o, i) = (tmp("out"), tmp("in"));
        let inp = pattern(70_000, 2);
        std::fs::write(&i, &inp).unwrap();
        let rt = ConsoleRuntime::start(
            &[spec("f", &format!("file:{}:{}", o.display(), i.display()))],
            &[],
        )
        .unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        assert_eq!(crc(&r.guest_recv_n(0, inp.len())), crc(&inp));
        let out = pattern(123_456, 3);
        r.guest_send_all(0, &out, 4000);
        let st = rt.finish(Duration::from_secs(2));
        assert_eq!(
            std::fs::read(&o).unwrap(),
            out,
            "everything written before the end"
        );
        assert_eq!(st.ports[0].out_crc32, Some(crc(&out)));
    }

    #[test]
    fn a_pty_carries_bytes_and_window_sizes() {
        let rt = ConsoleRuntime::start(
            &[PortSpec::parse("name=t,backend=pty,console").unwrap()],
            &[],
        )
        .unwrap();
        let slave_path = rt.paths()[0].1.clone();
        let mut slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&slave_path)
            .unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        slave.write_all(b"typed").unwrap();
        assert_eq!(r.guest_recv_n(0, 5), b"typed");
        r.guest_send(0, b"shown", 64, false);
        let mut b = [0u8; 5];
        slave.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"shown");
        let ws = libc::winsize {
            ws_row: 33,
            ws_col: 111,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
        assert_eq!(
            unsafe {
                libc::ioctl(
                    std::os::fd::AsRawFd::as_raw_fd(&slave),
                    libc::TIOCSWINSZ,
                    &ws,
                )
            },
            0
        );
        let mut seen = Vec::new();
        eventually("a RESIZE", || {
            seen.extend(r.ctl_recv());
            seen.iter()
                .any(|(c, p)| c.event == event::RESIZE && p == &resize_payload(111, 33))
        });
        rt.finish(Duration::from_secs(1));
    }

    #[test]
    fn host_side_fault_injection_keeps_every_byte() {
        use crate::console::backend::{FaultSpec, parse_fault};
        let failures = |r: &Rig| -> (u64, u64) {
            let (mut f, mut b) = (0, 0);
            for p in 0..2 {
                let c = &r.h.port(p).unwrap().counters;
                f += c.allocb_failures.load(Ordering::Relaxed);
                b += c.bufcall_retries.load(Ordering::Relaxed);
            }
            (f, b)
        };
        // One device for the allocb policies, switched between transfers.
        let rt = ConsoleRuntime::start(&[spec("n", "null"), spec("p", "pattern")], &[]).unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        let (mut sent, mut received) = (Vec::new(), 0u64);
        for f in [
            "allocb=rate:0.1:1",
            "allocb=rate:0.5:2",
            "allocb=rate:0.9:3",
            "allocb=every:2",
        ] {
            let Ok(FaultSpec::Policy(p)) = parse_fault(f) else {
                panic!("{f} is a policy")
            };
            let before = failures(&r);
            rt.streams().set_faults(vec![p]);
            let out = pattern(256 * 1024, sent.len() as u8 ^ 0x5a);
            r.guest_send_all(0, &out, 8192);
            sent.extend_from_slice(&out);
            let got = r.guest_recv_n(1, 128 * 1024);
            let bad = got
                .iter()
                .enumerate()
                .position(|(i, &b)| b != pattern_byte(received + i as u64));
            assert_eq!(bad, None, "{f}: a received byte differs");
            received += got.len() as u64;
            // The transmit path runs in host threads: it took everything under this policy.
            let c = &r.h.port(0).unwrap().counters;
            eventually("the guest's buffers taken", || {
                c.tx_bytes.load(Ordering::Relaxed) == sent.len() as u64
            });
            rt.streams().set_faults(Vec::new());
            let after = failures(&r);
            assert!(after.0 > before.0, "{f}: no allocation failed");
            assert!(after.1 > before.1, "{f}: no bufcall retried");
        }
        let st = finish_after_null_output(rt, &r, &sent);
        assert_eq!(st.ports.iter().map(|p| p.drops).sum::<u64>(), 0);

        // A pool too small for the traffic throttles instead of failing.
        let pool = parse_fault("pool=65536").unwrap();
        let rt =
            ConsoleRuntime::start(&[spec("n", "null"), spec("p", "pattern")], &[pool]).unwrap();
        let mut r = runtime_rig(&rt);
        r.up(ALL);
        r.handshake();
        let out = pattern(512 * 1024, 1);
        r.guest_send_all(0, &out, 8192);
        let got = r.guest_recv_n(1, 256 * 1024);
        assert!(
            got.iter()
                .enumerate()
                .all(|(i, &b)| b == pattern_byte(i as u64))
        );
        finish_after_null_output(rt, &r, &out);
    }

    /// Waits until port 0's `null` backend took all of `sent`, ends the run and checks the
    /// backend's checksum.
    fn finish_after_null_output(rt: ConsoleRuntime, r: &Rig, sent: &[u8]) -> ConsoleStats {
        let out_bytes = &r.h.port(0).unwrap().counters.out_bytes;
        eventually("null output", || {
            out_bytes.load(Ordering::Relaxed) == sent.len() as u64
        });
        let st = rt.finish(Duration::from_secs(2));
        assert_eq!(st.ports[0].out_crc32, Some(crc(sent)));
        st
    }
}

impl Rig {
    /// Posts one control message on the driver's transmit ring and kicks; true when the
    /// device took it (its buffer came back).
    fn ctl_offer(&mut self, id: u32, event: u16, value: u16) -> bool {
        let c = Control { id, event, value };
        let a = self.g.alloc(8);
        self.g.write(a, &c.encode());
        self.g.post(CTRL_TX_QUEUE, &[(a, 8, false)], false).unwrap();
        self.kick(CTRL_TX_QUEUE);
        !self.g.used(CTRL_TX_QUEUE).is_empty()
    }

    fn backlog(&self) -> usize {
        lock(&self.h.0.ctl).backlog()
    }

    /// The ports the device announced (DEVICE_ADD) since the last look.
    fn ctl_adds(&mut self) -> Vec<u32> {
        self.ctl_recv()
            .iter()
            .filter(|(c, _)| c.event == event::DEVICE_ADD)
            .map(|(c, _)| c.id)
            .collect()
    }
}

#[test]
fn a_driver_that_posts_no_control_buffers_cannot_grow_the_backlog() {
    let names: Vec<String> = (0..MAX_PORTS).map(|i| format!("p{i}")).collect();
    let ports: Vec<(&str, bool)> = names.iter().map(|n| (n.as_str(), false)).collect();
    let mut r = rig(&ports);
    r.up(ALL);
    let max = control::backlog_max(MAX_PORTS as usize);
    // DEVICE_READY asks for a DEVICE_ADD per port; no receive buffer is ever posted.
    let mut taken = 0;
    while taken < 10_000 && r.ctl_offer(0, event::DEVICE_READY, 1) {
        taken += 1;
        assert!(r.backlog() <= max + MAX_PORTS as usize, "{}", r.backlog());
    }
    assert!(taken < 10_000, "the device stopped taking control messages");
    let held = r.backlog();
    assert!(held >= max, "{held}");
    assert_eq!(r.h.stats(&[]).control_backlog, held as u64);
    // Host events coalesce while the backlog is full.
    for _ in 0..1000 {
        r.h.set_host_open(3, true);
        r.h.set_host_open(3, false);
    }
    r.run();
    assert_eq!(r.backlog(), held);
    // Buffers drain the backlog and the held control message is taken after all.
    for _ in 0..32 {
        r.post(CTRL_RX_QUEUE, 256, true, false);
    }
    r.kick(CTRL_RX_QUEUE);
    let mut seen = 0;
    for _ in 0..100 {
        let got = r.ctl_recv().len();
        seen += got;
        if got == 0 && r.backlog() == 0 {
            break;
        }
    }
    assert_eq!(r.backlog(), 0);
    assert!(seen > held, "{seen} {held}");
    assert_eq!(
        r.g.used(CTRL_TX_QUEUE).len(),
        1,
        "the held message was taken"
    );
}

#[test]
fn repeated_device_ready_does_not_grow_the_removed_set() {
    let mut r = rig(&[("a", true), ("b", false), ("c", false)]);
    r.h.remove_port(1).unwrap();
    r.h.remove_port(2).unwrap();
    r.up(ALL);
    for _ in 0..4 {
        r.post(CTRL_RX_QUEUE, 256, true, false);
    }
    r.kick(CTRL_RX_QUEUE);
    for _ in 0..1000 {
        r.ctl_send(0, event::DEVICE_READY, 1);
        assert_eq!(r.ctl_adds(), [0]);
    }
    assert_eq!(lock(&r.h.0.ctl).removed_ports(), 2);
    r.h.add_port(2).unwrap();
    r.run();
    assert_eq!(r.ctl_adds(), [2]);
    assert_eq!(lock(&r.h.0.ctl).removed_ports(), 1);
}

#[test]
fn a_removed_ports_transmit_ring_is_left_alone() {
    let mut r = rig(&[("a", true), ("b", false)]);
    r.up(ALL);
    r.handshake();
    r.h.remove_port(1).unwrap();
    r.run();
    r.guest_send(1, b"after removal", 64, false);
    assert!(r.g.used(tx_queue(1)).is_empty(), "nothing taken");
    let tx =
        r.h.port(1)
            .unwrap()
            .counters
            .tx_bytes
            .load(Ordering::Relaxed);
    assert_eq!(tx, 0);
    assert!(r.host_read(1).is_empty());
}

#[test]
fn after_a_reset_returns_the_control_plane_holds_no_ring() {
    let mut r = rig(&[("a", true), ("b", false)]);
    r.up(ALL);
    r.handshake();
    assert!(lock(&r.h.0.ctl).has_rings());
    // The reset comes while control work is pending and before the control plane runs
    // again: it must not find the old rings when it does.
    for _ in 0..4 {
        r.post(CTRL_RX_QUEUE, 256, true, false);
    }
    r.g.kick(CTRL_RX_QUEUE);
    r.g.wr(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 0);
    assert!(
        !lock(&r.h.0.ctl).has_rings(),
        "the old control rings are gone"
    );
    let used_before = r.g.used(CTRL_RX_QUEUE).len();
    r.run();
    assert_eq!(r.g.used(CTRL_RX_QUEUE).len() + used_before, used_before);
}
