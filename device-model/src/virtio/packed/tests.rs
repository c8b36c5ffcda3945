//! The packed ring against a driver written here from the specification, on mock guest
//! memory: wrap-around, chains, indirect tables, out-of-order completion, lying flags, every
//! malformed case, and event suppression.

use super::*;
use vm_memory::GuestMemoryMmap;

const RING: u64 = 0x1000;
const DRIVER_EVENT: u64 = 0x3000;
const DEVICE_EVENT: u64 = 0x3004;
const DATA: u64 = 0x4000;
const MEM: usize = 0x10000;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap()
}

fn ring(mem: &GuestMemoryMmap, size: u16, event_idx: bool) -> PackedRing {
    PackedRing::new(
        mem,
        size,
        GuestAddress(RING),
        GuestAddress(DRIVER_EVENT),
        GuestAddress(DEVICE_EVENT),
        event_idx,
    )
    .unwrap()
}

fn write_desc(mem: &GuestMemoryMmap, at: u64, addr: u64, len: u32, id: u16, flags: u16) {
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&id.to_le_bytes());
    raw[14..16].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(at)).unwrap();
}

fn read_desc(mem: &GuestMemoryMmap, at: u64) -> (u32, u16, u16) {
    let mut raw = [0u8; 16];
    mem.read_slice(&mut raw, GuestAddress(at)).unwrap();
    (
        u32::from_le_bytes(raw[8..12].try_into().unwrap()),
        u16::from_le_bytes([raw[12], raw[13]]),
        u16::from_le_bytes([raw[14], raw[15]]),
    )
}

/// A driver as the specification describes one (§2.7.13, §2.7.14).
struct Driver {
    size: u16,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    /// Ring descriptors each buffer ID took.
    lengths: Vec<u16>,
}

impl Driver {
    fn new(size: u16) -> Self {
        Driver {
            size,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            lengths: vec![0; usize::from(size)],
        }
    }

    fn avail_flags(&self) -> u16 {
        if self.avail_wrap {
            flags::AVAIL
        } else {
            flags::USED
        }
    }

    /// Makes buffer `id` of `elements` (address, length, writable) available, its first
    /// descriptor last.
    fn offer(&mut self, mem: &GuestMemoryMmap, id: u16, elements: &[(u64, u32, bool)]) {
        let first = (self.next_avail, self.avail_flags());
        let n = elements.len();
        for (i, &(addr, len, write)) in elements.iter().enumerate() {
            let mut f = self.avail_flags() | if write { flags::WRITE } else { 0 };
            if i + 1 < n {
                f |= flags::NEXT;
            }
            let at = RING + 16 * u64::from(self.next_avail);
            // The first descriptor's flags are written last.
            write_desc(mem, at, addr, len, id, if i == 0 { 0 } else { f });
            if i == 0 {
                self.lengths[usize::from(id)] = n as u16;
            }
            self.next_avail += 1;
            if self.next_avail == self.size {
                self.next_avail = 0;
                self.avail_wrap = !self.avail_wrap;
            }
        }
        let mut f0 = first.1 | if elements[0].2 { flags::WRITE } else { 0 };
        if n > 1 {
            f0 |= flags::NEXT;
        }
        mem.write_slice(
            &f0.to_le_bytes(),
            GuestAddress(RING + 16 * u64::from(first.0) + 14),
        )
        .unwrap();
    }

    /// The next used buffer: (id, length written), if the device answered one.
    fn take_used(&mut self, mem: &GuestMemoryMmap) -> Option<(u16, u32)> {
        let (len, id, f) = read_desc(mem, RING + 16 * u64::from(self.next_used));
        let used = f & flags::USED != 0;
        let avail = f & flags::AVAIL != 0;
        if used != self.used_wrap || avail != self.used_wrap {
            return None;
        }
        let n = self.lengths[usize::from(id)];
        assert!(n > 0, "the device used buffer {id}, which was not offered");
        self.lengths[usize::from(id)] = 0;
        self.next_used += n;
        if self.next_used >= self.size {
            self.next_used -= self.size;
            self.used_wrap = !self.used_wrap;
        }
        assert_eq!(
            f & flags::WRITE != 0,
            len > 0,
            "WRITE says whether it wrote"
        );
        Some((id, len))
    }
}

