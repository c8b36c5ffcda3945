//! The debug page's stage registers (`guest_abi::debug::STAGES_*`, `TSC_SYNC`): a guest asks
//! for one port's round trips to be stamped, reads its clock against the host's through shared
//! memory (a short-lived thread here answers), runs its round trips and sends its own stamps;
//! the result is a `stages` row of the run's results (see `device_model::console::stages` for
//! the stages and how they are matched).

use crate::results::GuestResult;
use device_model::console::stages::{self, ClockSync, MAX_STAMPS, STAGES, TripStamps, join};
use device_model::console::{ConsoleHandle, PortShared};
use guest_abi::debug::{
    CLOCK_DEADLINE_MS, CLOCK_DONE, CLOCK_ROUNDS, ClockCell, TRIP_STAMPS_SIZE, console_buffer,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

/// One guest's request, from `STAGES_BEGIN` to `STAGES_END`.
struct Session {
    port: Arc<PortShared>,
    /// The thread answering the guest's clock readings.
    clock: Option<JoinHandle<ClockSync>>,
    trips: Vec<TripStamps>,
    /// Records that were not in guest memory or past [`MAX_STAMPS`].
    refused: u64,
}

/// The stage registers' state.
#[derive(Default)]
pub struct StageRegisters {
    /// The console and the TSC rate (kHz), once both exist.
    console: OnceLock<(ConsoleHandle, u32)>,
    session: Mutex<Option<Session>>,
}

impl StageRegisters {
    /// Connects the registers to the console whose ports they stamp.
    pub fn attach(&self, console: ConsoleHandle, tsc_khz: u32) {
        let _ = self.console.set((console, tsc_khz));
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Option<Session>> {
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `STAGES_BEGIN`: starts stamping port `id` (an unknown port is ignored).
    pub fn begin(&self, id: u32) {
        let Some(port) = self.console.get().and_then(|(c, _)| c.port(id).cloned()) else {
            return;
        };
        let mut s = self.session();
        if let Some(old) = s.take() {
            old.port.stages.take();
            // One clock thread at a time, whatever a guest asks (it waits here, not the host).
            if let Some(t) = old.clock {
                let _ = t.join();
            }
        }
        port.stages.arm();
        *s = Some(Session {
            port,
            clock: None,
            trips: Vec::new(),
            refused: 0,
        });
    }

    /// `TSC_SYNC`: answers the guest's clock readings through the cell at `addr` (from a
    /// thread: the guest runs meanwhile). A thread that cannot start answers nothing, and the
    /// result says the clocks are unknown.
    pub fn sync(&self, mem: &GuestMemoryMmap, addr: u64) {
        let mut g = self.session();
        let Some(s) = &mut *g else { return };
        if s.clock.is_some() {
            return;
        }
        let mem = mem.clone();
        s.clock = thread::Builder::new()
            .name("stage-clock".into())
            .spawn(move || {
                // Started by a vCPU thread: off its CPU, or the guest and this take turns.
                crate::affinity::leave_vcpu_cpus();
                answer_clock(&mem, GuestAddress(addr))
            })
            .ok();
    }

    /// `STAGES_TRIPS`: records in guest memory.
    pub fn trips(&self, mem: &GuestMemoryMmap, word: u64) {
        let mut g = self.session();
        let Some(s) = &mut *g else { return };
        let (addr, len) = console_buffer(word);
        let n = len / TRIP_STAMPS_SIZE;
        let mut buf = vec![0u8; n * TRIP_STAMPS_SIZE];
        if mem.read_slice(&mut buf, GuestAddress(addr)).is_err() {
            s.refused += n as u64;
            return;
        }
        for rec in buf.chunks_exact(TRIP_STAMPS_SIZE) {
            if s.trips.len() >= MAX_STAMPS {
                s.refused += 1;
                continue;
            }
            let rec: &[u8; TRIP_STAMPS_SIZE] = rec.try_into().expect("exact chunks");
            s.trips.push(TripStamps::from_bytes(rec));
        }
    }

    /// `STAGES_END`: stops stamping and returns the `stages` result (ns).
    pub fn end(&self) -> Option<GuestResult> {
        let s = self.session().take()?;
        let (host, lost) = s.port.stages.take();
        let sync = s.clock.and_then(|t| t.join().ok()).unwrap_or_default();
        let khz = self.console.get().map_or(0, |c| c.1);
        let mut r = GuestResult::default();
        let mut add = |k: &str, v: String| r.fields.push((k.to_string(), v));
        add("workload", "stages".into());
        add("port", s.port.config.name.clone());
        add("trips", s.trips.len().to_string());
        add("clock_rounds", sync.rounds().to_string());
        match sync.offset() {
            None => add("problem", "clocks-disagree".into()),
            Some(_) if khz == 0 => add("problem", "tsc-rate-unknown".into()),
            Some((offset, err)) => {
                let ns = |ticks: u64| {
                    u64::try_from(u128::from(ticks) * 1_000_000 / u128::from(khz))
                        .unwrap_or(u64::MAX)
                };
                let b = join(&s.trips, &host, offset, err);
                add("joined", b.joined.to_string());
                add("clock_ns", ns(err).to_string());
                add("tsc_offset", offset.to_string());
                let each = b.stages.map(ns);
                for (name, t) in STAGES.iter().zip(each) {
                    add(&format!("{name}_ns"), t.to_string());
                }
                let sum = each.iter().fold(0u64, |a, &t| a.saturating_add(t));
                add("sum_ns", sum.to_string());
                add("round_trip_ns", ns(b.round_trip).to_string());
                // Stages across the two clocks are then only as good as the clocks.
                if err.saturating_mul(20) > b.round_trip {
                    add("problem", "clocks-loose".into());
                }
            }
        }
        if lost + s.refused > 0 {
            add("lost", (lost + s.refused).to_string());
        }
        Some(r)
    }
}

/// The host's side of the clock rounds (see [`ClockCell`]): spins on the cell until every
/// round is answered, the deadline passes or the cell leaves guest memory.
fn answer_clock(mem: &GuestMemoryMmap, cell: GuestAddress) -> ClockSync {
    let field = |off: usize| cell.checked_add(off as u64);
    let (Some(guest), Some(guest_seq), Some(host), Some(host_seq)) = (
        field(std::mem::offset_of!(ClockCell, guest)),
        field(std::mem::offset_of!(ClockCell, guest_seq)),
        field(std::mem::offset_of!(ClockCell, host)),
        field(std::mem::offset_of!(ClockCell, host_seq)),
    ) else {
        return ClockSync::default();
    };
    let deadline = Instant::now() + Duration::from_millis(CLOCK_DEADLINE_MS);
    let mut sync = ClockSync::default();
    let mut answered = 0u64;
    let mut spins = 0u32;
    let mut progress = Instant::now();
    let mut stalled = false;
    while answered < CLOCK_ROUNDS {
        let Ok(seq) = mem.load::<u64>(guest_seq, Ordering::Acquire) else {
            break;
        };
        if seq == answered {
            if stalled {
                // A guest that stopped taking part gets a look every 100 µs, not a core.
                if Instant::now() >= deadline {
                    break;
                }
                thread::sleep(Duration::from_micros(100));
            } else {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(1024) {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    stalled = now - progress > Duration::from_millis(1);
                }
                std::hint::spin_loop();
            }
            continue;
        }
        let now = stages::host_ticks_ordered();
        stalled = false;
        progress = Instant::now();
        let Ok(g) = mem.load::<u64>(guest, Ordering::Relaxed) else {
            break;
        };
        if seq == CLOCK_DONE {
            sync.close(g);
            break;
        }
        if seq != answered + 1 {
            break; // not the protocol: what was answered so far stands
        }
        if mem.store(now, host, Ordering::Relaxed).is_err()
            || mem.store(seq, host_seq, Ordering::Release).is_err()
        {
            break;
        }
        sync.add(g, now);
        answered = seq;
    }
    sync
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_model::console::ConsoleRuntime;
    use device_model::console::backend::PortSpec;
    use device_model::console::stages::HostPoint;
    use guest_abi::debug::console_word;

    fn registers() -> (StageRegisters, ConsoleRuntime, GuestMemoryMmap) {
        let spec = PortSpec::parse("name=e,backend=null").unwrap();
        let rt = ConsoleRuntime::start(&[spec], &[]).unwrap();
        let r = StageRegisters::default();
        r.attach(rt.handle(), 1_000_000); // 1 tick = 1 ns
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        (r, rt, mem)
    }

    /// The guest's side of two clock rounds and the end (its clock is the host's: offset 0).
    fn clock_rounds(r: &StageRegisters, mem: &GuestMemoryMmap) {
        let cell = GuestAddress(0x800);
        r.sync(mem, cell.0);
        for round in 1..=3u64 {
            let now = stages::host_ticks_ordered();
            mem.store(now, cell, Ordering::Relaxed).unwrap();
            if round == 3 {
                mem.store(CLOCK_DONE, cell.unchecked_add(8), Ordering::Release)
                    .unwrap();
                break;
            }
            mem.store(round, cell.unchecked_add(8), Ordering::Release)
                .unwrap();
            let answered = || mem.load::<u64>(cell.unchecked_add(24), Ordering::Acquire);
            while answered().unwrap() != round {
                std::hint::spin_loop();
            }
        }
    }

    /// Port 0's data path, stamped once at each point, in order.
    fn stamp_every_point(rt: &ConsoleRuntime) {
        let port = rt.handle().port(0).unwrap().clone();
        for p in [
            HostPoint::Popped,
            HostPoint::Written,
            HostPoint::Read,
            HostPoint::Notified,
        ] {
            port.stages.stamp(p);
        }
    }

    #[test]
    fn stamps_a_guest_makes_up_give_a_row_not_a_panic() {
        let spec = PortSpec::parse("name=e,backend=null").unwrap();
        let rt = ConsoleRuntime::start(&[spec], &[]).unwrap();
        let r = StageRegisters::default();
        r.attach(rt.handle(), 1); // a slow clock: tick counts become large times
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        r.begin(0);
        clock_rounds(&r, &mem);
        stamp_every_point(&rt);
        // A trip from the clock's start to its end, around the host's stamps.
        let mut bytes = Vec::new();
        for w in [
            0,
            0,
            u64::MAX,
            u64::MAX,
            u64::MAX,
            u64::MAX,
            u64::MAX,
            u64::MAX,
        ] {
            bytes.extend_from_slice(&u64::to_le_bytes(w));
        }
        mem.write_slice(&bytes, GuestAddress(0x100)).unwrap();
        r.trips(&mem, console_word(0x100, bytes.len()).unwrap());
        let res = r.end().expect("a session");
        assert_eq!(field(&res, "trips"), "2");
        assert_eq!(field(&res, "joined"), "1", "{res:?}");
        assert_eq!(field(&res, "sum_ns"), u64::MAX.to_string());
    }

    fn field<'a>(r: &'a GuestResult, k: &str) -> &'a str {
        r.get(k).unwrap_or_else(|| panic!("no {k} in {r:?}"))
    }

    #[test]
    fn whatever_order_a_guest_writes_them_in_nothing_breaks() {
        let (r, _rt, mem) = registers();
        assert!(r.end().is_none(), "no session");
        r.trips(&mem, console_word(0x100, 64).unwrap());
        r.begin(7); // no such port
        assert!(r.end().is_none());
        r.begin(0);
        // Outside guest memory, and a cell that is never answered.
        r.trips(&mem, console_word(0xfff0, 0xff00).unwrap());
        r.sync(&mem, 0xffff_fff0);
        r.sync(&mem, 0x200); // a second sync in one session is ignored
        r.begin(0); // starts over (waits for the clock thread)
        let res = r.end().expect("a session");
        assert_eq!(field(&res, "problem"), "clocks-disagree");
        assert_eq!(field(&res, "trips"), "0");
    }

    #[test]
    fn trips_from_guest_memory_are_matched_with_the_ports_stamps() {
        let (r, rt, mem) = registers();
        r.begin(0);
        // The guest's side of two clock rounds, answered by the thread.
        clock_rounds(&r, &mem);
        let start = stages::host_ticks_ordered();
        stamp_every_point(&rt);
        let end = stages::host_ticks_ordered();
        let trip = TripStamps {
            start,
            avail: start,
            irq: end,
            end,
        };
        let mut bytes = Vec::new();
        for w in [trip.start, trip.avail, trip.irq, trip.end] {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        mem.write_slice(&bytes, GuestAddress(0x100)).unwrap();
        r.trips(&mem, console_word(0x100, bytes.len()).unwrap());
        let res = r.end().expect("a session");
        assert_eq!(field(&res, "joined"), "1", "{res:?}");
        let sum: u64 = STAGES
            .iter()
            .map(|k| field(&res, &format!("{k}_ns")).parse::<u64>().unwrap())
            .sum();
        assert_eq!(sum.to_string(), field(&res, "round_trip_ns"));
        assert_eq!(field(&res, "sum_ns"), field(&res, "round_trip_ns"));
        assert!(res.get("lost").is_none());
    }
}
