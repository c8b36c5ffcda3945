//! The virtio console's wire format (virtio 1.2 §5.3), as both sides speak it: the device model
//! (`device-model`) and the guest's driver (`guest-driver`, `vcon`) compile this one definition,
//! so a change reaches both (virtio-bindings has no console definitions).

/// virtio device ID of a console.
pub const CONSOLE_DEVICE_ID: u32 = 3;

/// VIRTIO_CONSOLE_F_SIZE: `cols` and `rows` in the configuration space are valid.
pub const F_SIZE: u64 = 1 << 0;
/// VIRTIO_CONSOLE_F_MULTIPORT: several ports and the control queues.
pub const F_MULTIPORT: u64 = 1 << 1;
/// VIRTIO_CONSOLE_F_EMERG_WRITE: `emerg_wr` in the configuration space works.
pub const F_EMERG_WRITE: u64 = 1 << 2;

/// The most ports a device of ours has (port 0 included): 2 + 2 × 31 queues fill the 64 that a
/// virtio-mmio device may have.
pub const MAX_PORTS: u32 = 31;

/// Configuration space offsets (`struct virtio_console_config`).
pub mod config {
    /// `le16 cols`.
    pub const COLS: u64 = 0;
    /// `le16 rows`.
    pub const ROWS: u64 = 2;
    /// `le32 max_nr_ports`.
    pub const MAX_NR_PORTS: u64 = 4;
    /// `le32 emerg_wr`: a write of its first byte prints that byte on port 0.
    pub const EMERG_WR: u64 = 8;
    /// Size of the configuration space.
    pub const LEN: usize = 12;
}

/// Byte `i` of the `pattern` backend's stream is `i % PATTERN_PERIOD` (a prime, so that no
/// power-of-two buffer size lines up with it and a lost or repeated buffer shows).
pub const PATTERN_PERIOD: usize = 251;

/// High-water mark of a port's stream head, on either side: what the device's holds for a slow
/// backend, what the guest's holds for a slow reader, before the writer waits.
pub const PORT_HEAD_HIWAT: u64 = 512 * 1024;
/// Low-water mark of a port's stream head, on either side: where a waiting writer goes on.
pub const PORT_HEAD_LOWAT: u64 = 128 * 1024;

/// Queue index of the control receiveq (device to driver) with MULTIPORT.
pub const CTRL_RX_QUEUE: u16 = 2;
/// Queue index of the control transmitq (driver to device) with MULTIPORT.
pub const CTRL_TX_QUEUE: u16 = 3;

/// Index of port `port`'s receiveq (host to guest).
pub fn rx_queue(port: u32) -> u16 {
    if port == 0 { 0 } else { (2 + 2 * port) as u16 }
}

/// Index of port `port`'s transmitq (guest to host).
pub fn tx_queue(port: u32) -> u16 {
    rx_queue(port) + 1
}

/// What a queue index is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueRole {
    /// A port's receiveq.
    Rx(u32),
    /// A port's transmitq.
    Tx(u32),
    /// The control receiveq.
    CtrlRx,
    /// The control transmitq.
    CtrlTx,
}

/// The role of queue `index` (the layout is the same whether or not MULTIPORT is used).
pub fn queue_role(index: u16) -> QueueRole {
    match index {
        0 => QueueRole::Rx(0),
        1 => QueueRole::Tx(0),
        CTRL_RX_QUEUE => QueueRole::CtrlRx,
        CTRL_TX_QUEUE => QueueRole::CtrlTx,
        i if i % 2 == 0 => QueueRole::Rx(u32::from(i - 2) / 2),
        i => QueueRole::Tx(u32::from(i - 3) / 2),
    }
}

/// Number of queues of a device with `ports` ports (MULTIPORT layout).
pub fn queue_count(ports: u32) -> usize {
    2 + 2 * ports as usize
}