/// A small deterministic generator.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn a_buffer_goes_round_and_an_empty_ring_has_nothing() {
    let m = mem();
    let mut r = ring(&m, 8, false);
    let mut d = Driver::new(8);
    assert_eq!(r.pop(&m).unwrap(), None, "a zeroed ring offers nothing");
    d.offer(&m, 5, &[(DATA, 100, false)]);
    let b = r.pop(&m).unwrap().unwrap();
    assert_eq!(b.id, 5);
    assert_eq!(
        b.elements,
        vec![Element {
            addr: GuestAddress(DATA),
            len: 100,
            write: false
        }]
    );
    assert_eq!(r.pop(&m).unwrap(), None);
    assert_eq!(d.take_used(&m), None);
    r.add_used(&m, 5, 0).unwrap();
    assert_eq!(d.take_used(&m), Some((5, 0)));
    assert_eq!(r.in_flight(), 0);
}

#[test]
fn chains_wrap_around_the_ring_many_times_in_order() {
    let m = mem();
    for size in [1u16, 2, 3, 4, 7] {
        let mut r = ring(&m, size, false);
        let mut d = Driver::new(size);
        for i in 0..1000u32 {
            let n = 1 + (i as usize % usize::from(size).min(3));
            let id = (i % u32::from(size)) as u16;
            let elements: Vec<(u64, u32, bool)> = (0..n)
                .map(|k| (DATA + 64 * k as u64, 10 + k as u32, k + 1 == n))
                .collect();
            d.offer(&m, id, &elements);
            let b = r.pop(&m).unwrap().expect("available");
            assert_eq!(b.id, id, "size {size}, buffer {i}");
            assert_eq!(b.elements.len(), n);
            assert!(b.elements.last().unwrap().write);
            assert_eq!(r.pop(&m).unwrap(), None, "size {size}, buffer {i}");
            r.add_used(&m, id, i + 1).unwrap();
            assert_eq!(
                d.take_used(&m),
                Some((id, i + 1)),
                "size {size}, buffer {i}"
            );
        }
    }
}

#[test]
fn buffers_complete_out_of_order_and_their_ids_come_back() {
    let m = mem();
    let size = 8u16;
    let mut r = ring(&m, size, false);
    let mut d = Driver::new(size);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut free: Vec<u16> = (0..size).collect();
    let mut held: Vec<u16> = Vec::new();
    let mut room = size; // ring descriptors not held by a buffer in flight
    for _ in 0..5000 {
        // Offer while there is room, in chains of 1 or 2, with any free ID.
        if !free.is_empty() && room >= 2 && !next(&mut seed).is_multiple_of(3) {
            let id = free.swap_remove(next(&mut seed) as usize % free.len());
            let n = 1 + (next(&mut seed) % 2) as usize;
            let elements: Vec<(u64, u32, bool)> =
                (0..n).map(|k| (DATA + 16 * k as u64, 8, true)).collect();
            d.offer(&m, id, &elements);
            room -= n as u16;
            let b = r.pop(&m).unwrap().expect("available");
            assert_eq!((b.id, b.elements.len()), (id, n));
            held.push(id);
        } else if !held.is_empty() {
            // Complete any held buffer; the driver reads answers in the order written.
            let id = held.swap_remove(next(&mut seed) as usize % held.len());
            r.add_used(&m, id, u32::from(id) + 1).unwrap();
            let (got, len) = d.take_used(&m).expect("answered");
            assert_eq!((got, len), (id, u32::from(id) + 1));
            room = size - held.iter().map(|&h| d.lengths[usize::from(h)]).sum::<u16>();
            free.push(id);
        }
    }
}

#[test]
fn descriptors_whose_flags_lie_about_the_wrap_are_not_taken() {
    let m = mem();
    let mut r = ring(&m, 4, false);
    // The device's wrap counter is 1: available means AVAIL=1 and USED=0.
    for f in [
        0,
        flags::AVAIL | flags::USED,
        flags::USED,
        flags::NEXT | flags::WRITE,
    ] {
        write_desc(&m, RING, DATA, 8, 0, f);
        assert_eq!(r.pop(&m).unwrap(), None, "flags {f:#x}");
    }
    // One lap later the counter is 0: last lap's AVAIL=1 USED=0 no longer means available.
    let mut d = Driver::new(4);
    for id in 0..4 {
        d.offer(&m, id, &[(DATA, 8, false)]);
        r.pop(&m).unwrap().unwrap();
        r.add_used(&m, id, 0).unwrap();
        d.take_used(&m).unwrap();
    }
    write_desc(&m, RING, DATA, 8, 0, flags::AVAIL);
    assert_eq!(
        r.pop(&m).unwrap(),
        None,
        "a stale descriptor of the last lap"
    );
    write_desc(&m, RING, DATA, 8, 0, flags::USED);
    assert_eq!(
        r.pop(&m).unwrap().unwrap().id,
        0,
        "AVAIL=0 USED=1 in the second lap"
    );
}

