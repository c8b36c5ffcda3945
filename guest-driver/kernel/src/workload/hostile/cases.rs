//! The hostile cases, in the order they run.

use super::raw::{BUF, NEXT, QSIZE, Raw, WRITE, rx_queue, tx_queue};
use super::{Case, Outcome, Ports};
use crate::drivers::vcon::event;
use crate::drivers::virtio_mmio as reg;
use crate::platform::clock;
use alloc::format;
use alloc::string::String;

use Outcome::{Ignored, NeedsReset, Returned};

/// Every case.
pub const ALL: &[Case] = &[
    online("descriptor-loop", &[NeedsReset], descriptor_loop),
    online("next-out-of-range", &[NeedsReset], next_out_of_range),
    online("head-out-of-range", &[NeedsReset], head_out_of_range),
    online("avail-index-jump", &[NeedsReset], avail_index_jump),
    online("address-outside-memory", &[Returned, NeedsReset], |d, p| {
        bad_tx(d, p, 1 << 40, 64, 0)
    }),
    online(
        "address-across-memory-end",
        &[Returned, NeedsReset],
        |d, p| bad_tx(d, p, p.mem_size - 16, 64, 0),
    ),
    online("address-wraps-around", &[Returned, NeedsReset], |d, p| {
        bad_tx(d, p, u64::MAX - 8, 64, 0)
    }),
    online("length-u32-max", &[Returned, NeedsReset], |d, p| {
        let a = d.q[usize::from(tx_queue(p.sink))].buf(0);
        bad_tx(d, p, a, u32::MAX, 0)
    }),
    online(
        "lengths-sum-overflows",
        &[Returned, NeedsReset],
        lengths_sum_overflows,
    ),
    online(
        "transmit-buffer-device-writable",
        &[Returned, NeedsReset],
        |d, p| {
            let a = d.q[usize::from(tx_queue(p.sink))].buf(0);
            bad_tx(d, p, a, 64, WRITE)
        },
    ),
    online(
        "receive-buffer-read-only",
        &[Returned, NeedsReset],
        receive_read_only,
    ),
    setup("queue-size-0", &[Ignored, NeedsReset], |d, p| {
        bad_size(d, p, 0)
    }),
    setup(
        "queue-size-not-power-of-2",
        &[Ignored, NeedsReset],
        |d, p| bad_size(d, p, 12),
    ),
    setup("queue-size-over-maximum", &[Ignored, NeedsReset], |d, p| {
        bad_size(d, p, 1 << 15)
    }),
    setup("ring-outside-memory", &[NeedsReset], |d, p| {
        bad_ring(d, p, 1 << 40)
    }),
    setup("ring-across-memory-end", &[NeedsReset], |d, p| {
        bad_ring(d, p, p.mem_size - 64)
    }),
    setup(
        "features-after-features-ok",
        &[Ignored],
        features_after_features_ok,
    ),
    online("notify-missing-queues", &[Ignored], notify_missing_queues),
    online(
        "control-for-missing-ports",
        &[Ignored],
        control_for_missing_ports,
    ),
    online(
        "config-writes-out-of-range",
        &[Ignored],
        config_writes_out_of_range,
    ),
];

const fn online(
    name: &'static str,
    allowed: &'static [Outcome],
    run: fn(&mut Raw, &Ports) -> Result<Outcome, String>,
) -> Case {
    Case {
        name,
        online: true,
        allowed,
        run,
    }
}

const fn setup(
    name: &'static str,
    allowed: &'static [Outcome],
    run: fn(&mut Raw, &Ports) -> Result<Outcome, String>,
) -> Case {
    Case {
        name,
        online: false,
        allowed,
        run,
    }
}

/// Bytes a hostile transmit buffer holds: the host must never see them.
const MARK: &[u8] = b"HOSTILE!";

