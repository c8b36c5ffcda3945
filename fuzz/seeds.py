#!/usr/bin/env python3
"""Writes the seed corpus (fuzz/corpus/TARGET/*) from readable programs.

Each seed is a program in the byte format the harness reads (device-model/src/fuzzing/):
an operation byte, then its arguments, little-endian. Run it after changing a harness's
format; the seeds are committed and replayed by `cargo test` (fuzzing::tests).
"""
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def u8(v): return struct.pack("<B", v & 0xff)
def u16(v): return struct.pack("<H", v & 0xffff)
def u32(v): return struct.pack("<I", v & 0xffffffff)
def u64(v): return struct.pack("<Q", v & 0xffffffffffffffff)
def blob(b): return u8(len(b)) + b


# --- mmio: 0 write(off u16, len u8, value u64), 1 read(...), 2 reg32(reg u8, u32),
# 3 negotiate(u64), 4 start(n u8), 5 poke(addr u32, blob), 6 host write(port, blob), 7 settle
def m_write(off, val, width=4): return u8(0) + u16(off) + u8(width - 1) + u64(val)
def m_read(off, width=4): return u8(1) + u16(off) + u8(width - 1) + u64(0)
def m_reg(reg, val): return u8(2) + u8(reg // 4) + u32(val)
def m_negotiate(f): return u8(3) + u64(f)
def m_start(n): return u8(4) + u8(n)
def m_poke(addr, b): return u8(5) + u32(addr) + blob(b)
def m_host(port, b): return u8(6) + u8(port) + blob(b)
def m_settle(port=0): return u8(7) + u8(port)


STATUS, QSEL, QNUM, QREADY, QNOTIFY, FSEL, FEAT = 0x70, 0x30, 0x38, 0x44, 0x50, 0x24, 0x20

mmio = {
    "read-every-register": b"".join(m_read(o) for o in range(0, 0x120, 4)),
    "boot-and-traffic": m_negotiate(~0) + m_start(8) + m_host(1, b"hello") + m_settle()
    + m_reg(QNOTIFY, 1) + m_reg(QNOTIFY, 5) + m_settle(),
    "status-out-of-order": m_reg(STATUS, 0x0f) + m_reg(STATUS, 0x08) + m_reg(STATUS, 0)
    + m_reg(STATUS, 0xff) + m_read(STATUS),
    "features-after-features-ok": m_negotiate(~0) + m_reg(FSEL, 0) + m_reg(FEAT, 0xffffffff)
    + m_reg(FSEL, 7) + m_reg(FEAT, 1) + m_read(STATUS),
    "queue-sizes-bad": m_reg(STATUS, 3) + m_reg(QSEL, 0) + m_reg(QNUM, 0) + m_reg(QREADY, 1)
    + m_reg(QSEL, 1) + m_reg(QNUM, 3) + m_reg(QREADY, 1) + m_reg(QSEL, 99) + m_reg(QREADY, 1)
    + m_reg(QNOTIFY, 1000) + m_settle(),
    "odd-widths": m_write(0x100, 0x1122334455667788, 8) + m_write(0x101, 7, 3) + m_read(0x102, 2)
    + m_write(0x23f, 1, 1) + m_read(0xfc, 8),
    "rings-garbage": m_negotiate(~0) + m_start(8) + m_poke(0x100000, bytes(range(32)))
    + m_poke(0x101000, b"\x00\x00\x05\x00\x01\x00") + m_reg(QNOTIFY, 0) + m_settle(),
}


# --- rings: features u64, then per op: op u8, queue u8, args
# 0 desc(slot u16, addr(mode u8 ...), len(mode u8 ...), flags u16, next u16)
# 1 avail push(head u16), 2 avail idx(u16), 3 notify(q u8), 4 settle, 5 host(port u8, blob),
# 6 poke heap(off u16, blob), 7 ring word(which u8, u16, drain port u8)
def addr_heap(off16): return u8(0) + u16(off16)
def addr_end(back): return u8(1) + u16(back)
def addr_raw(a): return u8(2) + u64(a)
def len_small(n): return u8(0) + u8(n)
def len_raw(n): return u8(2) + u32(n)
def r_desc(q, slot, addr, ln, flags, nxt): return u8(0) + u8(q) + u16(slot) + addr + ln + u16(flags) + u16(nxt)
def r_avail(q, head): return u8(1) + u8(q) + u16(head)
def r_idx(q, i): return u8(2) + u8(q) + u16(i)
def r_notify(q): return u8(3) + u8(0) + u8(q)
def r_settle(): return u8(4) + u8(0)
def r_host(port, b): return u8(5) + u8(0) + u8(port) + blob(b)
def r_poke(off16, b): return u8(6) + u8(0) + u16(off16) + blob(b)


NEXT, WRITE, INDIRECT = 1, 2, 4
ALLF = ~0
TX1, RX1 = 5, 4

rings = {
    "one-good-buffer": u64(ALLF) + r_desc(TX1, 0, addr_heap(0), len_small(16), 0, 0)
    + r_avail(TX1, 0) + r_notify(TX1) + r_settle(),
    "descriptor-loop": u64(ALLF) + r_desc(TX1, 0, addr_heap(0), len_small(8), NEXT, 1)
    + r_desc(TX1, 1, addr_heap(1), len_small(8), NEXT, 0) + r_avail(TX1, 0) + r_notify(TX1) + r_settle(),
    "outside-memory": u64(ALLF) + r_desc(TX1, 0, addr_raw(0xffff_ffff_ffff_f000), len_small(64), 0, 0)
    + r_avail(TX1, 0) + r_desc(RX1, 0, addr_end(8), len_small(64), WRITE, 0) + r_avail(RX1, 0)
    + r_host(1, b"x" * 100) + r_notify(TX1) + r_notify(RX1) + r_settle(),
    "length-overflow": u64(ALLF) + r_desc(TX1, 0, addr_heap(4), len_raw(0xffffffff), NEXT, 1)
    + r_desc(TX1, 1, addr_heap(8), len_raw(0xfffffff0), 0, 0) + r_avail(TX1, 0) + r_notify(TX1) + r_settle(),
    "wrong-direction": u64(ALLF) + r_desc(TX1, 0, addr_heap(0), len_small(16), WRITE, 0) + r_avail(TX1, 0)
    + r_desc(RX1, 0, addr_heap(2), len_small(16), 0, 0) + r_avail(RX1, 0) + r_host(1, b"abc")
    + r_notify(TX1) + r_notify(RX1) + r_settle(),
    "avail-index-jump": u64(ALLF) + r_idx(TX1, 0x8000) + r_notify(TX1) + r_idx(RX1, 0xffff)
    + r_host(1, b"data") + r_notify(RX1) + r_settle(),
    "indirect-table": u64(ALLF) + r_poke(0x100, u64(0x200000) + u32(16) + u16(NEXT) + u16(0))
    + r_desc(TX1, 0, addr_heap(0x100), len_small(16), INDIRECT, 0) + r_avail(TX1, 0) + r_notify(TX1) + r_settle(),
    "notify-missing-queues": u64(ALLF) + r_notify(8) + r_notify(9) + r_notify(15) + r_settle(),
}


# --- control: op u8, then
# 0/1 header(id mode u8 [u8 | u32], event u16, value u16, blob), 2 raw blob, 3 ctrl rx buffer(len u16),
# 4 port rx(port u8, len u16), 5 port tx(port u8, blob), 6 host(id u8, what u8, ...), 7 settle
def c_msg(id_, event, value, extra=b""): return u8(0) + u8(1) + u32(id_) + u16(event) + u16(value) + blob(extra)
def c_raw(b): return u8(2) + blob(b)
def c_rxbuf(n): return u8(3) + u16(n)
def c_port_rx(p, n): return u8(4) + u8(p) + u16(n)
def c_port_tx(p, b): return u8(5) + u8(p) + blob(b)
def c_host(id_, what, *args): return u8(6) + u8(id_) + u8(what) + b"".join(args)
def c_settle(): return u8(7)


READY, ADD, REMOVE, PORT_READY, CONSOLE, RESIZE, OPEN, NAME = range(8)
control = {
    "bring-up": c_msg(0, READY, 1) + c_settle() + b"".join(c_msg(p, PORT_READY, 1) for p in range(3))
    + c_settle() + c_msg(1, OPEN, 1) + c_port_rx(1, 64) + c_host(1, 0, blob(b"to guest"))
    + c_port_tx(1, b"to host") + c_settle() + c_msg(1, OPEN, 0) + c_settle(),
    "missing-ports": c_msg(0, READY, 1) + c_msg(99, PORT_READY, 1) + c_msg(0xffffffff, OPEN, 1)
    + c_msg(31, NAME, 0, b"x" * 40) + c_settle(),
    "every-event": c_msg(0, READY, 1) + b"".join(c_msg(e % 3, e, 0xffff) for e in range(9)) + c_settle(),
    "short-and-long": c_raw(b"\x00\x00\x00") + c_raw(b"\x00" * 64) + c_msg(0, READY, 1, b"tail") + c_settle(),
    "host-side-events": c_msg(0, READY, 1) + c_settle() + c_host(0, 3, u16(80), u16(25))
    + c_host(2, 2, u8(1)) + c_host(2, 4) + c_host(2, 0, blob(b"gone")) + c_msg(2, OPEN, 1) + c_settle(),
    "ready-twice-rx-starved": c_msg(0, READY, 1) + c_msg(0, READY, 0) + c_msg(0, READY, 1)
    + c_rxbuf(0) + c_rxbuf(3) + c_settle(),
}


# --- messages: op u8, pick u8, then per op (see messages.rs)
def s_alloc(n): return u8(0) + u8(0) + u16(n)
def s_write(i, b): return u8(1) + u8(i) + blob(b)
def s_dup(i, copy=0): return u8(2) + u8(i) + u8(copy)
def s_link(i, j): return u8(3) + u8(i) + u8(j)
def s_unlink(i): return u8(4) + u8(i)
def s_pullup(i, n): return u8(5) + u8(i) + u16(n)
def s_adj(i, n): return u8(6) + u8(i) + u16(n)
def s_putq(i): return u8(7) + u8(i)
def s_getq(): return u8(8) + u8(0)
def s_flush(): return u8(9) + u8(0)
def s_free(i): return u8(10) + u8(i)


messages = {
    "chain-pullup": s_alloc(8) + s_write(0, b"abc") + s_alloc(8) + s_write(1, b"defg") + s_link(0, 1)
    + s_pullup(0, 5) + s_adj(0, -2) + s_unlink(0),
    "dup-then-write": s_alloc(16) + s_write(0, b"0123") + s_dup(0) + s_write(0, b"x") + s_dup(0, 1)
    + s_write(2, b"yz") + s_free(1) + s_write(0, b"w"),
    "queue-order": s_alloc(4) + s_write(0, b"a") + s_alloc(4) + s_write(1, b"b") + s_putq(0) + s_putq(0)
    + s_getq() + s_flush() + s_getq(),
    "adjust-past-end": s_alloc(10) + s_write(0, b"12345") + s_adj(0, 6) + s_adj(0, -6) + s_adj(0, 5)
    + s_pullup(0, 0xffff) + s_pullup(0, 1),
    "pool-exhaustion": b"".join(s_alloc(4095) for _ in range(70)) + s_pullup(0, 0xffff) + s_dup(3, 1),
}

# --- packed: size u16, event_idx u8, then ops: 0 desc(slot u16, addr mode u8 + arg, len mode
# u8 + arg, id u16, flags mode u8 + arg), 1 bytes(at u16 * 16 from the heap, blob), 2 pop,
# 3 answer(which u8, written u32), 4 driver event(u32), 5 device event(enable u8)
AVAIL, USED, NEXT, WRITE, INDIRECT = 1 << 7, 1 << 15, 1, 2, 4
def p_desc(slot, heap16, len16, id, flags):
    return u8(0) + u16(slot) + u8(0) + u16(heap16) + u8(0) + u8(len16) + u16(id) + u8(0) + u16(flags)
def p_bytes(heap16, b): return u8(1) + u16(heap16) + blob(b)
def p_pop(): return u8(2)
def p_answer(which, n): return u8(3) + u8(which) + u32(n)
def p_driver_event(off_wrap, flags): return u8(4) + u32(off_wrap | flags << 16)
def p_device_event(on): return u8(5) + u8(on)
def table(*descs):
    return b"".join(u64(a) + u32(l) + u16(0) + u16(f) for a, l, f in descs)

packed = {
    "one-buffer": u16(3) + u8(0) + p_desc(0, 0, 1, 2, AVAIL) + p_pop() + p_answer(0, 16)
    + p_driver_event(0, 0) + p_device_event(1),
    "chain-across-the-end": u16(3) + u8(1) + p_desc(2, 0, 1, 0, AVAIL | NEXT) + p_desc(0, 1, 1, 1, USED)
    + p_desc(0, 1, 1, 1, AVAIL | WRITE) + p_pop() + p_pop() + p_answer(0, 0) + p_driver_event(1 << 15 | 2, 2),
    "indirect": u16(4) + u8(1) + p_bytes(0, table((0x90000, 8, 0), (0x90100, 8, WRITE)))
    + p_desc(0, 0, 2, 7 - 4, AVAIL | INDIRECT) + p_pop() + p_answer(0, 8) + p_device_event(1),
    "lying-wrap-bits": u16(4) + u8(0) + p_desc(0, 0, 1, 0, AVAIL | USED) + p_pop() + p_desc(0, 0, 1, 0, 0)
    + p_pop() + p_desc(0, 0, 1, 0, USED) + p_pop() + p_answer(0, 0),
    "same-id-twice": u16(4) + u8(0) + p_desc(0, 0, 1, 1, AVAIL) + p_desc(1, 0, 1, 1, AVAIL) + p_pop() + p_pop(),
}

rng = random.Random(7)
for t in (mmio, rings, control, messages):
    t["random"] = bytes(rng.randrange(256) for _ in range(600))
packed["random"] = bytes(random.Random(22).randrange(256) for _ in range(600))

for name, seeds in (("mmio", mmio), ("rings", rings), ("control", control), ("messages", messages),
                    ("packed", packed)):
    d = os.path.join(HERE, "corpus", name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    for seed, data in seeds.items():
        with open(os.path.join(d, seed), "wb") as f:
            f.write(data)
    print(f"{name}: {len(seeds)} seeds")
