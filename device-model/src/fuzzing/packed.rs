//! The packed ring under a hostile driver: descriptors written anywhere in the ring with any
//! address, length, ID and flags (wrap bits that lie included), indirect tables of any shape,
//! event suppression structures of any value, and buffers answered in any order. The ring
//! may refuse (then it is broken and the run ends), but never panics, never loses count of
//! the buffers in flight, and answers every buffer it handed out.

use super::Input;
use crate::virtio::packed::{PackedRing, flags};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const RING: u64 = 0x1_0000;
const DRIVER_EVENT: u64 = 0x1000;
const DEVICE_EVENT: u64 = 0x1004;
/// Where indirect tables and buffers go.
const HEAP: u64 = 0x9_0000;
const MEM: usize = 1 << 20;

fn desc(input: &mut Input<'_>, size: u16) -> (u64, [u8; 16]) {
    let slot = input.u16() % size;
    let addr = match input.u8() % 3 {
        0 => HEAP + u64::from(input.u16()) * 16,
        1 => (MEM as u64).wrapping_sub(u64::from(input.u8())),
        _ => input.u64(),
    };
    let len = match input.u8() % 3 {
        0 => u32::from(input.u8()) * 16,
        1 => u32::from(input.u16()),
        _ => input.u32(),
    };
    let id = input.u16();
    // Mostly the flags a driver would write, sometimes any.
    let f = match input.u8() % 4 {
        0 => input.u16(),
        n => {
            (u16::from(n & 1 != 0) * flags::AVAIL) | (input.u8() as u16 & 0x7) | {
                if n == 2 { flags::USED } else { 0 }
            }
        }
    };
    let mut raw = [0u8; 16];
    raw[0..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&id.to_le_bytes());
    raw[14..16].copy_from_slice(&f.to_le_bytes());
    (RING + 16 * u64::from(slot), raw)
}

/// Runs one input (see the module comment).
pub fn packed(data: &[u8]) {
    let mut input = Input::new(data);
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).expect("guest memory");
    let size = 1 + input.u16() % 1024;
    let event_idx = input.u8() & 1 != 0;
    let Ok(mut ring) = PackedRing::new(
        &mem,
        size,
        GuestAddress(RING),
        GuestAddress(DRIVER_EVENT),
        GuestAddress(DEVICE_EVENT),
        event_idx,
    ) else {
        return;
    };
    let mut held: Vec<u16> = Vec::new();
    while let Some(op) = input.op() {
        match op % 6 {
            0 => {
                let (at, raw) = desc(&mut input, size);
                mem.write_slice(&raw, GuestAddress(at))
                    .expect("in the ring");
            }
            1 => {
                let at = HEAP + u64::from(input.u16()) * 16;
                let bytes = input.bytes(255);
                let _ = mem.write_slice(bytes, GuestAddress(at));
            }
            2 => match ring.pop(&mem) {
                Ok(Some(b)) => {
                    assert!(b.id < size, "an ID the ring accepted is below its size");
                    assert!(!held.contains(&b.id), "an ID is handed out once");
                    assert!(!b.elements.is_empty());
                    held.push(b.id);
                }
                Ok(None) => {}
                Err(_) => return, // broken: the device resets it
            },
            3 if !held.is_empty() => {
                let id = held.swap_remove(usize::from(input.u8()) % held.len());
                ring.add_used(&mem, id, input.u32())
                    .expect("a buffer in flight is answered");
            }
            3 => assert!(ring.add_used(&mem, input.u16(), 0).is_err()),
            4 => {
                let raw = input.u32().to_le_bytes();
                mem.write_slice(&raw, GuestAddress(DRIVER_EVENT))
                    .expect("in memory");
                let _ = ring.needs_notification(&mem).expect("in memory");
            }
            _ => ring
                .set_notification(&mem, input.u8() & 1 != 0)
                .expect("in memory"),
        }
        assert_eq!(ring.in_flight(), held.len());
        assert!(held.len() <= usize::from(size));
    }
}
