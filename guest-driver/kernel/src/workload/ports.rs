//! Workloads on the STREAMS virtio-console driver ([`crate::drivers::vcon`]).
//!
//! Ports are chosen by name: `echo` (the host echoes), `sink` (the host discards and
//! checksums: the `null` backend), `source` (the host sends `byte i = i mod 251`: the
//! `pattern` backend). Each workload prints `@result` lines ([`super::report`]).

use super::report::{Line, mib_per_s, percentiles, quantile};
use super::stream_io::{Poll, alloc, poll, recv, send, try_alloc};
use crate::cpu::bootinfo;
use crate::drivers::vcon::{self, Vcon};
use crate::platform::clock;
use crate::platform::{self, idle_until};
use crate::println;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;
use streams::{FaultPolicy, Mblk, PoolConfig, Stream, Streams, StreamsConfig};

/// Period of the host's `pattern` backend.
use guest_abi::console::PATTERN_PERIOD;
/// How long a workload waits for its last output to reach the device before closing.
const DRAIN_TIMEOUT_NS: u64 = 30_000_000_000;
/// Bytes compared at once against the expected pattern.
const CHECK_WINDOW: usize = 64 * 1024;

/// The STREAMS instance (pool sized to the heap), guest faults applied, and the driver.
pub fn setup() -> (&'static Streams, &'static Vcon) {
    // The device may interrupt any vCPU (the VMM chooses): every local APIC must be up before
    // the first interrupt (an MSI to a CPU still starting is lost).
    crate::cpu::smp::wait_for_online(u64::from(bootinfo::params().vcpus.saturating_sub(1)));
    let heap = crate::platform::heap::size();
    let s = platform::init(StreamsConfig {
        pool: PoolConfig {
            max_bytes: heap / 4,
            max_blocks: 1 << 16,
        },
        ..Default::default()
    });
    let faults = guest_faults();
    if !faults.is_empty() {
        s.set_faults(faults);
    }
    match vcon::probe(s) {
        Ok(v) => (s, v),
        Err(e) => panic!("virtio-console: {e}"),
    }
}

/// `guest-fault=allocb=rate:P[:SEED],allocb=every:N` from the command line.
fn guest_faults() -> Vec<FaultPolicy> {
    let Some(spec) = bootinfo::arg("guest-fault") else {
        return Vec::new();
    };
    spec.split(',')
        .map(|f| {
            let bad = || panic!("guest-fault: cannot parse {f:?}");
            let Some(rest) = f.strip_prefix("allocb=") else {
                bad()
            };
            let mut parts = rest.split(':');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("every"), Some(n), None) => {
                    FaultPolicy::EveryNth(n.parse().unwrap_or_else(|_| bad()))
                }
                (Some("rate"), Some(p), seed) => FaultPolicy::Probability {
                    p: p.parse().unwrap_or_else(|_| bad()),
                    seed: seed.map_or(1, |s| s.parse().unwrap_or_else(|_| bad())),
                },
                _ => bad(),
            }
        })
        .collect()
}

/// Opens port `name`, or says which ports exist.
fn open_named(v: &Vcon, name: &str) -> Result<(u32, Stream), String> {
    let Some(id) = v.find(name) else {
        let names: Vec<String> = v
            .ports()
            .into_iter()
            .filter(|p| p.present)
            .map(|p| p.name)
            .collect();
        return Err(alloc::format!("no port named {name:?} (ports: {names:?})"));
    };
    v.open(id)
        .map(|st| (id, st))
        .map_err(|e| alloc::format!("open of port {name:?} failed: {e:?}"))
}

