//! Stress: several threads hammer modules from both ends while service procedures,
//! qtimeout callbacks and qwriter events run; an overlap detector proves that exclusive
//! means exclusive, and per-source order and message counts prove nothing is lost.
mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use streams::*;

const THREADS: usize = 4;
const PER_THREAD: usize = 2_000;

#[test]
fn exclusive_means_exclusive_and_nothing_is_lost() {
    let _w = watchdog(120);
    let s = host();
    let rec = Recorder::new();
    let events = Arc::new(AtomicUsize::new(0));
    // The module under test: QPAIR, service procedures on both sides, a qtimeout armed
    // every 64 messages and a qwriter(INNER) every 50.
    let fns = Fns::pass()
        .put({
            let (rec, events) = (rec.clone(), events.clone());
            move |q, m| {
                let _in = rec.enter("M", &["M"]);
                let n = u32::from_le_bytes(m.data()[4..8].try_into().unwrap());
                if n % 64 == 0 {
                    let rec = rec.clone();
                    q.qtimeout(0, move |_q| {
                        let _in = rec.enter("M", &["M"]);
                    })
                    .unwrap();
                }
                if n % 50 == 0 {
                    // The put holds the pair exclusively, so this runs nested, at once.
                    let events = events.clone();
                    let ev = q.allocb(0).unwrap();
                    let ran = q
                        .qwriter(
                            ev,
                            move |_q, _m| {
                                events.fetch_add(1, Ordering::SeqCst);
                            },
                            Perim::Inner,
                        )
                        .unwrap();
                    assert!(ran);
                }
                q.putq(m);
            }
        })
        .srv({
            let rec = rec.clone();
            move |q| {
                let _in = rec.enter("M", &["M"]);
                while let Some(m) = q.getq() {
                    q.putnext(m);
                }
            }
        });
    let m = def("M", D_MP | D_MTQPAIR, (true, true), fns);
    // The driver records, per source thread, the sequence numbers it receives.
    let seen: Arc<Mutex<Vec<Vec<u32>>>> = Arc::new(Mutex::new(vec![Vec::new(); THREADS]));
    let drv = def(
        "drv",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let seen = seen.clone();
            move |q, m| {
                if q.is_read() {
                    return q.putnext(m);
                }
                let src = u32::from_le_bytes(m.data()[..4].try_into().unwrap()) as usize;
                let n = u32::from_le_bytes(m.data()[4..8].try_into().unwrap());
                seen.lock().unwrap()[src].push(n);
            }
        }),
    );
    let st = Stream::open(&s, &drv).unwrap();
    st.push(&m).unwrap();
    let (mw, dr) = (st.queue(1, Side::Write).unwrap(), st.driver(Side::Read));
    thread::scope(|t| {
        for src in 0..THREADS {
            let (mw, dr, s) = (&mw, &dr, &s);
            t.spawn(move || {
                for n in 0..PER_THREAD as u32 {
                    let bytes = [(src as u32).to_le_bytes(), n.to_le_bytes()].concat();
                    mw.put(data(s, &bytes)).unwrap();
                    dr.putnext(data(s, &bytes)).unwrap();
                }
            });
        }
    });
    s.quiesce();
    assert_eq!(
        rec.overlaps(),
        0,
        "two routines of the QPAIR module overlapped"
    );
    let seen = seen.lock().unwrap();
    for (src, ns) in seen.iter().enumerate() {
        assert_eq!(ns.len(), PER_THREAD, "source {src} lost messages");
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "source {src} reordered");
    }
    let mut up = 0;
    while let ReadResult::Data(_) = st.read() {
        up += 1;
    }
    assert_eq!(
        up,
        THREADS * PER_THREAD,
        "every upstream message reached the head"
    );
    assert_eq!(
        events.load(Ordering::SeqCst),
        THREADS * PER_THREAD.div_ceil(50) * 2
    );
    st.close().unwrap();
    assert_eq!(s.pool_stats().blocks_in_use, 0, "every block was freed");
}

#[test]
fn putshared_puts_share_while_qwriter_and_srv_stay_exclusive() {
    let _w = watchdog(120);
    let s = host();
    let rec = Recorder::new();
    let (events, delivered) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let fns = Fns::pass()
        .put({
            let (rec, events) = (rec.clone(), events.clone());
            move |q, m| {
                let _in = rec.enter("P", &["W", "S"]);
                if m.data()[0] % 10 == 0 {
                    let (rec, events) = (rec.clone(), events.clone());
                    let ev = q.allocb(0).unwrap();
                    q.qwriter(
                        ev,
                        move |_q, _m| {
                            let _in = rec.enter("W", &["P", "W", "S"]);
                            events.fetch_add(1, Ordering::SeqCst);
                        },
                        Perim::Inner,
                    )
                    .unwrap();
                }
                q.putq(m);
            }
        })
        .srv({
            let (rec, delivered) = (rec.clone(), delivered.clone());
            move |q| {
                let _in = rec.enter("S", &["P", "W", "S"]);
                while q.getq().is_some() {
                    delivered.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    let m = def("M", D_MP | D_MTQPAIR | D_MTPUTSHARED, (false, true), fns);
    let st = Stream::open(&s, &m).unwrap();
    let wq = st.driver(Side::Write);
    thread::scope(|t| {
        for _ in 0..THREADS {
            let (wq, s) = (&wq, &s);
            t.spawn(move || {
                for n in 0..PER_THREAD {
                    wq.put(data(s, &[(n % 256) as u8])).unwrap();
                }
            });
        }
    });
    s.quiesce();
    assert_eq!(
        rec.overlaps(),
        0,
        "a qwriter event or srv overlapped another routine"
    );
    assert_eq!(delivered.load(Ordering::SeqCst), THREADS * PER_THREAD);
    let per_thread_events = (0..PER_THREAD).filter(|n| (n % 256) % 10 == 0).count();
    assert_eq!(events.load(Ordering::SeqCst), THREADS * per_thread_events);
}