#[test]
fn an_indirect_table_gives_its_elements_and_bad_tables_break_the_ring() {
    let m = mem();
    let table = DATA + 0x1000;
    write_desc(&m, table, DATA, 10, 99, flags::NEXT | flags::AVAIL); // flags ignored but WRITE
    write_desc(&m, table + 16, DATA + 0x100, 20, 0, 0);
    write_desc(&m, table + 32, DATA + 0x200, 30, 0, flags::WRITE);
    let mut r = ring(&m, 4, false);
    write_desc(&m, RING, table, 48, 2, flags::AVAIL | flags::INDIRECT);
    let b = r.pop(&m).unwrap().unwrap();
    assert_eq!(b.id, 2);
    let lens: Vec<(u32, bool)> = b.elements.iter().map(|e| (e.len, e.write)).collect();
    assert_eq!(lens, [(10, false), (20, false), (30, true)]);
    r.add_used(&m, 2, 30).unwrap();

    for (len, addr) in [
        (0u32, table),
        (24, table),
        (16 * 5, table),
        (32, MEM as u64 - 16),
    ] {
        let mut r = ring(&m, 4, false);
        write_desc(&m, RING, addr, len, 0, flags::AVAIL | flags::INDIRECT);
        let e = r.pop(&m).unwrap_err();
        assert!(
            matches!(e, RingError::BadIndirect(_) | RingError::Memory(_)),
            "{len} bytes at {addr:#x}: {e}"
        );
    }
}

/// A descriptor as written: address, length, buffer ID, flags.
type RawDesc = (u64, u32, u16, u16);

#[test]
fn every_malformed_ring_is_an_error_not_a_panic() {
    let m = mem();
    let avail = flags::AVAIL;
    let cases: Vec<(&str, Vec<RawDesc>, RingError)> = vec![
        ("id too big", vec![(DATA, 8, 4, avail)], RingError::BadId(4)),
        (
            "a chain over the whole ring",
            (0..4).map(|_| (DATA, 8, 0, avail | flags::NEXT)).collect(),
            RingError::ChainTooLong,
        ),
        (
            "a chain whose second descriptor is not available",
            vec![(DATA, 8, 0, avail | flags::NEXT), (DATA, 8, 0, 0)],
            RingError::BrokenChain,
        ),
        (
            "an indirect descriptor inside a chain",
            vec![
                (DATA, 8, 0, avail | flags::NEXT),
                (DATA, 16, 0, avail | flags::INDIRECT),
            ],
            RingError::IndirectInChain,
        ),
        (
            "an indirect descriptor that chains on",
            vec![(DATA, 16, 0, avail | flags::INDIRECT | flags::NEXT)],
            RingError::IndirectInChain,
        ),
    ];
    for (what, descs, want) in cases {
        let m2 = mem();
        let mut r = ring(&m2, 4, false);
        for (i, &(addr, len, id, f)) in descs.iter().enumerate() {
            write_desc(&m2, RING + 16 * i as u64, addr, len, id, f);
        }
        assert_eq!(r.pop(&m2), Err(want), "{what}");
    }
    // The same ID twice while the first is in flight.
    let mut r = ring(&m, 4, false);
    let mut d = Driver::new(4);
    d.offer(&m, 1, &[(DATA, 8, false)]);
    r.pop(&m).unwrap().unwrap();
    write_desc(&m, RING + 16, DATA, 8, 1, avail);
    assert_eq!(r.pop(&m), Err(RingError::IdInFlight(1)));
    // An answer for a buffer never taken.
    assert_eq!(r.add_used(&m, 3, 0), Err(RingError::NotInFlight(3)));
    assert_eq!(r.add_used(&m, 400, 0), Err(RingError::NotInFlight(400)));
}

#[test]
fn a_queue_must_fit_and_be_aligned() {
    let m = mem();
    let new = |size, desc, drv, dev| {
        PackedRing::new(
            &m,
            size,
            GuestAddress(desc),
            GuestAddress(drv),
            GuestAddress(dev),
            false,
        )
    };
    assert!(matches!(
        new(0, RING, DRIVER_EVENT, DEVICE_EVENT),
        Err(RingError::Layout(_))
    ));
    assert!(matches!(
        new(MAX_SIZE + 1, RING, DRIVER_EVENT, DEVICE_EVENT),
        Err(RingError::Layout(_))
    ));
    assert!(matches!(
        new(4, RING + 8, DRIVER_EVENT, DEVICE_EVENT),
        Err(RingError::Layout(_))
    ));
    assert!(matches!(
        new(4, RING, DRIVER_EVENT + 2, DEVICE_EVENT),
        Err(RingError::Layout(_))
    ));
    assert!(matches!(
        new(MAX_SIZE, RING, DRIVER_EVENT, DEVICE_EVENT),
        Err(RingError::Memory(_))
    ));
    assert!(matches!(
        new(4, RING, MEM as u64, DEVICE_EVENT),
        Err(RingError::Memory(_))
    ));
}