/// `tx:SIZE:TOTAL[:PORT]`: sends TOTAL bytes in SIZE-byte messages; each message is its
/// sequence number (8 bytes, little endian) followed by a seeded block. Reports the CRC-32
/// of the stream for the host to compare with its `null` backend's.
pub fn tx(s: &Streams, v: &Vcon, size: usize, total: u64, port: &str) -> Result<(), String> {
    let (id, st) = open_named(v, port)?;
    let size = size.clamp(8, 1 << 20);
    let block = seeded_block(size);
    let mut rest = crc32fast::Hasher::new();
    rest.update(&block[8..]);
    let mut crc = crc32fast::Hasher::new();
    let (mut sent, mut seq) = (0u64, 0u64);
    let t0 = clock::now_ns();
    while sent < total {
        let len = (total - sent).min(size as u64) as usize;
        let mut m = alloc(s, &st, len);
        let d = m.data_mut().expect("a fresh block is writable");
        let head = seq.to_le_bytes();
        let k = len.min(8);
        d[..k].copy_from_slice(&head[..k]);
        d[k..].copy_from_slice(&block[k..len]);
        if len == size {
            crc.update(&head);
            crc.combine(&rest);
        } else {
            crc.update(&d[..len]);
        }
        send(&st, m).map_err(|e| alloc::format!("write failed: {e:?}"))?;
        sent += len as u64;
        seq += 1;
    }
    // Closing lets the queued output reach the device first (the driver's close drains, as
    // strclose does): the host's checksum then covers every byte, and the time includes it.
    drop(st.close());
    let ns = clock::now_ns() - t0;
    let crc = crc.finalize();
    let mut line = throughput_line("tx", port, size, sent, ns);
    line.add("crc", alloc::format!("{crc:08x}"))
        .add("ring_full", ring_full(id))
        .emit();
    Ok(())
}

/// How long `tx-idle` lets the CPU idle for the driver to take its buffers back.
const TX_IDLE_WAIT_NS: u64 = 10_000_000_000;

/// `tx-idle:SIZE:TOTAL[:PORT]`: writes TOTAL bytes in SIZE-byte messages, then, with no
/// drain or close to ask for completions, lets the CPU idle until the driver holds less than
/// [`vcon::TX_IRQ_BYTES`] of them: the bound on what a port whose writer stopped keeps. Prints
/// `tx-idle: written` first (a host may hold its reader back until then) and reports what the
/// driver held when the CPU went idle, and the timer interrupts that came while it waited.
/// Fails after [`TX_IDLE_WAIT_NS`].
pub fn tx_idle(s: &Streams, v: &Vcon, size: usize, total: u64, port: &str) -> Result<(), String> {
    let (id, st) = open_named(v, port)?;
    let block = seeded_block(size.clamp(1, 1 << 20));
    let mut sent = 0u64;
    while sent < total {
        let len = (total - sent).min(block.len() as u64) as usize;
        let mut m = alloc(s, &st, len);
        m.data_mut()
            .expect("a fresh block is writable")
            .copy_from_slice(&block[..len]);
        send(&st, m).map_err(|e| alloc::format!("write failed: {e:?}"))?;
        sent += len as u64;
    }
    let held = v.tx_unreaped(id);
    println!("tx-idle: written {sent} bytes, {held} held");
    let (t0, timers) = (clock::now_ns(), platform::STATS.timer_irqs.load(Relaxed));
    let back = platform::idle_until_or(t0 + TX_IDLE_WAIT_NS, || {
        v.tx_unreaped(id) < vcon::TX_IRQ_BYTES
    });
    let ns = clock::now_ns() - t0;
    // A timer interrupt rings every doorbell, which reaps too: a result that needed one
    // says so.
    let timers = platform::STATS.timer_irqs.load(Relaxed) - timers;
    let left = v.tx_unreaped(id);
    drop(st.close());
    Line::new("tx-idle")
        .add("port", port)
        .add("bytes", sent)
        .add("held", held)
        .add("left", left)
        .add("ns", ns)
        .add("timers", timers)
        .add("check", if back { "ok" } else { "held" })
        .emit();
    if !back {
        return Err(alloc::format!(
            "{port}: {left} bytes still held after {} s idle",
            TX_IDLE_WAIT_NS / 1_000_000_000
        ));
    }
    Ok(())
}

