//! Scenarios 51–56 (docs/streams.md, "Callbacks"): qtimeout/quntimeout, qbufcall/qunbufcall.
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use streams::*;

type Slot = Arc<Mutex<Option<CallbackId>>>;

#[test]
fn scenario_51_callbacks_are_exclusive_unless_cbshared() {
    let _w = watchdog(60);
    // QPAIR: callbacks never overlap puts.
    let s = host();
    let (rec, fired) = (Recorder::new(), Counter::new());
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let (rec, fired) = (rec.clone(), fired.clone());
            move |q, m| {
                let _in = rec.enter("put", &["cb"]);
                if text(&m) == "arm" {
                    for i in 0..20 {
                        let (rec, fired) = (rec.clone(), fired.clone());
                        q.qtimeout(i % 3, move |_q| {
                            let _in = rec.enter("cb", &["put", "cb"]);
                            fired.add();
                        })
                        .unwrap();
                    }
                }
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    let wq = st.driver(Side::Write);
    wq.put(data(&s, b"arm")).unwrap();
    thread::scope(|t| {
        for _ in 0..2 {
            t.spawn(|| {
                for _ in 0..500 {
                    wq.put(data(&s, b"x")).unwrap();
                }
            });
        }
    });
    fired.wait_for(20);
    assert_eq!(rec.overlaps(), 0, "no callback overlapped a put");

    // CBSHARED|PUTSHARED: a callback may run while a put is inside.
    let (gate, inside, fired) = (Latch::new(), Counter::new(), Counter::new());
    let m = def(
        "S",
        D_MP | D_MTQPAIR | D_MTPUTSHARED | D_MTCBSHARED,
        (false, false),
        Fns::pass().put({
            let (gate, inside, fired) = (gate.clone(), inside.clone(), fired.clone());
            move |q, _m| {
                let fired = fired.clone();
                q.qtimeout(0, move |_q| fired.add()).unwrap();
                inside.add();
                gate.wait();
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.driver(Side::Write).put(data(&s, b"hold")).unwrap());
        inside.wait_for(1);
        assert!(
            fired.wait_for_timeout(1, 10_000),
            "the callback ran while the put was inside"
        );
        gate.open();
    });
}

#[test]
fn scenario_52_quntimeout_before_and_after_expiry() {
    let (p, s) = det();
    let (fired, ids, rets): (Arc<Counter>, Slot, Arc<Mutex<Vec<i64>>>) =
        (Counter::new(), Arc::default(), Arc::default());
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let (fired, ids, rets) = (fired.clone(), ids.clone(), rets.clone());
            move |q, m| match text(&m).as_str() {
                "arm10" | "arm5" => {
                    let ticks = if text(&m) == "arm10" { 10 } else { 5 };
                    let fired = fired.clone();
                    *ids.lock().unwrap() = Some(q.qtimeout(ticks, move |_q| fired.add()).unwrap());
                }
                _ => rets
                    .lock()
                    .unwrap()
                    .push(q.quntimeout(ids.lock().unwrap().unwrap())),
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    let wq = st.driver(Side::Write);
    wq.put(data(&s, b"arm10")).unwrap();
    p.advance(&s, 3);
    wq.put(data(&s, b"cancel")).unwrap();
    p.advance(&s, 20);
    assert_eq!(fired.get(), 0, "a cancelled timeout never runs");
    wq.put(data(&s, b"arm5")).unwrap();
    p.advance(&s, 10);
    assert_eq!(fired.get(), 1);
    wq.put(data(&s, b"cancel")).unwrap();
    assert_eq!(
        *rets.lock().unwrap(),
        [7, -1],
        "remaining ticks before expiry; -1 after completion"
    );
}

#[test]
fn scenario_53_quntimeout_bypasses_a_callback_waiting_at_the_perimeter() {
    let _w = watchdog(60);
    let s = host();
    let (fired, ret) = (Counter::new(), Arc::new(Mutex::new(None)));
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let (fired, ret) = (fired.clone(), ret.clone());
            move |q, _m| {
                let fired = fired.clone();
                let id = q.qtimeout(0, move |_q| fired.add()).unwrap();
                let s = q.streams_handle();
                until(|| s.callback_state(id) == Some(CbState::Fired));
                *ret.lock().unwrap() = Some(q.quntimeout(id));
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    st.driver(Side::Write).put(data(&s, b"x")).unwrap();
    s.quiesce();
    assert_eq!(*ret.lock().unwrap(), Some(0));
    assert_eq!(fired.get(), 0, "the bypassed callback never runs");
}

#[test]
fn scenario_54_qbufcall_runs_inside_the_perimeter_when_memory_returns() {
    let p = Arc::new(DetPlatform::new());
    let cfg = StreamsConfig {
        pool: PoolConfig {
            max_bytes: 100,
            max_blocks: 100,
        },
        ..Default::default()
    };
    let s = Streams::new(p, cfg);
    let (rec, result): (Arc<Recorder>, Results<Result<CallbackId, Error>>) =
        (Recorder::new(), Arc::default());
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let (rec, result) = (rec.clone(), result.clone());
            move |q, _m| {
                assert!(q.allocb(64).is_none());
                let rec = rec.clone();
                result.lock().unwrap().push(q.qbufcall(64, move |q| {
                    let got = q.allocb(64).is_some();
                    rec.note(format!(
                        "cb in {:?} excl={} allocb={got}",
                        q.entry(),
                        q.syncq_flags() & SQ_EXCL != 0
                    ));
                }));
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    let hog = s.allocb(90).unwrap();
    st.driver(Side::Write).put(data(&s, b"try")).unwrap();
    let id = result.lock().unwrap()[0].clone().unwrap();
    assert_ne!(id.0, 0);
    s.run_until_idle();
    assert!(rec.log().is_empty(), "no memory yet");
    drop(hog);
    s.run_until_idle();
    assert_eq!(
        rec.log(),
        [format!("cb in Callback({}) excl=true allocb=true", id.0)]
    );

    // Registration failure: 0 (an error here), and no call ever.
    let p = Arc::new(DetPlatform::new());
    let s = Streams::new(
        p,
        StreamsConfig {
            pool: PoolConfig {
                max_bytes: 100,
                max_blocks: 100,
            },
            max_bufcalls: 0,
            ..Default::default()
        },
    );
    let st = Stream::open(&s, &m).unwrap();
    let hog = s.allocb(90).unwrap();
    st.driver(Side::Write).put(data(&s, b"try")).unwrap();
    drop(hog);
    s.run_until_idle();
    assert_eq!(result.lock().unwrap()[1], Err(Error::NoBuffer));
    assert_eq!(rec.log().len(), 1, "the failed request never calls back");
}

#[test]
fn scenario_55_qunbufcall_waits_for_a_running_callback_except_from_inside() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, running, id): (Arc<Recorder>, Arc<Latch>, Arc<Counter>, Slot) = (
        Recorder::new(),
        Latch::new(),
        Counter::new(),
        Arc::default(),
    );
    let m = def(
        "M",
        D_MP | D_MTQPAIR | D_MTPUTSHARED | D_MTCBSHARED,
        (false, false),
        Fns::pass().put({
            let (rec, gate, running, id) = (rec.clone(), gate.clone(), running.clone(), id.clone());
            move |q, m| match text(&m).as_str() {
                "arm" => {
                    let (rec, gate, running) = (rec.clone(), gate.clone(), running.clone());
                    *id.lock().unwrap() = Some(
                        q.qbufcall(1, move |_q| {
                            running.add();
                            gate.wait();
                            rec.note("callback done");
                        })
                        .unwrap(),
                    );
                }
                _ => {
                    q.qunbufcall(id.lock().unwrap().unwrap());
                    rec.note("qunbufcall returned");
                    q.qunbufcall(CallbackId(u64::MAX)); // unknown: no effect
                }
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    let wq = st.driver(Side::Write);
    wq.put(data(&s, b"arm")).unwrap();
    running.wait_for(1);
    let returned = Counter::new();
    thread::scope(|t| {
        t.spawn(|| {
            wq.put(data(&s, b"cancel")).unwrap();
            returned.add();
        });
        assert!(
            !returned.wait_for_timeout(1, 100),
            "qunbufcall waits for the running callback"
        );
        gate.open();
    });
    assert_eq!(rec.log(), ["callback done", "qunbufcall returned"]);

    // From inside its own callback: no deadlock.
    let (p, s) = det();
    let _ = p;
    let (id, done): (Slot, Arc<AtomicBool>) = (Arc::default(), Arc::default());
    let m = def(
        "I",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let (id, done) = (id.clone(), done.clone());
            move |q, _m| {
                let (id2, done) = (id.clone(), done.clone());
                *id.lock().unwrap() = Some(
                    q.qbufcall(1, move |q| {
                        q.qunbufcall(id2.lock().unwrap().unwrap());
                        done.store(true, Ordering::SeqCst);
                    })
                    .unwrap(),
                );
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    st.driver(Side::Write).put(data(&s, b"x")).unwrap();
    s.run_until_idle();
    assert!(done.load(Ordering::SeqCst));
}

#[test]
fn scenario_56_qwait_in_open_returns_after_a_qtimeout_callback() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let fired = Arc::new(AtomicBool::new(false));
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().open({
            let (rec, fired) = (rec.clone(), fired.clone());
            move |q| {
                q.qprocson().unwrap();
                let f2 = fired.clone();
                let id = q
                    .qtimeout(1, move |_q| f2.store(true, Ordering::SeqCst))
                    .unwrap();
                while !fired.load(Ordering::SeqCst) {
                    q.qwait().unwrap();
                }
                assert_eq!(
                    q.streams_handle().callback_state(id),
                    None,
                    "finished before the wake-up"
                );
                rec.note("open returns");
                Ok(())
            }
        }),
    );
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&m).unwrap();
    assert_eq!(rec.log(), ["open returns"]);
}

#[test]
fn a_close_that_blocks_or_unlinks_with_callbacks_outstanding_is_reported() {
    let (p, s) = det();
    let (ids, results, fired): (Slot, Results<Result<(), Error>>, Arc<Counter>) =
        (Arc::default(), Arc::default(), Counter::new());
    let mk = |cancel_first: bool| {
        let (ids, results, fired) = (ids.clone(), results.clone(), fired.clone());
        let ids2 = ids.clone();
        def(
            "M",
            D_MP | D_MTQPAIR,
            (false, false),
            Fns::pass()
                .open(move |q| {
                    q.qprocson().unwrap();
                    let fired = fired.clone();
                    *ids.lock().unwrap() = Some(q.qtimeout(100, move |_q| fired.add()).unwrap());
                    Ok(())
                })
                .close(move |q| {
                    results.lock().unwrap().push(q.qwait());
                    if cancel_first {
                        q.quntimeout(ids2.lock().unwrap().unwrap());
                    }
                    results.lock().unwrap().push(q.qprocsoff());
                }),
        )
    };
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&mk(false)).unwrap();
    st.pop().unwrap();
    st.push(&mk(true)).unwrap();
    st.pop().unwrap();
    p.advance(&s, 1000);
    assert_eq!(
        *results.lock().unwrap(),
        [
            Err(Error::CallbacksOutstanding(1)),
            Err(Error::CallbacksOutstanding(1)),
            Err(Error::CallbacksOutstanding(1)),
            Ok(()),
        ]
    );
    assert_eq!(
        fired.get(),
        0,
        "the forgotten timeout was cancelled, never run on a removed queue"
    );
}

#[test]
fn cancelling_a_timeout_from_a_qwriter_inside_it_does_not_wait_for_itself() {
    let (p, s) = det();
    let (id, rets): (Slot, Results<i64>) = (Arc::default(), Arc::default());
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let (id, rets) = (id.clone(), rets.clone());
            move |q, _m| {
                let (id2, rets) = (id.clone(), rets.clone());
                *id.lock().unwrap() = Some(
                    q.qtimeout(1, move |q| {
                        let mp = q.allocb(0).unwrap();
                        let (id3, rets) = (id2.clone(), rets.clone());
                        q.qwriter(
                            mp,
                            move |q, _m| {
                                rets.lock()
                                    .unwrap()
                                    .push(q.quntimeout(id3.lock().unwrap().unwrap()))
                            },
                            Perim::Inner,
                        )
                        .unwrap();
                    })
                    .unwrap(),
                );
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    st.driver(Side::Write).put(data(&s, b"arm")).unwrap();
    p.advance(&s, 5);
    assert_eq!(*rets.lock().unwrap(), [-1]);
}

/// Arms a qbufcall whose callback tries to allocate and, failing, arms again.
fn rearm(q: Q<'_>, fired: Arc<Counter>) {
    let f = fired.clone();
    q.qbufcall(8, move |q| {
        f.add();
        if q.allocb(8).is_none() {
            rearm(q, f);
        }
    })
    .unwrap();
}

#[test]
fn a_bufcall_that_rearms_under_injected_failures_is_paced_by_the_clock() {
    let (p, s) = det();
    let fired = Counter::new();
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let fired = fired.clone();
            move |q, _m| {
                assert!(q.allocb(8).is_none());
                rearm(q, fired.clone());
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    let go = data(&s, b"go");
    s.set_faults(vec![FaultPolicy::EveryNth(1)]);
    st.driver(Side::Write).put(go).unwrap();
    // Every allocation fails, yet the pool has room: without a bound, this never ends.
    let mut steps = 0;
    while s.run_one() {
        steps += 1;
        assert!(steps < 100_000, "the bufcall spins: {} fires", fired.get());
    }
    assert_eq!(fired.get(), FAULTED_FIRES_PER_TICK);
    p.advance(&s, 1);
    assert_eq!(
        fired.get(),
        2 * FAULTED_FIRES_PER_TICK,
        "the next tick goes on"
    );
    // Once faults stop, the next retry allocates and the module stops asking.
    s.set_faults(vec![]);
    p.advance(&s, 1);
    assert_eq!(fired.get(), 2 * FAULTED_FIRES_PER_TICK + 1);
    p.advance(&s, 5);
    assert_eq!(fired.get(), 2 * FAULTED_FIRES_PER_TICK + 1);
}
