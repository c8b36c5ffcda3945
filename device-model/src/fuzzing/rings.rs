//! Descriptor chains and ring indices written by a hostile guest: loops, addresses outside
//! guest memory or across its end, lengths that overflow, wrong directions, indirect tables
//! of any shape, heads out of range and avail indices that jump, on running queues.

use super::{Input, PORTS, Rig};
use crate::console::defs::queue_count;
use crate::virtio::features::VERSION_1;

/// Where the fake guest puts queue `q` (descriptors; avail at +0x1000, used at +0x2000).
fn queue_base(q: u16) -> u64 {
    0x10_0000 + u64::from(q) * 0x4000
}

/// Where buffers go.
const HEAP: u64 = 0x20_0000;

fn addr(input: &mut Input<'_>) -> u64 {
    match input.u8() % 4 {
        0 => HEAP + u64::from(input.u16()) * 16,
        // Near the end of guest memory, so that buffers cross it.
        1 => (super::MEM as u64).wrapping_sub(u64::from(input.u16())),
        2 => input.u64(),
        _ => queue_base(u16::from(input.u8() % 12)) + u64::from(input.u16() % 0x3000),
    }
}

fn len(input: &mut Input<'_>) -> u32 {
    match input.u8() % 4 {
        0 => u32::from(input.u8()),
        1 => u32::from(input.u16()),
        2 => input.u32(),
        _ => u32::MAX - u32::from(input.u8()),
    }
}

/// Runs one input (see the module comment).
pub fn rings(data: &[u8]) {
    let mut rig = Rig::new();
    let mut input = Input::new(data);
    let features = input.u64();
    if !rig.g.negotiate(features | VERSION_1) {
        rig.settle();
        return;
    }
    let n = queue_count(PORTS) as u16;
    rig.g.start(n);
    let size = 256u16;
    let mut avail_idx = vec![0u16; usize::from(n)];
    while let Some(op) = input.op() {
        let q = u16::from(input.u8()) % n;
        let base = queue_base(q);
        match op % 8 {
            0 => {
                let slot = input.u16() % size;
                let (a, l, flags, next) =
                    (addr(&mut input), len(&mut input), input.u16(), input.u16());
                let mut d = [0u8; 16];
                d[0..8].copy_from_slice(&a.to_le_bytes());
                d[8..12].copy_from_slice(&l.to_le_bytes());
                // Mostly the three defined flags, sometimes anything.
                let flags = if flags & 0x8000 != 0 {
                    flags
                } else {
                    flags & 7
                };
                d[12..14].copy_from_slice(&flags.to_le_bytes());
                let next = if next & 0x8000 != 0 {
                    next
                } else {
                    next % size
                };
                d[14..16].copy_from_slice(&next.to_le_bytes());
                rig.poke(base + 16 * u64::from(slot), &d);
            }
            // Make a head available (mostly in range) and publish the index.
            1 => {
                let head = input.u16();
                let head = if head & 0x8000 != 0 {
                    head
                } else {
                    head % size
                };
                let i = &mut avail_idx[usize::from(q)];
                rig.poke(
                    base + 0x1000 + 4 + 2 * u64::from(*i % size),
                    &head.to_le_bytes(),
                );
                *i = i.wrapping_add(1);
                rig.poke(base + 0x1000 + 2, &i.to_le_bytes());
            }
            // An avail index that jumps anywhere.
            2 => {
                let i = input.u16();
                avail_idx[usize::from(q)] = i;
                rig.poke(base + 0x1000 + 2, &i.to_le_bytes());
            }
            // A notification, for queues that exist and queues that do not.
            3 => rig.h.queue_notified(u16::from(input.u8() % 16)),
            4 => rig.settle(),
            5 => {
                let port = u32::from(input.u8()) % PORTS;
                let bytes = input.bytes(200);
                rig.host_write(port, bytes);
            }
            // Indirect tables and buffer contents.
            6 => {
                let at = HEAP + u64::from(input.u16()) * 16;
                let bytes = input.bytes(64);
                rig.poke(at, bytes);
            }
            // Ring flags and event indices (avail flags, used_event, used idx and avail_event).
            _ => {
                let at = match input.u8() % 4 {
                    0 => base + 0x1000,
                    1 => base + 0x1000 + 4 + 2 * u64::from(size),
                    2 => base + 0x2000 + 2,
                    _ => base + 0x2000 + 4 + 8 * u64::from(size),
                };
                rig.poke(at, &input.u16().to_le_bytes());
                rig.host_drain(u32::from(input.u8()));
            }
        }
    }
    rig.settle();
}