/// Times port `id`'s transmit ring was full (a result's `ring_full`).
fn ring_full(id: u32) -> u64 {
    vcon::COUNTERS[id as usize].tx_ring_full.load(Relaxed)
}

fn seeded_block(size: usize) -> Vec<u8> {
    let mut block = alloc::vec![0; size];
    guest_abi::seeded::Xorshift::from_state(0x2545_f491_4f6c_dd1d).fill(&mut block);
    block
}

/// `rx:SIZE:TOTAL[:PORT]`: receives TOTAL bytes of the host's pattern into SIZE-byte
/// receive buffers and checks every byte. The stream may start anywhere in the pattern
/// (what reached an earlier open of the port was read or discarded there); from its first
/// byte on it must be contiguous.
pub fn rx(v: &Vcon, size: usize, total: u64, port: &str) -> Result<(), String> {
    vcon::set_rx_buf(size);
    let (id, st) = open_named(v, port)?;
    let expected: Vec<u8> = (0..PATTERN_PERIOD + CHECK_WINDOW)
        .map(|i| (i % PATTERN_PERIOD) as u8)
        .collect();
    // The check is only as good as the comparison (`rt.rs` has its own): it must see a
    // difference in the middle of a long run and in a short tail.
    let mut twin = expected[..4096].to_vec();
    twin[2049] ^= 1;
    assert!(
        expected[..4096] != twin[..] && expected[4090..4096] != twin[4089..4095],
        "memory comparison is broken"
    );
    let (mut got, mut bad) = (0u64, 0u64);
    let mut t0 = None;
    let mut start = None;
    let mut first_bad = None;
    while got < total {
        let Some(m) = recv(&st).map_err(|e| alloc::format!("read failed: {e:?}"))? else {
            return Err(alloc::format!("port {port} hung up after {got} bytes"));
        };
        t0.get_or_insert_with(clock::now_ns);
        for b in m.blocks() {
            for chunk in b.data().chunks(CHECK_WINDOW) {
                let first = *start.get_or_insert(u64::from(chunk[0]));
                let want = (total - got).min(chunk.len() as u64) as usize;
                let off = ((first + got) % PATTERN_PERIOD as u64) as usize;
                if chunk[..want] != expected[off..off + want] {
                    if bad == 0 {
                        let at = (0..want)
                            .find(|&k| chunk[k] != expected[off + k])
                            .unwrap_or(0);
                        first_bad = Some((got + at as u64, chunk[at], expected[off + at], want));
                    }
                    bad += 1;
                }
                got += want as u64;
            }
        }
    }
    let ns = clock::now_ns() - t0.unwrap_or(0);
    drop(st.close());
    let mut line = throughput_line("rx", port, size, got, ns);
    line.add("check", if bad == 0 { "ok" } else { "MISMATCH" })
        .add(
            "allocf",
            vcon::COUNTERS[id as usize].rx_alloc_failures.load(Relaxed),
        )
        .add(
            "retries",
            vcon::COUNTERS[id as usize].bufcall_retries.load(Relaxed),
        )
        .emit();
    if bad == 0 {
        Ok(())
    } else {
        let (at, got_b, want_b, len) = first_bad.unwrap_or_default();
        Err(alloc::format!(
            "{bad} windows of received data differ from the pattern; the first at stream \
             offset {at} (byte {got_b}, expected {want_b}, in a block of {len})"
        ))
    }
}

