//! Where a round trip's time goes.
//!
//! While a guest asks for it, the device stamps four points of one port's data path with the
//! host's TSC ([`StageStamps`]); the guest stamps four of its own ([`TripStamps`]). A series of
//! clock readings taken across synchronous exits ([`ClockSync`]) bounds the offset between the
//! two TSCs. [`join`] then matches the stamps trip by trip and splits every round trip into
//! seven stages that add up to it exactly:
//!
//! | stage        | from                                   | to                                   |
//! |--------------|----------------------------------------|--------------------------------------|
//! | `send`       | the guest's write begins               | its driver made the buffer available |
//! | `kick`       | available                              | the device popped it                 |
//! | `to_backend` | popped                                 | the backend wrote it to its client   |
//! | `peer`       | written                                | the backend read the reply           |
//! | `to_ring`    | read                                   | the device filled a receive buffer and notified |
//! | `interrupt`  | notified                               | the guest's interrupt handler ran    |
//! | `to_reader`  | handler                                | the reader has the whole reply       |
//!
//! A stamp the other clock's uncertainty puts before the previous one counts as taken at the
//! same time (the stage is 0), so the stages never go negative and always sum to the trip.
//! When the guest found the reply without an interrupt, `interrupt` is 0. Stamps are bounded
//! ([`MAX_STAMPS`] per point): what a guest asks for cannot grow the host's memory.

use super::port::lock;
use guest_abi::debug::ClockBounds;
pub use guest_abi::debug::TripStamps;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Most stamps kept per point, and most trips and clock readings taken from a guest.
pub const MAX_STAMPS: usize = 1 << 16;

/// A point of the host's data path that is stamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostPoint {
    /// The device popped a transmit buffer of the port.
    Popped = 0,
    /// The backend is about to write transmitted bytes to its client.
    Written = 1,
    /// The backend read bytes from its client.
    Read = 2,
    /// The device returned receive buffers and is about to notify the driver.
    Notified = 3,
}

/// Points stamped by the host.
pub const HOST_POINTS: usize = 4;

/// The stage names, in order.
pub const STAGES: [&str; 7] = [
    "send",
    "kick",
    "to_backend",
    "peer",
    "to_ring",
    "interrupt",
    "to_reader",
];

