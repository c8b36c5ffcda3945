//! Round trips the host can see inside: the guest asks the host to stamp a port's data path
//! (the debug page's stage registers), reads its clock against the host's through a cell in
//! memory, records its own four stamps of each trip and sends them when done. The host matches both
//! sides and adds a `stages` row to the results. Without the debug page (a PVH boot under
//! another VMM) nothing is recorded.

use crate::cpu::{bootinfo, mmio};
use crate::drivers::vcon;
use crate::platform::clock;
use alloc::vec::Vec;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use guest_abi::debug::{
    self, CLOCK_DONE, CLOCK_ROUNDS, ClockBounds, ClockCell, TRIP_STAMPS_SIZE, TripStamps,
};
use guest_abi::layout::DEBUG_BASE;

/// How closely the clock rounds should relate the two clocks.
const CLOCK_GOAL_NS: u64 = 500;
/// Clock rounds done at least.
const MIN_ROUNDS: u64 = 16;
/// How long the clock rounds may take.
const SYNC_BUDGET_NS: u64 = 1_000_000_000;
/// Most trips recorded (the host keeps as many stamps of each point).
const MAX_TRIPS: usize = 16 * 1024;

/// The stamps of one port's round trips.
pub struct StageTrace {
    port: u32,
    trips: Vec<TripStamps>,
}

impl StageTrace {
    /// Asks the host to stamp port `port`; `None` when there is no debug page.
    pub fn begin(port: u32, trips: usize) -> Option<StageTrace> {
        if bootinfo::pvh_boot() {
            return None;
        }
        mmio::write_u32(DEBUG_BASE + debug::STAGES_BEGIN, port);
        sync_clocks();
        Some(StageTrace {
            port,
            trips: Vec::with_capacity(trips.min(MAX_TRIPS)),
        })
    }

    /// Records a trip that began at `start` and ended at `end` (ticks), with the driver's last
    /// transmit and interrupt stamps.
    pub fn record(&mut self, start: u64, end: u64) {
        if self.trips.len() < MAX_TRIPS {
            self.trips.push(TripStamps {
                start,
                avail: vcon::COUNTERS[self.port as usize].last_avail.load(Relaxed),
                irq: vcon::LAST_IRQ_TICKS.load(Relaxed),
                end,
            });
        }
    }

    /// Sends the records and asks for the host's result.
    pub fn finish(self) {
        let per_write = debug::CONSOLE_MAX / TRIP_STAMPS_SIZE;
        for chunk in self.trips.chunks(per_write) {
            let len = chunk.len() * TRIP_STAMPS_SIZE;
            // Identity-mapped: the records' address is their guest physical address.
            let Some(word) = debug::console_word(chunk.as_ptr() as u64, len) else {
                return;
            };
            mmio::write_u64(
                DEBUG_BASE + debug::STAGES_TRIPS,
                word,
                chunk.as_ptr().cast(),
            );
        }
        mmio::write_u32(DEBUG_BASE + debug::STAGES_END, self.trips.len() as u32);
    }
}

/// The clock cell: [`ClockCell`]'s four fields as atomics both sides touch. Static, so that a
/// host still answering after the guest gave up writes nothing else (the host's answering
/// thread ends before the next `STAGES_BEGIN` returns).
static CELL: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
const _: () = assert!(core::mem::size_of::<ClockCell>() == core::mem::size_of::<[u64; 4]>());

/// The guest's side of the clock rounds. It keeps the same bounds the host does and stops once
/// they relate the clocks to within [`CLOCK_GOAL_NS`] (after [`MIN_ROUNDS`]) or after
/// [`SYNC_BUDGET_NS`]: a busy host answers late, but a round where both sides ran at once is
/// enough. The host stops answering at the end, or by its own deadline.
fn sync_clocks() {
    let [guest, guest_seq, host, host_seq] = &CELL;
    for f in &CELL {
        f.store(0, Relaxed);
    }
    mmio::write_u64(
        DEBUG_BASE + debug::TSC_SYNC,
        CELL.as_ptr() as u64,
        CELL.as_ptr().cast(),
    );
    let began = clock::now_ns();
    let mut bounds = ClockBounds::UNKNOWN;
    let mut reading = clock::ticks_ordered();
    for round in 1..=CLOCK_ROUNDS {
        guest.store(reading, Relaxed);
        guest_seq.store(round, Release);
        let mut answered = true;
        while host_seq.load(Acquire) != round {
            if clock::now_ns() - began > SYNC_BUDGET_NS {
                answered = false;
                break;
            }
            core::hint::spin_loop();
        }
        if !answered {
            break; // `reading` still follows the last answer: it closes the rounds
        }
        let answer = host.load(Relaxed);
        let sent = reading;
        reading = clock::ticks_ordered();
        bounds.answered(sent, answer);
        bounds.read_after(answer, reading);
        let within_ns = bounds
            .offset()
            .map_or(u64::MAX, |(_, err)| clock::ticks_to_ns(err));
        if round >= MIN_ROUNDS
            && (within_ns <= CLOCK_GOAL_NS || clock::now_ns() - began > SYNC_BUDGET_NS)
        {
            break;
        }
    }
    guest.store(reading, Relaxed);
    guest_seq.store(CLOCK_DONE, Release);
}