/// Control events (`struct virtio_console_control.event`).
pub mod event {
    /// Driver: ready for PORT_ADDs (value 1) or failed (0).
    pub const DEVICE_READY: u16 = 0;
    /// Device: a port exists.
    pub const DEVICE_ADD: u16 = 1;
    /// Device: a port is gone.
    pub const DEVICE_REMOVE: u16 = 2;
    /// Driver: a port is set up (value 1) or failed (0).
    pub const PORT_READY: u16 = 3;
    /// Device: this port is a console.
    pub const CONSOLE_PORT: u16 = 4;
    /// Device: the console's size changed (followed by cols and rows).
    pub const RESIZE: u16 = 5;
    /// Either side: the port was opened (1) or closed (0) on the sender's side.
    pub const PORT_OPEN: u16 = 6;
    /// Device: the port's name follows.
    pub const PORT_NAME: u16 = 7;
}

/// Size of a control message header.
pub const CONTROL_LEN: usize = 8;

/// A control message (`struct virtio_console_control`, little endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Control {
    /// The port it is about.
    pub id: u32,
    /// One of [`event`].
    pub event: u16,
    /// The event's value.
    pub value: u16,
}

impl Control {
    /// The 8 bytes on the wire.
    pub fn encode(&self) -> [u8; CONTROL_LEN] {
        let mut b = [0u8; CONTROL_LEN];
        b[0..4].copy_from_slice(&self.id.to_le_bytes());
        b[4..6].copy_from_slice(&self.event.to_le_bytes());
        b[6..8].copy_from_slice(&self.value.to_le_bytes());
        b
    }

    /// Parses the first 8 bytes; `None` if there are fewer.
    pub fn decode(b: &[u8]) -> Option<Control> {
        let b: &[u8; CONTROL_LEN] = b.get(..CONTROL_LEN)?.try_into().ok()?;
        Some(Control {
            id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            event: u16::from_le_bytes([b[4], b[5]]),
            value: u16::from_le_bytes([b[6], b[7]]),
        })
    }
}

/// The payload of a RESIZE message, in the spec's order (`struct virtio_console_resize`:
/// cols, then rows).
pub fn resize_payload(cols: u16, rows: u16) -> [u8; 4] {
    let mut b = [0u8; 4];
    b[0..2].copy_from_slice(&cols.to_le_bytes());
    b[2..4].copy_from_slice(&rows.to_le_bytes());
    b
}

/// The columns and rows of a RESIZE message's payload; `None` if it is too short.
pub fn decode_resize(b: &[u8]) -> Option<(u16, u16)> {
    let b: &[u8; 4] = b.get(..4)?.try_into().ok()?;
    Some((
        u16::from_le_bytes([b[0], b[1]]),
        u16::from_le_bytes([b[2], b[3]]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_layout_follows_the_spec() {
        assert_eq!((rx_queue(0), tx_queue(0)), (0, 1));
        assert_eq!((rx_queue(1), tx_queue(1)), (4, 5));
        assert_eq!((rx_queue(30), tx_queue(30)), (62, 63));
        assert_eq!(queue_count(MAX_PORTS), 64);
        for p in 0..MAX_PORTS {
            assert_eq!(queue_role(rx_queue(p)), QueueRole::Rx(p));
            assert_eq!(queue_role(tx_queue(p)), QueueRole::Tx(p));
        }
        assert_eq!(queue_role(2), QueueRole::CtrlRx);
        assert_eq!(queue_role(3), QueueRole::CtrlTx);
    }

    #[test]
    fn control_messages_round_trip_little_endian() {
        let c = Control {
            id: 0x0102_0304,
            event: event::PORT_NAME,
            value: 0xabcd,
        };
        assert_eq!(c.encode(), [4, 3, 2, 1, 7, 0, 0xcd, 0xab]);
        assert_eq!(Control::decode(&c.encode()), Some(c));
        assert_eq!(Control::decode(&[0; 7]), None);
    }

    #[test]
    fn resize_payloads_round_trip_cols_first() {
        assert_eq!(resize_payload(80, 24), [80, 0, 24, 0]);
        assert_eq!(decode_resize(&resize_payload(300, 7)), Some((300, 7)));
        assert_eq!(decode_resize(&[1, 2, 3]), None);
    }
}