/// Kicks queue `q` and waits for the device's answer: the buffer back (its length), or
/// DEVICE_NEEDS_RESET.
fn answer(d: &mut Raw, q: u16) -> Result<(Outcome, u32), String> {
    d.kick(q.into());
    d.wait("the device to return the buffer or ask for a reset", |d| {
        if let Some((_, len)) = d.q[usize::from(q)].take_used() {
            return Some((Returned, len));
        }
        d.needs_reset().then_some((NeedsReset, 0))
    })
}

/// Gives the device a moment, then reads whether it asked for a reset.
fn settled(d: &mut Raw) -> Outcome {
    let until = clock::now_ns() + 20_000_000;
    while clock::now_ns() < until {
        core::hint::spin_loop();
    }
    if d.needs_reset() { NeedsReset } else { Ignored }
}

fn mark(d: &Raw, q: u16, i: u16) -> u64 {
    let a = d.q[usize::from(q)].buf(i);
    // SAFETY: buffer `i` of queue `q` is ours and BUF (more than MARK) bytes long.
    unsafe { core::ptr::copy_nonoverlapping(MARK.as_ptr(), a as *mut u8, MARK.len()) };
    a
}

/// One transmit descriptor (`addr`, `len`, `flags`) on the sink port.
fn bad_tx(d: &mut Raw, p: &Ports, addr: u64, len: u32, flags: u16) -> Result<Outcome, String> {
    let q = tx_queue(p.sink);
    mark(d, q, 0);
    d.q[usize::from(q)].set_desc(0, addr, len, flags, 0);
    d.q[usize::from(q)].offer(0);
    let (o, n) = answer(d, q)?;
    if o == Returned && n != 0 {
        return Err(format!(
            "the device says it wrote {n} bytes into a transmit buffer"
        ));
    }
    Ok(o)
}

/// Descriptors 0 and 1 name each other.
fn descriptor_loop(d: &mut Raw, p: &Ports) -> Result<Outcome, String> {
    let q = tx_queue(p.sink);
    let (a, b) = (mark(d, q, 0), mark(d, q, 1));
    let r = &mut d.q[usize::from(q)];
    r.set_desc(0, a, MARK.len() as u32, NEXT, 1);
    r.set_desc(1, b, MARK.len() as u32, NEXT, 0);
    r.offer(0);
    answer(d, q).map(|o| o.0)
}

fn next_out_of_range(d: &mut Raw, p: &Ports) -> Result<Outcome, String> {
    let q = tx_queue(p.sink);
    let a = mark(d, q, 0);
    let r = &mut d.q[usize::from(q)];
    r.set_desc(0, a, MARK.len() as u32, NEXT, QSIZE + 3);
    r.offer(0);
    answer(d, q).map(|o| o.0)
}

fn head_out_of_range(d: &mut Raw, p: &Ports) -> Result<Outcome, String> {
    let q = tx_queue(p.sink);
    d.q[usize::from(q)].offer(QSIZE + 5);
    answer(d, q).map(|o| o.0)
}

/// The avail index moves by more than the queue holds.
fn avail_index_jump(d: &mut Raw, p: &Ports) -> Result<Outcome, String> {
    let q = tx_queue(p.sink);
    d.q[usize::from(q)].set_avail_idx(4 * QSIZE + 1);
    answer(d, q).map(|o| o.0)
}

/// A chain of two descriptors of 2 GiB each: 2^32 bytes, 0 in a u32.
fn lengths_sum_overflows(d: &mut Raw, p: &Ports) -> Result<Outcome, String> {
    let q = tx_queue(p.sink);
    let (a, b) = (mark(d, q, 0), mark(d, q, 1));
    let r = &mut d.q[usize::from(q)];
    r.set_desc(0, a, 1 << 31, NEXT, 1);
    r.set_desc(1, b, 1 << 31, 0, 0);
    r.offer(0);
    answer(d, q).map(|o| o.0)
}