/// `pingpong:SIZE:COUNT[:PORT]`: COUNT round trips of SIZE bytes through a port whose host
/// side echoes; reports the median and 99th percentile, beside the doorbell floor. With
/// `stages`, the host also reports where the time went ([`super::stages`]).
pub fn pingpong(
    s: &Streams,
    v: &Vcon,
    size: usize,
    count: usize,
    port: &str,
    stages: bool,
) -> Result<(), String> {
    let (id, st) = open_named(v, port)?;
    let size = size.max(1);
    let mut ns = Vec::with_capacity(count);
    let (irqs0, polled0) = (v.stats.irqs.load(Relaxed), v.stats.polled.load(Relaxed));
    let mut trace = if stages {
        super::stages::StageTrace::begin(id, count)
    } else {
        None
    };
    for i in 0..count {
        let mut m = alloc(s, &st, size);
        m.data_mut().expect("fresh").fill(i as u8);
        let t0 = clock::ticks();
        send(&st, m).map_err(|e| alloc::format!("write failed: {e:?}"))?;
        let mut back = 0;
        while back < size {
            let Some(r) = recv(&st).map_err(|e| alloc::format!("read failed: {e:?}"))? else {
                return Err(alloc::format!("port {port} hung up"));
            };
            if r.blocks().flat_map(|b| b.data()).any(|&b| b != i as u8) {
                return Err(alloc::format!("round trip {i} came back changed"));
            }
            back += r.msgdsize();
        }
        let t1 = clock::ticks();
        ns.push(clock::ticks_to_ns(t1 - t0));
        if let Some(t) = &mut trace {
            t.record(t0, t1);
        }
    }
    drop(st.close());
    if let Some(t) = trace {
        t.finish();
    }
    let total_ns: u64 = ns.iter().sum();
    let (median, p99) = percentiles(&mut ns);
    let floor = super::doorbell_floor_ns(101);
    let mut line = Line::new("pingpong");
    line.add("port", port)
        .add("size", size)
        .add("count", count)
        .add("median_ns", median)
        .add("p99_ns", p99)
        .add("doorbell_ns", floor)
        .add("total_ns", total_ns)
        .add("irqs", v.stats.irqs.load(Relaxed) - irqs0)
        .add("polled", v.stats.polled.load(Relaxed) - polled0)
        .add("irq_cpu", vcon::LAST_IRQ_CPU.load(Relaxed));
    // The distribution, for plots: min, p10, p25, p75, p90, p99.9, max.
    for (key, per_mille) in [
        ("min_ns", 0),
        ("p10_ns", 100),
        ("p25_ns", 250),
        ("p75_ns", 750),
        ("p90_ns", 900),
        ("p999_ns", 999),
        ("max_ns", 1000),
    ] {
        line.add(key, quantile(&ns, per_mille));
    }
    // Every round trip, in the histogram the host pools over runs (guest_abi::histogram).
    let mut buckets = alloc::collections::BTreeMap::<u32, u64>::new();
    for &t in &ns {
        *buckets.entry(guest_abi::histogram::bucket(t)).or_default() += 1;
    }
    let hist: Vec<String> = buckets
        .iter()
        .map(|(i, c)| alloc::format!("{i}:{c}"))
        .collect();
    line.add("hist", hist.join(","));
    line.emit();
    Ok(())
}

/// How long `fairness` lets a port make no progress before it calls it stalled.
const STALL_NS: u64 = 2_000_000_000;

/// One port of `fairness`.
struct FairPort {
    name: String,
    id: u32,
    st: Stream,
    sent: u64,
    done_ns: u64,
    wait: Option<super::stream_io::BufWait>,
    /// The device removed the port: its stream hung up.
    hungup: bool,
}

impl FairPort {
    fn finished(&self, total: u64) -> bool {
        self.hungup || self.sent == total
    }
    fn can_send(&self, total: u64) -> bool {
        !self.finished(total) && self.st.canwrite() && self.wait.as_ref().is_none_or(|w| w.ready())
    }
}

