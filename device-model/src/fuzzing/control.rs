//! Control-queue traffic from a hostile guest (messages for ports that do not exist, every
//! event with any value, short and oversized messages, names where none belong), with the
//! control receive ring, the ports' rings and the host side (open, resize, hot-remove)
//! moving at the same time.

use super::{Input, PORTS, Rig};
use crate::console::defs::{
    CONTROL_LEN, CTRL_RX_QUEUE, CTRL_TX_QUEUE, queue_count, rx_queue, tx_queue,
};

/// Scratch buffers the harness reuses (the fake guest's own allocator never frees).
const SCRATCH: u64 = 0x30_0000;
const SLOT: u64 = 1024;
const SLOTS: u64 = 256;

/// Runs one input (see the module comment).
pub fn control(data: &[u8]) {
    let mut rig = Rig::new();
    let mut input = Input::new(data);
    if !rig.g.negotiate(u64::MAX) {
        return;
    }
    rig.g.start(queue_count(PORTS) as u16);
    let mut slot = 0u64;
    let mut next_buf = || {
        slot = (slot + 1) % SLOTS;
        SCRATCH + slot * SLOT
    };
    // Room for the device's own control messages from the start.
    for _ in 0..8 {
        let at = next_buf();
        rig.g.post(CTRL_RX_QUEUE, &[(at, 64, true)], false);
    }
    rig.g.kick(CTRL_RX_QUEUE);
    while let Some(op) = input.op() {
        match op % 8 {
            // One well-formed header (id, event, value) and up to 40 more bytes.
            0 | 1 => {
                let id = match input.u8() % 4 {
                    0 => u32::from(input.u8()) % (PORTS + 1),
                    1 => input.u32(),
                    _ => u32::from(input.u8() % 4),
                };
                let event = if op % 8 == 0 {
                    input.u16() % 9
                } else {
                    input.u16()
                };
                let value = input.u16();
                let mut msg = Vec::with_capacity(CONTROL_LEN + 40);
                msg.extend_from_slice(&id.to_le_bytes());
                msg.extend_from_slice(&event.to_le_bytes());
                msg.extend_from_slice(&value.to_le_bytes());
                msg.extend_from_slice(input.bytes(40));
                send(&mut rig, next_buf(), &msg);
            }
            // Any bytes at all (short messages, several headers in one buffer).
            2 => {
                let bytes = input.bytes(64).to_vec();
                send(&mut rig, next_buf(), &bytes);
            }
            3 => {
                let len = u32::from(input.u16() % 600);
                let at = next_buf();
                rig.g.used(CTRL_RX_QUEUE);
                rig.g.post(CTRL_RX_QUEUE, &[(at, len, true)], false);
                rig.g.kick(CTRL_RX_QUEUE);
            }
            // A port's data rings.
            4 => {
                let port = u32::from(input.u8()) % PORTS;
                let at = next_buf();
                let q = rx_queue(port);
                rig.g.used(q);
                rig.g
                    .post(q, &[(at, u32::from(input.u16() % 1024), true)], false);
                rig.g.kick(q);
            }
            5 => {
                let port = u32::from(input.u8()) % PORTS;
                let bytes = input.bytes(128).to_vec();
                let at = next_buf();
                rig.g.write(at, &bytes);
                let q = tx_queue(port);
                rig.g.used(q);
                rig.g.post(q, &[(at, bytes.len() as u32, false)], false);
                rig.g.kick(q);
            }
            // The host side: data, open and close, resize, hot-remove.
            6 => {
                let id = u32::from(input.u8() % 4);
                match input.u8() % 5 {
                    0 => rig.host_write(id, input.bytes(64)),
                    1 => rig.host_drain(id),
                    2 => rig.h.set_host_open(id, input.u8() & 1 == 1),
                    3 => rig.h.set_size(id, input.u16(), input.u16()),
                    _ => {
                        let _ = rig.h.remove_port(id);
                    }
                }
            }
            _ => rig.settle(),
        }
    }
    rig.settle();
}

/// Sends `msg` on the control transmit queue (reclaiming what the device used first).
fn send(rig: &mut Rig, at: u64, msg: &[u8]) {
    rig.g.write(at, msg);
    rig.g.used(CTRL_TX_QUEUE);
    if rig
        .g
        .post(CTRL_TX_QUEUE, &[(at, msg.len() as u32, false)], false)
        .is_some()
    {
        rig.g.kick(CTRL_TX_QUEUE);
    }
}
