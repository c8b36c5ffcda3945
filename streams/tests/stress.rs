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

#[test]
fn qwriter_outer_is_exclusive_across_instances_under_load() {
    let _w = watchdog(120);
    let s = host();
    let rec = Recorder::new();
    let ran = Arc::new(AtomicUsize::new(0));
    let fns = Fns::pass().put({
        let (rec, ran) = (rec.clone(), ran.clone());
        move |q, m| {
            let _in = rec.enter("P", &["F"]);
            if m.data()[0] % 16 == 0 {
                let (rec, ran) = (rec.clone(), ran.clone());
                let ev = q.allocb(0).unwrap();
                q.qwriter(
                    ev,
                    move |_q, _m| {
                        let _in = rec.enter("F", &["P", "F"]);
                        ran.fetch_add(1, Ordering::SeqCst);
                    },
                    Perim::Outer,
                )
                .unwrap();
            }
        }
    });
    let m = def(
        "M",
        D_MP | D_MTQPAIR | D_MTOUTPERIM | D_MTOCEXCL,
        (false, false),
        fns,
    );
    let streams: Vec<Stream> = (0..3)
        .map(|_| Stream::open(&s, &sink_driver("d")).unwrap())
        .collect();
    for st in &streams {
        st.push(&m).unwrap();
    }
    let queues: Vec<QueueRef> = streams
        .iter()
        .map(|st| st.queue(1, Side::Write).unwrap())
        .collect();
    thread::scope(|t| {
        for i in 0..THREADS {
            let (queues, s) = (&queues, &s);
            t.spawn(move || {
                for n in 0..500usize {
                    queues[(i + n) % queues.len()]
                        .put(data(s, &[(n % 256) as u8]))
                        .unwrap();
                }
            });
        }
    });
    s.quiesce();
    assert_eq!(
        rec.overlaps(),
        0,
        "a qwriter(PERIM_OUTER) callback overlapped a put in some instance"
    );
    let expected = THREADS * (0..500usize).filter(|n| (n % 256) % 16 == 0).count();
    assert_eq!(ran.load(Ordering::SeqCst), expected);
}

#[test]
fn plumbing_on_several_streams_at_once_does_not_deadlock() {
    let _w = watchdog(120);
    let s = host();
    // An OCEXCL module with an outer perimeter and a PERMOD module shared by every stream.
    let ocexcl = def(
        "O",
        D_MP | D_MTQPAIR | D_MTOUTPERIM | D_MTOCEXCL,
        (false, false),
        Fns::pass(),
    );
    let permod = def("P", D_MP | D_MTPERMOD, (false, false), Fns::pass());
    let streams: Vec<Stream> = (0..2)
        .map(|_| Stream::open(&s, &sink_driver("d")).unwrap())
        .collect();
    thread::scope(|t| {
        for st in &streams {
            let (ocexcl, permod, s) = (&ocexcl, &permod, &s);
            t.spawn(move || {
                for i in 0..200 {
                    st.push(if i % 2 == 0 { ocexcl } else { permod }).unwrap();
                    st.push(permod).unwrap();
                    let _ = st.write(&[i as u8]); // EAGAIN once the sink is full
                    st.pop().unwrap();
                    st.pop().unwrap();
                    let _ = s;
                }
            });
        }
        // Meanwhile, a writer on each stream.
        for st in &streams {
            t.spawn(move || {
                for i in 0..2000u32 {
                    let _ = st.write(&i.to_le_bytes());
                }
            });
        }
    });
    s.quiesce();
    for st in &streams {
        assert_eq!(st.modules(), 0);
    }
}

#[test]
fn a_kept_queue_handle_is_harmless_after_close() {
    let (_p, s) = det();
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&def("M", D_MP | D_MTQPAIR, (false, false), Fns::pass()))
        .unwrap();
    let (m, d) = (st.queue(1, Side::Read).unwrap(), st.driver(Side::Read));
    st.close().unwrap();
    s.run_until_idle();
    assert_eq!(d.put(data(&s, b"late")), Err(Error::NotLinked("put")));
    assert_eq!(
        d.putnext(data(&s, b"late")),
        Err(Error::NotLinked("putnext"))
    );
    assert!(
        d.canputnext() && m.canputnext(),
        "no neighbour to be flow-controlled by"
    );
    m.getq();
    m.qenable();
    s.run_until_idle();
}