/// `fairness:PORTS:TOTAL[:SIZE]`: TOTAL bytes to each of the first PORTS non-console ports
/// (0: all) at once, round robin in SIZE-byte messages (default 4 KiB); per-port throughput.
/// A port whose host side stops taking data throttles only itself: once no port has moved
/// for a while, the others have finished and the stuck ones are reported as stalled.
pub fn fairness(
    s: &Streams,
    v: &Vcon,
    ports: usize,
    total: u64,
    size: usize,
) -> Result<(), String> {
    let mut ps = Vec::new();
    for p in v.ports().into_iter().filter(|p| p.present && !p.console) {
        if ports != 0 && ps.len() == ports {
            break;
        }
        let (id, st) = open_named(v, &p.name)?;
        ps.push(FairPort {
            name: p.name,
            id,
            st,
            sent: 0,
            done_ns: 0,
            wait: None,
            hungup: false,
        });
    }
    if ps.is_empty() {
        return Err("no ports to write to".into());
    }
    let size = size.clamp(1, 1 << 20);
    let block = seeded_block(size);
    let t0 = clock::now_ns();
    let mut last_progress = t0;
    loop {
        let mut progress = false;
        for p in ps.iter_mut().filter(|p| p.can_send(total)) {
            let len = (total - p.sent).min(size as u64) as usize;
            match try_alloc(s, &p.st, len) {
                Ok(mut m) => {
                    m.data_mut().expect("fresh").copy_from_slice(&block[..len]);
                    match p.st.putmsg(m) {
                        Ok(()) => {}
                        Err(streams::Errno::EIO) if p.st.head().is_hungup() => {
                            p.hungup = true;
                            p.done_ns = clock::now_ns() - t0;
                            progress = true;
                            continue;
                        }
                        Err(e) => return Err(alloc::format!("{}: write failed: {e:?}", p.name)),
                    }
                    p.sent += len as u64;
                    p.wait = None;
                    progress = true;
                    if p.sent == total {
                        p.done_ns = clock::now_ns() - t0;
                    }
                }
                Err(w) => p.wait = Some(w),
            }
        }
        let now = clock::now_ns();
        if progress {
            last_progress = now;
        }
        if ps.iter().all(|p| p.finished(total)) || now - last_progress > STALL_NS {
            break;
        }
        if !progress {
            platform::idle_until_or(last_progress + STALL_NS, || {
                ps.iter()
                    .any(|p| p.can_send(total) || (!p.hungup && p.st.head().is_hungup()))
            });
            for p in ps
                .iter_mut()
                .filter(|p| !p.hungup && p.st.head().is_hungup())
            {
                p.hungup = true;
                p.done_ns = clock::now_ns() - t0;
            }
        }
    }
    for p in ps {
        let finished = !p.hungup && p.sent == total && v.drain(p.id, &p.st, DRAIN_TIMEOUT_NS);
        let ns = if finished || p.hungup {
            p.done_ns
        } else {
            clock::now_ns() - t0
        };
        let check = match (finished, p.hungup) {
            (true, _) => "ok",
            (false, true) => "hungup",
            (false, false) => "stalled",
        };
        Line::new("fairness")
            .add("port", &p.name)
            .add("size", size)
            .add("bytes", p.sent)
            .add("ns", ns)
            .add("mib_s", mib_per_s(p.sent, ns))
            .add("check", check)
            .add("ring_full", ring_full(p.id))
            .emit();
        if finished || p.hungup {
            drop(p.st.close());
        } else {
            // Closing would wait for output nobody takes: the port stays open.
            core::mem::forget(p.st);
        }
    }
    Ok(())
}

/// The head of a tx or rx result: port, size, bytes, time, MiB/s and the same run's memcpy
/// floor.
fn throughput_line(workload: &str, port: &str, size: usize, bytes: u64, ns: u64) -> Line {
    let mut line = Line::new(workload);
    line.add("port", port)
        .add("size", size)
        .add("bytes", bytes)
        .add("ns", ns)
        .add("mib_s", mib_per_s(bytes, ns))
        .add("memcpy_mib_s", memcpy_mib_s(size));
    line
}