fn set_driver_event(m: &GuestMemoryMmap, off: u16, wrap: bool, f: u16) {
    let off_wrap = off | if wrap { 1 << 15 } else { 0 };
    let mut raw = [0u8; 4];
    raw[0..2].copy_from_slice(&off_wrap.to_le_bytes());
    raw[2..4].copy_from_slice(&f.to_le_bytes());
    m.write_slice(&raw, GuestAddress(DRIVER_EVENT)).unwrap();
}

/// Offers, takes and answers one buffer with ID `id`.
fn one_round(m: &GuestMemoryMmap, r: &mut PackedRing, d: &mut Driver, id: u16) {
    d.offer(m, id, &[(DATA, 8, true)]);
    r.pop(m).unwrap().unwrap();
    r.add_used(m, id, 8).unwrap();
    d.take_used(m).unwrap();
}

#[test]
fn the_driver_decides_which_used_buffers_it_hears_of() {
    let m = mem();
    let mut r = ring(&m, 4, false);
    let mut d = Driver::new(4);
    set_driver_event(&m, 0, false, event::DISABLE);
    one_round(&m, &mut r, &mut d, 0);
    assert!(!r.needs_notification(&m).unwrap(), "disabled");
    set_driver_event(&m, 0, false, event::ENABLE);
    assert!(
        r.needs_notification(&m).unwrap(),
        "enabled: what was used since"
    );
    assert!(!r.needs_notification(&m).unwrap(), "nothing new since");
    one_round(&m, &mut r, &mut d, 1);
    assert!(r.needs_notification(&m).unwrap());

    // EVENT_IDX: only when the named descriptor (offset, wrap) is used, across wraps.
    let mut r = ring(&m, 4, true);
    let mut d = Driver::new(4);
    set_driver_event(&m, 2, true, event::DESC);
    one_round(&m, &mut r, &mut d, 0); // used at 0
    assert!(!r.needs_notification(&m).unwrap());
    one_round(&m, &mut r, &mut d, 1); // used at 1
    assert!(!r.needs_notification(&m).unwrap());
    one_round(&m, &mut r, &mut d, 2); // used at 2: the one named
    assert!(r.needs_notification(&m).unwrap());
    one_round(&m, &mut r, &mut d, 3); // used at 3: the named one is behind, heard of already
    assert!(!r.needs_notification(&m).unwrap());
    set_driver_event(&m, 1, false, event::DESC); // position 1 of the next lap
    one_round(&m, &mut r, &mut d, 0); // used at 0, second lap
    assert!(!r.needs_notification(&m).unwrap());
    one_round(&m, &mut r, &mut d, 1); // used at 1, second lap
    assert!(r.needs_notification(&m).unwrap());
    // Without EVENT_IDX negotiated, DESC is read as enabled.
    let mut r = ring(&m, 4, false);
    let mut d = Driver::new(4);
    set_driver_event(&m, 3, true, event::DESC);
    one_round(&m, &mut r, &mut d, 0);
    assert!(r.needs_notification(&m).unwrap());
}

#[test]
fn the_device_says_which_available_buffers_it_wants_to_hear_of() {
    let m = mem();
    let read = |m: &GuestMemoryMmap| {
        let mut raw = [0u8; 4];
        m.read_slice(&mut raw, GuestAddress(DEVICE_EVENT)).unwrap();
        (
            u16::from_le_bytes([raw[0], raw[1]]),
            u16::from_le_bytes([raw[2], raw[3]]),
        )
    };
    let mut r = ring(&m, 4, false);
    r.set_notification(&m, false).unwrap();
    assert_eq!(read(&m).1, event::DISABLE);
    r.set_notification(&m, true).unwrap();
    assert_eq!(read(&m).1, event::ENABLE);
    let mut r = ring(&m, 4, true);
    let mut d = Driver::new(4);
    for id in 0..3 {
        one_round(&m, &mut r, &mut d, id);
    }
    r.set_notification(&m, true).unwrap();
    assert_eq!(
        read(&m),
        (3 | 1 << 15, event::DESC),
        "the next descriptor it will read"
    );
    one_round(&m, &mut r, &mut d, 3);
    r.set_notification(&m, true).unwrap();
    assert_eq!(read(&m), (0, event::DESC), "wrapped: the counter is 0 now");
}