/// The host's TSC.
pub fn host_ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc reads a counter; it touches no memory.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// The host's TSC, read after every earlier instruction is done (loads included).
pub fn host_ticks_ordered() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: lfence orders; rdtsc reads a counter. Neither touches memory.
        unsafe {
            core::arch::x86_64::_mm_lfence();
            core::arch::x86_64::_rdtsc()
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// A port's host-side stamps, taken only while armed.
#[derive(Default)]
pub struct StageStamps {
    armed: AtomicBool,
    stamps: [Mutex<Vec<u64>>; HOST_POINTS],
    /// Stamps not kept (past [`MAX_STAMPS`]).
    lost: AtomicU64,
}

impl StageStamps {
    /// Stamps `point` now, if armed.
    pub fn stamp(&self, point: HostPoint) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let now = host_ticks();
        let mut v = lock(&self.stamps[point as usize]);
        if v.len() < MAX_STAMPS {
            v.push(now);
        } else {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets earlier stamps and starts stamping.
    pub fn arm(&self) {
        for s in &self.stamps {
            lock(s).clear();
        }
        self.lost.store(0, Ordering::Relaxed);
        self.armed.store(true, Ordering::Release);
    }

    /// Stops stamping and hands over what was stamped (sorted) and how many were not kept.
    pub fn take(&self) -> ([Vec<u64>; HOST_POINTS], u64) {
        self.armed.store(false, Ordering::Release);
        let take = |i: usize| {
            let mut v = std::mem::take(&mut *lock(&self.stamps[i]));
            v.sort_unstable();
            v
        };
        (
            [take(0), take(1), take(2), take(3)],
            self.lost.load(Ordering::Relaxed),
        )
    }
}

/// Clock readings in order: pairs of (a guest TSC reading, the host's TSC when it saw that
/// reading), and the guest's reading after it saw the last answer.
#[derive(Debug, Default)]
pub struct ClockSync {
    pairs: Vec<(u64, u64)>,
    last: Option<u64>,
}

impl ClockSync {
    /// Records one answered reading.
    pub fn add(&mut self, guest: u64, host: u64) {
        if self.pairs.len() < MAX_STAMPS {
            self.pairs.push((guest, host));
        }
    }

    /// Readings answered.
    pub fn rounds(&self) -> usize {
        self.pairs.len()
    }

    /// Records the guest's reading after the last answer. A reading that is the last answered
    /// one itself (the guest stopped waiting for an answer that came after all) was taken
    /// before that answer and bounds nothing.
    pub fn close(&mut self, guest: u64) {
        if self.pairs.last().is_some_and(|&(g, _)| g == guest) {
            return;
        }
        self.last = Some(guest);
    }

    /// The offset to add to a guest stamp to get host time, and how far off it may be (half
    /// the width of the interval every reading allows). Guest reading i was taken before the
    /// host saw it (offset <= host_i - guest_i), reading i+1 after the guest saw the answer
    /// (offset >= host_i - guest_{i+1}). `None` without a reading on each side or when they
    /// contradict each other.
    pub fn offset(&self) -> Option<(i64, u64)> {
        let mut b = ClockBounds::UNKNOWN;
        let after = self.pairs.iter().skip(1).map(|p| p.0).chain(self.last);
        for (&(guest, host), after) in self.pairs.iter().zip(after.map(Some).chain([None])) {
            b.answered(guest, host);
            if let Some(a) = after {
                b.read_after(host, a);
            }
        }
        b.offset()
    }
}

/// What [`join`] found, in ticks, over the trips whose every stamp was found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Breakdown {
    /// Trips the guest reported.
    pub trips: usize,
    /// Trips matched with host stamps.
    pub joined: usize,
    /// Each of [`STAGES`] in a typical trip: the mean over the trips within 10% of the median
    /// one's length (so that they add up to the median within 10%, which the medians of the
    /// stages need not when trips vary, nor trips taken by rank when they fall in two modes).
    pub stages: [u64; 7],
    /// Median round trip of the joined trips.
    pub round_trip: u64,
}

/// The first stamp of `v` at or after `from` and at or before `to`, from `*at` on; moves `*at`
/// past it. Stamps before `from` are skipped for good (they belong to earlier trips).
fn first(v: &[u64], at: &mut usize, from: u64, to: u64) -> Option<u64> {
    while *at < v.len() && v[*at] < from {
        *at += 1;
    }
    let t = *v.get(*at).filter(|&&t| t <= to)?;
    *at += 1;
    Some(t)
}

/// Matches the guest's `trips` with the host's stamps (`host[point]`, sorted), converting guest
/// stamps with `offset` known to within `slack` ticks.
pub fn join(
    trips: &[TripStamps],
    host: &[Vec<u64>; HOST_POINTS],
    offset: i64,
    slack: u64,
) -> Breakdown {
    let to_host = |t: u64| (i128::from(t) + i128::from(offset)).clamp(0, u64::MAX.into()) as u64;
    let mut at = [0usize; HOST_POINTS];
    // (round trip, its stages) of each matched trip.
    let mut joined: Vec<(u64, [u64; 7])> = Vec::new();
    for t in trips {
        let (start, avail, irq, end) = (
            to_host(t.start),
            to_host(t.avail),
            to_host(t.irq),
            to_host(t.end),
        );
        if end < start || avail < start || avail > end {
            continue;
        }
        let mut chain = [start, avail, 0, 0, 0, 0, 0, end];
        let mut from = avail.saturating_sub(slack);
        let mut found = true;
        for (p, slot) in (2..6).enumerate() {
            match first(&host[p], &mut at[p], from, end.saturating_add(slack)) {
                Some(s) => {
                    chain[slot] = s;
                    from = s;
                }
                None => {
                    found = false;
                    break;
                }
            }
        }
        if !found {
            continue;
        }
        // An interrupt handler that ran before the device notified woke nobody for this reply.
        chain[6] = if irq.saturating_add(slack) >= chain[5] && irq <= end {
            irq
        } else {
            chain[5]
        };
        for i in 1..chain.len() {
            chain[i] = chain[i].clamp(chain[i - 1], end);
        }
        debug_assert_eq!(chain[7] - chain[0], end - start);
        joined.push((
            end - start,
            core::array::from_fn(|k| chain[k + 1] - chain[k]),
        ));
    }
    let mut b = Breakdown {
        trips: trips.len(),
        joined: joined.len(),
        ..Default::default()
    };
    if joined.is_empty() {
        return b;
    }
    joined.sort_unstable_by_key(|j| j.0);
    let median = joined[joined.len() / 2].0;
    b.round_trip = median;
    // The trips within a tenth of the median's length (the median one among them): their
    // stages add up to within 10% of it however the other trips spread.
    let (lo, hi) = (median - median / 10, median.saturating_add(median / 10));
    let band = &joined[joined.partition_point(|j| j.0 < lo)..joined.partition_point(|j| j.0 <= hi)];
    debug_assert!(!band.is_empty());
    for k in 0..STAGES.len() {
        let sum: u128 = band.iter().map(|j| u128::from(j.1[k])).sum();
        b.stages[k] = (sum / band.len() as u128) as u64;
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trip(start: u64, avail: u64, irq: u64, end: u64) -> TripStamps {
        TripStamps {
            start,
            avail,
            irq,
            end,
        }
    }

    #[test]
    fn the_clock_offset_is_bounded_by_both_directions_of_each_exit() {
        // The host runs 1000 ticks ahead; each exit takes 10 ticks in and 20 out.
        let mut s = ClockSync::default();
        let mut g = 5000;
        for _ in 0..4 {
            s.add(g, g + 1000 + 10);
            g += 30;
        }
        let (offset, err) = s.offset().unwrap();
        assert!((offset - 1000).unsigned_abs() <= err, "{offset} ± {err}");
        assert_eq!(err, 15);
        assert_eq!(ClockSync::default().offset(), None);
        // One answered reading and the one after it are enough.
        let mut one = ClockSync::default();
        one.add(100, 1100);
        assert_eq!(one.offset(), None);
        one.close(120);
        assert_eq!(one.offset(), Some((990, 10)));
        // A guest that gave up on an answer that came after all ends with the reading it sent.
        let mut late = ClockSync::default();
        late.add(100, 1100);
        late.add(130, 1135);
        late.close(130);
        assert_eq!(
            late.offset(),
            Some((985, 15)),
            "bounded by the answered rounds"
        );
        // The host's second stamp is earlier than its first: no offset fits both.
        let mut bad = ClockSync::default();
        bad.add(100, 1000);
        bad.add(150, 500);
        assert_eq!(bad.offset(), None);
    }

    #[test]
    fn stages_split_each_trip_and_add_up_to_it() {
        // Guest clock 100 ticks behind the host's.
        let off = 100;
        let trips = [trip(0, 10, 75, 90), trip(200, 215, 290, 300)];
        let host = [
            vec![130, 330],      // popped
            vec![140, 150, 340], // written (a second write in trip 0 is ignored)
            vec![160, 360],      // read
            vec![170, 375],      // notified
        ];
        let b = join(&trips, &host, off, 0);
        assert_eq!((b.trips, b.joined), (2, 2));
        // Trip 0: send 10, kick 20, to_backend 10, peer 20, to_ring 10, interrupt 5, to_reader 15.
        // Trip 1: send 15, kick 15, to_backend 10, peer 20, to_ring 15, interrupt 15, to_reader 10.
        // The median trip is trip 1 (100 ticks); trip 0 (90) is within a tenth of it, so the
        // typical trip is their mean (rounded down).
        assert_eq!(b.stages, [12, 17, 10, 20, 12, 10, 12]);
        assert_eq!(b.round_trip, 100);
    }

    #[test]
    fn a_reply_found_without_an_interrupt_and_stamps_out_of_order_stay_whole() {
        // The interrupt stamp is older than the notification: the stage is 0. The host's
        // pop lies (within the slack) before the guest's avail: it counts as the same time.
        let trips = [trip(0, 10, 5, 100)];
        let host = [vec![8], vec![30], vec![60], vec![80]];
        let b = join(&trips, &host, 0, 5);
        assert_eq!(b.joined, 1);
        assert_eq!(b.stages, [10, 0, 20, 30, 20, 0, 20]);
        assert_eq!(b.stages.iter().sum::<u64>(), b.round_trip);
    }

    #[test]
    fn the_stages_are_those_of_the_trips_around_the_median_and_add_up_to_it() {
        // 40 trips of 100 ticks spent in kick and 20 of 1000 spent in peer, interleaved: the
        // medians of the stages would be kick 100 (or 0) and peer 0, adding up to nowhere near
        // the median trip; the trips around the median are all of the first kind.
        let mut trips = Vec::new();
        let mut host: [Vec<u64>; HOST_POINTS] = Default::default();
        let mut t = 0;
        for i in 0..60u64 {
            let slow = i % 3 == 2;
            let (kick, peer) = if slow { (0, 1000) } else { (100, 0) };
            let (pop, written) = (t + kick, t + kick);
            let read = written + peer;
            host[0].push(pop);
            host[1].push(written);
            host[2].push(read);
            host[3].push(read);
            trips.push(trip(t, t, 0, read));
            t = read + 10;
        }
        let b = join(&trips, &host, 0, 0);
        assert_eq!((b.joined, b.round_trip), (60, 100));
        assert_eq!(b.stages, [0, 100, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn a_typical_trip_adds_up_to_the_median_when_trips_fall_in_two_modes() {
        // A busy host: half the trips take about 100 ticks, half about 1000, and the median
        // one lies between. Trips picked by rank around it would mix both modes (their mean
        // about 550); the typical trip is made of trips close to the median in length.
        let mut trips = Vec::new();
        let mut host: [Vec<u64>; HOST_POINTS] = Default::default();
        let mut t = 0;
        for i in 0..101u64 {
            let kick = match i {
                50 => 500,
                i if i % 2 == 0 => 100 + i,
                i => 1000 + i,
            };
            host[0].push(t + kick);
            host[1].push(t + kick);
            host[2].push(t + kick);
            host[3].push(t + kick);
            trips.push(trip(t, t, 0, t + kick));
            t += kick + 10;
        }
        let b = join(&trips, &host, 0, 0);
        assert_eq!((b.joined, b.round_trip), (101, 500));
        let sum: u64 = b.stages.iter().sum();
        assert!((450..=550).contains(&sum), "{b:?}");
    }

    #[test]
    fn stamps_at_the_ends_of_the_clock_do_not_overflow() {
        // What a guest sends is not to be trusted: the largest stamps, a large slack and
        // offsets that push stamps below zero or past the top of the clock.
        let trips = [
            trip(0, 0, u64::MAX, u64::MAX),
            trip(u64::MAX, u64::MAX, u64::MAX, u64::MAX),
        ];
        let host = [
            vec![u64::MAX],
            vec![u64::MAX],
            vec![u64::MAX],
            vec![u64::MAX],
        ];
        for offset in [i64::MIN, -1, 0, 1, i64::MAX] {
            let b = join(&trips, &host, offset, u64::MAX);
            assert!(b.joined <= 2);
        }
        let mut s = ClockSync::default();
        s.add(u64::MAX, 0);
        s.add(0, u64::MAX);
        s.close(u64::MAX);
        let _ = s.offset();
    }

    #[test]
    fn trips_without_host_stamps_are_not_joined() {
        let trips = [trip(0, 10, 50, 100), trip(200, 210, 250, 300)];
        // Trip 0 has no read stamp; trip 1 has all four.
        let host = [vec![20, 220], vec![30, 230], vec![240], vec![245]];
        let b = join(&trips, &host, 0, 0);
        assert_eq!((b.trips, b.joined), (2, 1));
        assert_eq!(b.round_trip, 100);
        let none = join(&[], &host, 0, 0);
        assert_eq!((none.joined, none.round_trip), (0, 0));
    }

    #[test]
    fn stamps_are_kept_only_while_armed_and_are_bounded() {
        let s = StageStamps::default();
        s.stamp(HostPoint::Popped);
        s.arm();
        s.stamp(HostPoint::Read);
        s.stamp(HostPoint::Read);
        let (v, lost) = s.take();
        assert_eq!(v.iter().map(Vec::len).collect::<Vec<_>>(), [0, 0, 2, 0]);
        assert_eq!(lost, 0);
        s.stamp(HostPoint::Read);
        assert_eq!(s.take().0[2].len(), 0, "disarmed by take");
        s.arm();
        for _ in 0..MAX_STAMPS + 3 {
            s.stamp(HostPoint::Written);
        }
        let (v, lost) = s.take();
        assert_eq!((v[1].len(), lost), (MAX_STAMPS, 3));
    }
}