/// Guest memcpy bandwidth (MiB/s) in SIZE-byte copies streaming through buffers larger than
/// the caches (16 MiB, less on a small heap): the floor beside throughputs.
pub fn memcpy_mib_s(size: usize) -> u64 {
    let size = size.clamp(64, 1 << 20);
    let span = (16usize << 20)
        .min(crate::platform::heap::size() / 8)
        .max(size);
    let (src, mut dst) = (alloc::vec![0x5au8; span], alloc::vec![0u8; span]);
    let chunks = span / size;
    let rounds = (4 * span / (chunks * size)).max(1);
    let t0 = clock::now_ns();
    for _ in 0..rounds {
        for k in 0..chunks {
            let r = k * size..(k + 1) * size;
            dst[r.clone()].copy_from_slice(core::hint::black_box(&src[r]));
        }
        core::hint::black_box(&mut dst);
    }
    mib_per_s((rounds * chunks * size) as u64, clock::now_ns() - t0)
}

/// `echo[:BYTES]`: opens every port and sends back whatever arrives (zero copy: the received
/// message goes down as it is). With BYTES, exits once every port echoed that many.
pub fn echo(v: &Vcon, limit: Option<u64>) -> Result<(), String> {
    let mut ports: Vec<(String, Stream, Option<Mblk>, u64, bool)> = Vec::new();
    let mut ids = Vec::new();
    for p in v.ports().into_iter().filter(|p| p.present) {
        let (id, st) = open_named(v, &p.name)?;
        ids.push(id);
        ports.push((p.name, st, None, 0, false));
    }
    println!("echo: {} port(s) open", ports.len());
    loop {
        let mut progress = false;
        for (_, st, held, echoed, eof) in ports.iter_mut() {
            if held.is_none() && !*eof {
                match poll(st).map_err(|e| alloc::format!("read failed: {e:?}"))? {
                    Poll::Data(m) => *held = Some(m),
                    Poll::Eof => *eof = true,
                    Poll::Nothing => {}
                }
            }
            if held.is_some() && st.canwrite() {
                let m = held.take().expect("checked");
                *echoed += m.msgdsize() as u64;
                st.putmsg(m)
                    .map_err(|e| alloc::format!("write failed: {e:?}"))?;
                progress = true;
            }
        }
        let done = |p: &(String, Stream, Option<Mblk>, u64, bool)| {
            p.4 || limit.is_some_and(|l| p.3 >= l && p.2.is_none())
        };
        if ports.iter().all(done) {
            break;
        }
        if !progress {
            idle_until(|| {
                ports.iter().any(|(_, st, held, _, _)| {
                    if held.is_some() {
                        st.canwrite()
                    } else {
                        st.readable()
                    }
                })
            });
        }
    }
    for ((name, st, _, echoed, _), id) in ports.into_iter().zip(ids) {
        let drained = v.drain(id, &st, DRAIN_TIMEOUT_NS);
        Line::new("echo")
            .add("port", &name)
            .add("bytes", echoed)
            .add("check", if drained { "ok" } else { "NOT-DRAINED" })
            .emit();
        drop(st.close());
    }
    Ok(())
}

