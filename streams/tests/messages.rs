//! Scenarios 1–7 (docs/streams.md, "Messages"), plus the other message utilities.
mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use streams::*;

#[test]
fn scenario_01_allocb_gives_an_empty_m_data_block() {
    let (_p, s) = det();
    let b = s.allocb(100).unwrap();
    assert_eq!(b.db_type(), MsgType::M_DATA);
    assert_eq!((b.rptr(), b.wptr()), (0, 0));
    assert!(b.capacity() >= 100);
    assert!(b.cont().is_none());
    assert_eq!((b.band(), b.flag(), b.db_ref()), (0, 0, 1));
    let z = s.allocb(0).unwrap();
    assert_eq!(z.len(), 0);
}

#[test]
fn scenario_02_dupb_shares_and_the_last_free_releases() {
    let (_p, s) = det();
    let mut a = s.allocb(8).unwrap();
    a.write(b"shared!!").unwrap();
    let d = a.dupb().unwrap();
    assert_eq!((a.db_ref(), d.db_ref()), (2, 2));
    assert_eq!(d.data(), b"shared!!");
    let _ = a.freeb();
    assert_eq!(d.db_ref(), 1);
    assert_eq!(
        d.data(),
        b"shared!!",
        "freeing the original leaves the data intact"
    );
    assert_eq!(s.pool_stats().blocks_in_use, 1);
    let _ = d.freeb();
    assert_eq!(
        s.pool_stats().blocks_in_use,
        0,
        "freeing the dup releases the data block"
    );
}

fn counted_buffer(frees: &Arc<AtomicUsize>) -> (*mut u8, usize, FreeRoutine) {
    let buf: Box<[u8]> = vec![7u8; 32].into_boxed_slice();
    let len = buf.len();
    let ptr = Box::into_raw(buf) as *mut u8;
    let frees = frees.clone();
    let addr = ptr as usize;
    let free: FreeRoutine = Box::new(move || {
        // SAFETY: the pointer came from Box::into_raw above and is freed exactly once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(addr as *mut u8, len)) });
        frees.fetch_add(1, Ordering::SeqCst);
    });
    (ptr, len, free)
}

#[test]
fn scenario_03_esballoc_frees_once_after_the_last_reference() {
    let (_p, s) = det();
    let frees = Arc::new(AtomicUsize::new(0));
    let (ptr, len, free) = counted_buffer(&frees);
    // SAFETY: the buffer is owned by the message until `free` runs.
    let a = unsafe { s.esballoc(ptr, len, free) }.unwrap();
    assert_eq!(a.data(), &[7u8; 32][..]);
    let b = a.dupb().unwrap();
    let c = a.dupb().unwrap();
    drop(b);
    drop(a);
    s.run_until_idle();
    assert_eq!(
        frees.load(Ordering::SeqCst),
        0,
        "not before the last reference"
    );
    drop(c);
    assert_eq!(
        frees.load(Ordering::SeqCst),
        0,
        "esballoc frees asynchronously"
    );
    s.run_until_idle();
    assert_eq!(
        frees.load(Ordering::SeqCst),
        1,
        "exactly once, after the third free"
    );
    s.run_until_idle();
    assert_eq!(frees.load(Ordering::SeqCst), 1);

    let frees = Arc::new(AtomicUsize::new(0));
    let (ptr, len, free) = counted_buffer(&frees);
    // SAFETY: as above.
    let a = unsafe { s.desballoc(ptr, len, free) }.unwrap();
    let (b, c) = (a.dupb().unwrap(), a.dupb().unwrap());
    drop(c);
    drop(a);
    assert_eq!(frees.load(Ordering::SeqCst), 0);
    drop(b);
    assert_eq!(
        frees.load(Ordering::SeqCst),
        1,
        "desballoc frees inside the last freeb"
    );
}