/// A receive buffer the device may not write, then the source port opened: its data must
/// not land there.
fn receive_read_only(d: &mut Raw, p: &Ports) -> Result<Outcome, String> {
    let q = rx_queue(p.source);
    let a = mark(d, q, 0);
    d.q[usize::from(q)].post(0, BUF as u32, 0);
    d.kick(q.into());
    d.ctl_send(p.source, event::PORT_OPEN, 1)?;
    let (o, n) = answer(d, q)?;
    // SAFETY: buffer 0 of the queue is ours, at least MARK bytes long.
    let now = unsafe { core::slice::from_raw_parts(a as *const u8, MARK.len()) };
    if now != MARK || o == Returned && n != 0 {
        return Err(format!(
            "the device wrote into a read-only buffer ({n} bytes)"
        ));
    }
    Ok(o)
}

/// The sink's transmitq is given `size` entries; the rest comes up as usual.
fn bad_size(d: &mut Raw, p: &Ports, size: u32) -> Result<Outcome, String> {
    d.negotiate()?;
    d.setup_queues(Some((tx_queue(p.sink), size)));
    if !d.driver_ok() {
        return Ok(NeedsReset);
    }
    d.handshake(&[p.echo])?;
    Ok(settled(d))
}

/// The sink's transmitq has its rings at `at`.
fn bad_ring(d: &mut Raw, p: &Ports, at: u64) -> Result<Outcome, String> {
    d.negotiate()?;
    d.setup_queues(None);
    d.setup_queue_at(tx_queue(p.sink), QSIZE.into(), at);
    if !d.driver_ok() {
        return Ok(NeedsReset);
    }
    d.handshake(&[p.echo])?;
    Ok(settled(d))
}

/// After FEATURES_OK the driver takes MULTIPORT and VERSION_1 back and asks for a feature
/// never offered: the device must go on with what was agreed (MULTIPORT's handshake works).
fn features_after_features_ok(d: &mut Raw, p: &Ports) -> Result<Outcome, String> {
    d.negotiate()?;
    for (sel, v) in [(0, 0), (1, 0), (1, 1 << 31), (2, u32::MAX)] {
        d.t.write_reg(reg::DRIVER_FEATURES_SEL, sel);
        d.t.write_reg(reg::DRIVER_FEATURES, v);
    }
    d.setup_queues(None);
    if !d.driver_ok() {
        return Ok(NeedsReset);
    }
    d.handshake(&[p.echo])?;
    Ok(settled(d))
}

fn notify_missing_queues(d: &mut Raw, _p: &Ports) -> Result<Outcome, String> {
    for q in [d.q.len() as u32, 999, 0xffff, u32::MAX] {
        d.kick(q);
    }
    Ok(settled(d))
}

/// Messages for ports that do not exist, an unknown event, an event only the device sends,
/// and messages too short and too long.
fn control_for_missing_ports(d: &mut Raw, p: &Ports) -> Result<Outcome, String> {
    d.ctl_send(d.ports + 3, event::PORT_READY, 1)?;
    d.ctl_send(u32::MAX, event::PORT_OPEN, 1)?;
    d.ctl_send(p.echo, 0x99, 1)?;
    d.ctl_send(p.echo, event::DEVICE_ADD, 1)?;
    d.ctl_send_raw(&[1, 2, 3])?;
    d.ctl_send_raw(&[0xff; BUF])?;
    Ok(settled(d))
}

/// Writes to the read-only fields and past the end of the configuration space (the
/// emergency-write field, which is writable, is left alone); the fields must not change.
fn config_writes_out_of_range(d: &mut Raw, _p: &Ports) -> Result<Outcome, String> {
    let before = (d.t.config_u32(0), d.t.config_u32(4));
    for (off, v) in [
        (0, 0xdead_beef),
        (4, 99),
        (12, 1),
        (16, 2),
        (0x40, 3),
        (0xfc, 4),
    ] {
        d.t.set_config_u32(off, v);
    }
    let after = (d.t.config_u32(0), d.t.config_u32(4));
    if after != before {
        return Err(format!(
            "the configuration changed: {before:x?} to {after:x?}"
        ));
    }
    Ok(settled(d))
}