/// The console part of `selftest`: open every port, then by name: round trips and a
/// stream both ways on `echo`, a checksummed stream to `sink`, a checked stream from
/// `source`. Returns whether everything passed.
pub fn selftest(s: &Streams, v: &Vcon) -> bool {
    let ports: Vec<_> = v.ports().into_iter().filter(|p| p.present).collect();
    vcon::early_print(&alloc::format!(
        "virtio-console: {} port(s): {} (STREAMS driver, EVENT_IDX)",
        ports.len(),
        describe(&ports)
    ));
    let mut ok = true;
    let t0 = clock::now_ns();
    for p in &ports {
        match open_named(v, &p.name) {
            Ok((_, st)) => drop(st.close()),
            Err(e) => {
                println!("selftest: {e}");
                ok = false;
            }
        }
    }
    Line::new("open-close")
        .add("count", ports.len())
        .add(
            "ns_each",
            (clock::now_ns() - t0) / ports.len().max(1) as u64,
        )
        .emit();
    let mut run = |what: &str, r: Result<(), String>| {
        if let Err(e) = r {
            println!("selftest: {what}: {e}");
            ok = false;
        }
    };
    if v.find("echo").is_some() {
        run("pingpong", pingpong(s, v, 64, 200, "echo", false));
        run("echo stream", echo_stream(s, v, 4096, 1 << 20, "echo"));
    }
    if v.find("sink").is_some() {
        run("tx", tx(s, v, 65536, 4 << 20, "sink"));
    }
    if v.find("source").is_some() {
        run("rx", rx(v, 16 * 1024, 4 << 20, "source"));
    }
    ok
}

fn describe(ports: &[vcon::PortInfo]) -> String {
    let mut s = String::new();
    for p in ports {
        if !s.is_empty() {
            s.push_str(", ");
        }
        s.push_str(&p.name);
        if p.console {
            s.push_str(" (console)");
        }
    }
    s
}

/// Sends TOTAL bytes in SIZE-byte messages through an echoing port while reading them back;
/// compares the CRC-32 of both directions.
pub fn echo_stream(
    s: &Streams,
    v: &Vcon,
    size: usize,
    total: u64,
    port: &str,
) -> Result<(), String> {
    let (_, st) = open_named(v, port)?;
    let block = seeded_block(size.max(8));
    let (mut out, mut back) = (crc32fast::Hasher::new(), crc32fast::Hasher::new());
    let (mut sent, mut got, mut seq) = (0u64, 0u64, 0u64);
    let mut wait = None;
    let t0 = clock::now_ns();
    while got < total {
        let mut progress = false;
        if sent < total
            && st.canwrite()
            && wait
                .as_ref()
                .is_none_or(|w: &super::stream_io::BufWait| w.ready())
        {
            let len = (total - sent).min(size as u64) as usize;
            match try_alloc(s, &st, len) {
                Ok(mut m) => {
                    let d = m.data_mut().expect("fresh");
                    d.copy_from_slice(&block[..len]);
                    d[..len.min(8)].copy_from_slice(&seq.to_le_bytes()[..len.min(8)]);
                    out.update(d);
                    st.putmsg(m)
                        .map_err(|e| alloc::format!("write failed: {e:?}"))?;
                    sent += len as u64;
                    seq += 1;
                    wait = None;
                    progress = true;
                }
                Err(w) => wait = Some(w),
            }
        }
        match poll(&st).map_err(|e| alloc::format!("read failed: {e:?}"))? {
            Poll::Data(m) => {
                for b in m.blocks() {
                    back.update(b.data());
                }
                got += m.msgdsize() as u64;
                progress = true;
            }
            Poll::Eof => return Err(alloc::format!("port {port} hung up after {got} bytes")),
            Poll::Nothing => {}
        }
        if !progress {
            idle_until(|| {
                st.readable()
                    || (sent < total && st.canwrite() && wait.as_ref().is_none_or(|w| w.ready()))
            });
        }
    }
    let ns = clock::now_ns() - t0;
    drop(st.close());
    let (a, b) = (out.finalize(), back.finalize());
    Line::new("echo-stream")
        .add("port", port)
        .add("size", size)
        .add("bytes", got)
        .add("ns", ns)
        .add("mib_s", mib_per_s(got, ns))
        .add(
            "check",
            if a == b && got == sent {
                "ok"
            } else {
                "MISMATCH"
            },
        )
        .emit();
    if a == b && got == sent {
        Ok(())
    } else {
        Err(alloc::format!(
            "sent {sent} bytes (crc {a:08x}), got {got} back (crc {b:08x})"
        ))
    }
}