#[test]
fn puts_from_outside_during_plumbing_are_parked_in_order_and_never_lost() {
    let _w = watchdog(120);
    let s = host();
    let seen: Arc<Mutex<Vec<Vec<u32>>>> = Arc::new(Mutex::new(vec![Vec::new(); 2]));
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
                let src = m.data()[0] as usize;
                let n = u32::from_le_bytes(m.data()[1..5].try_into().unwrap());
                seen.lock().unwrap()[src].push(n);
            }
        }),
    );
    let st = Stream::open(&s, &drv).unwrap();
    let m = def("M", D_MP | D_MTQPAIR, (false, false), Fns::pass());
    let wq = st.driver(Side::Write);
    const N: u32 = 3000;
    thread::scope(|t| {
        t.spawn(|| {
            for _ in 0..150 {
                st.push(&m).unwrap();
                st.pop().unwrap();
            }
        });
        for src in 0..2u8 {
            let (wq, s) = (&wq, &s);
            t.spawn(move || {
                for n in 0..N {
                    let bytes = [&[src][..], &n.to_le_bytes()[..]].concat();
                    wq.put(data(s, &bytes)).unwrap();
                }
            });
        }
    });
    s.quiesce();
    for (src, ns) in seen.lock().unwrap().iter().enumerate() {
        assert_eq!(ns.len(), N as usize, "source {src} lost messages");
        assert!(ns.windows(2).all(|w| w[0] < w[1]), "source {src} reordered");
    }
}

#[test]
fn two_opens_sharing_a_permod_perimeter_can_both_plumb() {
    let _w = watchdog(60);
    let s = host();
    let entered = Counter::new();
    // Shared open/close (D_MTOCSHARED) on one perimeter for every instance (D_MTPERMOD):
    // both opens are inside it when they call qprocson.
    let m = def(
        "M",
        D_MP | D_MTPERMOD | D_MTPUTSHARED | D_MTOCSHARED,
        (false, false),
        Fns::pass().open({
            let entered = entered.clone();
            move |q| {
                entered.add();
                entered.wait_for(2);
                q.qprocson().unwrap();
                Ok(())
            }
        }),
    );
    let (a, b) = (
        Stream::open(&s, &sink_driver("d")).unwrap(),
        Stream::open(&s, &sink_driver("d")).unwrap(),
    );
    thread::scope(|t| {
        t.spawn(|| a.push(&m).unwrap());
        t.spawn(|| b.push(&m).unwrap());
    });
    a.write(b"a").unwrap();
    b.write(b"b").unwrap();
    assert_eq!((a.modules(), b.modules()), (1, 1));
    assert_eq!(contents(&a.driver(Side::Write)), ["a"]);
}

/// Service procedures of many instances block on their perimeters while a queued
/// qwriter(PERIM_OUTER) waits in the task queue: the worker pool must still reach that
/// writer (it once starved: every worker asleep in a service entry, the writer queued behind
/// them, quiesce forever).
#[test]
fn an_outer_writer_queued_behind_blocked_services_still_runs() {
    const STREAMS: usize = 12;
    const ROUNDS: usize = 1000;
    let _w = watchdog(30);
    let s = host();
    let writers = Arc::new(AtomicUsize::new(0));
    let services = Arc::new(AtomicUsize::new(0));
    let fns = Fns::pass()
        .put(|q, m| if q.is_read() { q.putnext(m) } else { q.putq(m) })
        .srv({
            let (writers, services) = (writers.clone(), services.clone());
            move |q| {
                while let Some(m) = q.getq() {
                    services.fetch_add(1, Ordering::SeqCst);
                    if m.data().first() == Some(&b'w') {
                        let writers = writers.clone();
                        q.qwriter(
                            m,
                            move |_q, _m| {
                                writers.fetch_add(1, Ordering::SeqCst);
                            },
                            Perim::Outer,
                        )
                        .unwrap();
                    }
                }
            }
        });
    let drv = def("outer", D_MP | D_MTQPAIR | D_MTOUTPERIM, (false, true), fns);
    let streams: Vec<Stream> = (0..STREAMS)
        .map(|_| Stream::open(&s, &drv).unwrap())
        .collect();
    for round in 0..ROUNDS {
        for (i, st) in streams.iter().enumerate() {
            st.write(if i == round % STREAMS { b"w" } else { b"s" })
                .unwrap();
        }
        s.quiesce();
        assert_eq!(writers.load(Ordering::SeqCst), round + 1);
    }
    assert_eq!(services.load(Ordering::SeqCst), ROUNDS * STREAMS);
}