#[test]
fn concurrent_dups_at_the_limit_never_pass_dblk_refmax() {
    let (_p, s) = det();
    let a = s.allocb(1).unwrap();
    let _pins: Vec<Mblk> = (0..DBLK_REFMAX - 2).map(|_| a.dupb().unwrap()).collect();
    assert_eq!(a.db_ref(), DBLK_REFMAX - 1);
    // Two threads dup and drop the block at 254 references: only one dup may exist at once.
    let held = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let go = std::sync::Barrier::new(2);
    let (a, held, most, go) = (&a, &held, &most, &go);
    std::thread::scope(|t| {
        for _ in 0..2 {
            t.spawn(move || {
                go.wait();
                for _ in 0..1_000_000 {
                    if let Some(d) = a.dupb() {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now.max(d.db_ref() + 1 - DBLK_REFMAX), Ordering::SeqCst);
                        held.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(most.load(Ordering::SeqCst), 1, "two dups past the limit");
    assert_eq!(a.db_ref(), DBLK_REFMAX - 1);
}

#[test]
fn scenario_04_dupb_fails_at_dblk_refmax() {
    let (_p, s) = det();
    let a = s.allocb(1).unwrap();
    let dups: Vec<Mblk> = (0..DBLK_REFMAX - 1).map(|_| a.dupb().unwrap()).collect();
    assert_eq!(a.db_ref(), 255);
    assert!(a.dupb().is_none());
    assert_eq!(a.db_ref(), 255);
    drop(dups);
    assert_eq!(a.db_ref(), 1);
}

#[test]
fn scenario_05_dupmsg_is_all_or_nothing() {
    let (_p, s) = det();
    let mut m = data(&s, b"one");
    m.linkb(data(&s, b"two"));
    let third = data(&s, b"three");
    let pins: Vec<Mblk> = (0..DBLK_REFMAX - 1)
        .map(|_| third.dupb().unwrap())
        .collect();
    m.linkb(third);
    let refs = |m: &Mblk| m.blocks().map(Mblk::db_ref).collect::<Vec<_>>();
    assert_eq!(refs(&m), [1, 1, 255]);
    assert!(m.dupmsg().is_none());
    assert_eq!(refs(&m), [1, 1, 255], "every original reference unchanged");
    drop(pins);
    let d = m.dupmsg().unwrap();
    assert_eq!(refs(&m), [2, 2, 2]);
    assert_eq!(d.msgdsize(), 11);
}

#[test]
fn scenario_06_copymsg_keeps_types_band_flag_and_offsets() {
    let (_p, s) = det();
    let mut m = msg(&s, MsgType::M_PROTO, 4, b"xxhdr");
    m.set_ptrs(2, 5).unwrap();
    m.set_flag(MSGMARK);
    m.linkb(data(&s, b"payload"));
    let mut c = m.copymsg().unwrap();
    assert_eq!(c.db_type(), MsgType::M_PROTO);
    assert_eq!(c.cont().unwrap().db_type(), MsgType::M_DATA);
    assert_eq!((c.band(), c.flag(), c.rptr(), c.wptr()), (4, MSGMARK, 2, 5));
    assert_eq!(c.data(), b"hdr");
    c.cont_mut()
        .unwrap()
        .data_mut()
        .unwrap()
        .copy_from_slice(b"CHANGED");
    assert_eq!(
        m.cont().unwrap().data(),
        b"payload",
        "writing the copy leaves the original"
    );
    assert_eq!(c.db_ref(), 1);
}

#[test]
fn scenario_07_freemsg_frees_every_block() {
    let (_p, s) = det();
    let mut m = data(&s, b"a");
    for b in [&b"b"[..], b"c", b"d"] {
        m.linkb(data(&s, b));
    }
    assert_eq!(m.blocks().count(), 4);
    assert_eq!(s.pool_stats().blocks_in_use, 4);
    let freed = s.pool_stats().freed;
    m.freemsg();
    assert_eq!(s.pool_stats().blocks_in_use, 0);
    assert_eq!(s.pool_stats().freed - freed, 4);
}

#[test]
fn pullupmsg_joins_leading_blocks_of_one_type() {
    let (_p, s) = det();
    let mut m = data(&s, b"ab");
    m.linkb(data(&s, b"cde"));
    m.linkb(data(&s, b"f"));
    assert!(m.pullupmsg(4));
    assert_eq!(m.data(), b"abcd");
    let rest: Vec<&[u8]> = m.blocks().skip(1).map(Mblk::data).collect();
    assert_eq!(rest, [&b"e"[..], b"f"]);
    assert!(!m.pullupmsg(100), "not enough bytes");
    assert_eq!(m.msgdsize(), 6, "unchanged on failure");
    assert!(m.pullupmsg(-1));
    assert_eq!((m.data(), m.blocks().count()), (&b"abcdef"[..], 1));
}

#[test]
fn adjmsg_trims_head_and_tail() {
    let (_p, s) = det();
    let mut m = data(&s, b"head");
    m.linkb(data(&s, b"tail"));
    assert!(m.adjmsg(3));
    assert!(m.adjmsg(-2));
    let parts: Vec<&[u8]> = m.blocks().map(Mblk::data).collect();
    assert_eq!(parts, [&b"d"[..], b"ta"]);
    assert!(!m.adjmsg(10));
    assert_eq!(m.msgdsize(), 3);
}

#[test]
fn linkb_unlinkb_and_msgdsize_count_only_m_data() {
    let (_p, s) = det();
    let mut m = msg(&s, MsgType::M_PROTO, 0, b"hdr");
    m.linkb(data(&s, b"12345"));
    assert_eq!((m.msgdsize(), m.msgsize()), (5, 8));
    let rest = m.unlinkb().unwrap();
    assert_eq!(rest.data(), b"12345");
    assert!(m.cont().is_none());
}

#[test]
fn an_exhausted_or_faulted_pool_returns_none_and_counts() {
    let p = Arc::new(DetPlatform::new());
    let cfg = StreamsConfig {
        pool: PoolConfig {
            max_bytes: 100,
            max_blocks: 10,
        },
        ..Default::default()
    };
    let s = Streams::new(p, cfg);
    let a = s.allocb(80).unwrap();
    assert!(s.allocb(30).is_none());
    drop(a);
    s.set_faults(vec![FaultPolicy::EveryNth(2)]);
    assert!(s.allocb(1).is_some());
    assert!(s.allocb(1).is_none());
    let st = s.pool_stats();
    assert_eq!((st.failed_capacity, st.failed_injected), (1, 1));
    assert_eq!(st.peak_bytes, 80);
}

#[test]
fn writing_a_shared_block_is_refused() {
    let (_p, s) = det();
    let mut a = s.allocb(4).unwrap();
    let _d = a.dupb().unwrap();
    assert!(a.write(b"x").is_err());
    assert!(a.data_mut().is_none());
}
