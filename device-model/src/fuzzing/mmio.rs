//! MMIO register sequences: any offset, width and value, in any order and any device state,
//! mixed with guest memory writes, the event loop's notifications and host traffic.

use super::{Input, PORTS, Rig};

/// Runs one input (see the module comment).
pub fn mmio(data: &[u8]) {
    let mut rig = Rig::new();
    let mut input = Input::new(data);
    while let Some(op) = input.op() {
        match op % 8 {
            // Any access to the register window and a little past it, 1 to 8 bytes wide.
            0 | 1 => {
                let offset = u64::from(input.u16() % 0x240);
                let len = usize::from(input.u8() % 8) + 1;
                let mut bytes = input.u64().to_le_bytes();
                if op % 8 == 0 {
                    rig.g.transport.write(offset, &bytes[..len]);
                } else {
                    rig.g.transport.read(offset, &mut bytes[..len]);
                }
            }
            // A 32-bit write to one of the registers (0x000..0x11c), the common case.
            2 => {
                let reg = u32::from(input.u8() % 0x48) * 4;
                let value = input.u32();
                rig.g.wr(reg, value);
            }
            // The usual steps, so that inputs reach the queues quickly.
            3 => {
                let features = input.u64();
                rig.g.negotiate(features);
            }
            4 => {
                let n = u16::from(input.u8() % 12);
                rig.g.start(n);
            }
            // Guest memory anywhere (rings included).
            5 => {
                let addr = u64::from(input.u32()) % super::MEM as u64;
                let bytes = input.bytes(32);
                rig.poke(addr, bytes);
            }
            6 => {
                let port = u32::from(input.u8()) % PORTS;
                let bytes = input.bytes(64);
                rig.host_write(port, bytes);
            }
            _ => {
                rig.host_drain(u32::from(input.u8()));
                rig.settle();
            }
        }
    }
    rig.settle();
}
