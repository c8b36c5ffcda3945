//! Scenarios 46–50 (docs/streams.md, "qwait").
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use streams::*;

#[test]
fn scenario_46_open_waits_for_a_reply_with_qwait() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let acked = Arc::new(AtomicBool::new(false));
    // The driver answers every request from its write service procedure (another thread).
    let drv = def(
        "drv",
        D_MP | D_MTQPAIR,
        (false, true),
        Fns::pass()
            .put(|q, m| if q.is_read() { q.putnext(m) } else { q.putq(m) })
            .srv(|q| {
                while let Some(m) = q.getq() {
                    q.qreply(m);
                }
            }),
    );
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass()
            .put({
                let (rec, acked) = (rec.clone(), acked.clone());
                move |q, m| {
                    if q.is_read() && text(&m) == "request" {
                        rec.note("rput: reply");
                        acked.store(true, Ordering::SeqCst);
                    } else {
                        q.putnext(m);
                    }
                }
            })
            .open({
                let (rec, acked) = (rec.clone(), acked.clone());
                move |q| {
                    q.qprocson().unwrap();
                    q.wrq().putnext(data(q.streams_handle(), b"request"));
                    while !acked.load(Ordering::SeqCst) {
                        q.qwait().unwrap();
                    }
                    rec.note("open returns");
                    Ok(())
                }
            }),
    );
    let st = Stream::open(&s, &drv).unwrap();
    st.push(&m).unwrap();
    assert_eq!(rec.log(), ["rput: reply", "open returns"]);
}

#[test]
fn scenario_47_qwait_delivers_deferred_work_and_returns_without_sleeping() {
    // On the deterministic platform a sleep with nothing queued would panic.
    let (_p, s) = det();
    let rec = Recorder::new();
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass()
            .put({
                let rec = rec.clone();
                move |_q, m| rec.note(format!("rput:{}", text(&m)))
            })
            .open({
                let rec = rec.clone();
                move |q| {
                    q.qprocson().unwrap();
                    for x in ["d1", "d2"] {
                        q.put(data(q.streams_handle(), x.as_bytes())).unwrap(); // deferred: open holds M
                    }
                    assert!(rec.log().is_empty());
                    q.qwait().unwrap();
                    rec.note("qwait returned");
                    Ok(())
                }
            }),
    );
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&m).unwrap();
    assert_eq!(rec.log(), ["rput:d1", "rput:d2", "qwait returned"]);
}

#[test]
fn scenario_48_qwait_sig_reports_an_interruption_and_reenters() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let sig = Signal::new();
    let (waiting, back, leave) = (Counter::new(), Counter::new(), Latch::new());
    let result = Arc::new(Mutex::new(Vec::new()));
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass()
            .put({
                let rec = rec.clone();
                move |_q, m| rec.note(format!("rput:{}", text(&m)))
            })
            .open({
                let (sig, waiting, back, leave, result) = (
                    sig.clone(),
                    waiting.clone(),
                    back.clone(),
                    leave.clone(),
                    result.clone(),
                );
                move |q| {
                    q.qprocson().unwrap();
                    waiting.add();
                    result.lock().unwrap().push(q.qwait_sig(&sig).unwrap());
                    back.add();
                    leave.wait();
                    Ok(())
                }
            }),
    );
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.push(&m).unwrap());
        waiting.wait_for(1);
        sig.raise();
        back.wait_for(1);
        st.queue(1, Side::Read)
            .unwrap()
            .put(data(&s, b"now"))
            .unwrap();
        assert!(
            !has(&rec.log(), "rput:now"),
            "back inside the perimeter: the put is deferred"
        );
        leave.open();
    });
    assert!(has(&rec.log(), "rput:now"));
    assert_eq!(
        *result.lock().unwrap(),
        [false],
        "interrupted: qwait_sig returns 0"
    );

    // A normal wake-up returns non-zero.
    let (waiting, back, leave) = (Counter::new(), Counter::new(), Latch::new());
    leave.open();
    let m2 = def(
        "M2",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put(|_q, _m| {}).open({
            let (sig, waiting, back, result) =
                (Signal::new(), waiting.clone(), back.clone(), result.clone());
            move |q| {
                q.qprocson().unwrap();
                waiting.add();
                result.lock().unwrap().push(q.qwait_sig(&sig).unwrap());
                back.add();
                Ok(())
            }
        }),
    );
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.push(&m2).unwrap());
        waiting.wait_for(1);
        st.queue(1, Side::Read)
            .unwrap()
            .put(data(&s, b"wake"))
            .unwrap();
    });
    assert_eq!(*result.lock().unwrap(), [false, true]);
}

#[test]
fn scenario_49_perq_qwait_on_the_read_queue_ignores_write_side_activity() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let (flag, wakeups, waiting) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Counter::new(),
    );
    let m = def(
        "M",
        D_MP | D_MTPERQ,
        (false, false),
        Fns::pass()
            .put({
                let (rec, flag) = (rec.clone(), flag.clone());
                move |q, m| {
                    if q.is_read() {
                        flag.store(true, Ordering::SeqCst);
                    } else {
                        rec.note(format!("wput:{}", text(&m)));
                    }
                }
            })
            .open({
                let (flag, wakeups, waiting) = (flag.clone(), wakeups.clone(), waiting.clone());
                move |q| {
                    q.qprocson().unwrap();
                    waiting.add();
                    loop {
                        q.qwait().unwrap();
                        wakeups.fetch_add(1, Ordering::SeqCst);
                        if flag.load(Ordering::SeqCst) {
                            return Ok(());
                        }
                    }
                }
            }),
    );
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.push(&m).unwrap());
        waiting.wait_for(1);
        let wq = st.queue(1, Side::Write).unwrap();
        for i in 0..5 {
            wq.put(data(&s, format!("w{i}").as_bytes())).unwrap();
        }
        assert!(has(&rec.log(), "wput:w4"), "write puts ran during open");
        assert_eq!(
            wakeups.load(Ordering::SeqCst),
            0,
            "write-side puts did not wake qwait(rq)"
        );
        st.queue(1, Side::Read)
            .unwrap()
            .put(data(&s, b"go"))
            .unwrap();
    });
    assert_eq!(wakeups.load(Ordering::SeqCst), 1);
}

#[test]
fn scenario_50_qwait_releases_the_outer_perimeter() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let (flag, waiting, reacquired, leave) = (
        Arc::new(AtomicBool::new(false)),
        Counter::new(),
        Counter::new(),
        Latch::new(),
    );
    let wait_in_open = Arc::new(AtomicBool::new(false));
    let m = def(
        "M",
        D_MP | D_MTQPAIR | D_MTOUTPERIM | D_MTOCEXCL,
        (false, false),
        Fns::pass()
            .put({
                let (rec, flag) = (rec.clone(), flag.clone());
                move |q, m| {
                    if q.is_read() {
                        flag.store(true, Ordering::SeqCst);
                    } else {
                        rec.note(format!("wput:{}", text(&m)));
                    }
                }
            })
            .open({
                let (flag, waiting, reacquired, leave, wait_in_open) = (
                    flag.clone(),
                    waiting.clone(),
                    reacquired.clone(),
                    leave.clone(),
                    wait_in_open.clone(),
                );
                move |q| {
                    q.qprocson().unwrap();
                    if wait_in_open.load(Ordering::SeqCst) {
                        waiting.add();
                        while !flag.load(Ordering::SeqCst) {
                            q.qwait().unwrap();
                        }
                        reacquired.add();
                        leave.wait();
                    }
                    Ok(())
                }
            }),
    );
    let (a, b) = (
        Stream::open(&s, &sink_driver("d")).unwrap(),
        Stream::open(&s, &sink_driver("d")).unwrap(),
    );
    a.push(&m).unwrap();
    wait_in_open.store(true, Ordering::SeqCst);
    let a1 = a.queue(1, Side::Write).unwrap();
    thread::scope(|t| {
        t.spawn(|| b.push(&m).unwrap());
        waiting.wait_for(1);
        // The open holds the outer exclusively except while it sleeps in qwait.
        until(|| {
            a1.put(data(&s, b"probe")).unwrap();
            has(&rec.log(), "wput:probe")
        });
        b.queue(1, Side::Read)
            .unwrap()
            .put(data(&s, b"go"))
            .unwrap();
        reacquired.wait_for(1);
        a1.put(data(&s, b"y")).unwrap();
        assert!(
            !has(&rec.log(), "wput:y"),
            "after qwait the outer is held again"
        );
        leave.open();
    });
    s.quiesce();
    assert!(has(&rec.log(), "wput:y"));
}

#[test]
fn qwait_and_qwriter_refuse_the_unheld_queue_of_a_perq_pair() {
    let (_p, s) = det();
    let results = Arc::new(Mutex::new(Vec::new()));
    let m = def(
        "M",
        D_MP | D_MTPERQ,
        (false, false),
        Fns::pass()
            .open({
                let results = results.clone();
                move |q| {
                    q.qprocson().unwrap();
                    results.lock().unwrap().push(
                        q.wrq()
                            .qwait()
                            .map_err(|e| matches!(e, Error::WrongContext { .. })),
                    );
                    Ok(())
                }
            })
            .put({
                let results = results.clone();
                move |q, m| {
                    let r = q.otherq().qwriter(m, |_q, _m| {}, Perim::Inner);
                    results.lock().unwrap().push(
                        r.map(|_| ())
                            .map_err(|e| matches!(e, Error::WrongContext { .. })),
                    );
                }
            }),
    );
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&m).unwrap();
    st.queue(1, Side::Read)
        .unwrap()
        .put(data(&s, b"x"))
        .unwrap();
    assert_eq!(*results.lock().unwrap(), [Err(true), Err(true)]);
}

#[test]
fn a_flood_of_puts_does_not_keep_qwait_sig_from_returning_into_open() {
    let _w = watchdog(120);
    let s = host();
    let sig = Signal::new();
    let (waiting, back) = (Counter::new(), Counter::new());
    let stop = Arc::new(AtomicBool::new(false));
    // Each message delivered puts the next from outside: a flood that never lets the
    // deferred list empty, until CAP messages.
    const CAP: usize = 200_000;
    let delivered = Arc::new(AtomicUsize::new(0));
    let seen_by_open = Arc::new(AtomicUsize::new(0));
    let rq: Arc<std::sync::OnceLock<QueueRef>> = Arc::default();
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass()
            .put({
                let (delivered, rq, sig) = (delivered.clone(), rq.clone(), sig.clone());
                move |q, _m| {
                    let n = delivered.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == 10 {
                        sig.raise(); // open wakes in the middle of the flood
                    }
                    if n < CAP {
                        let next = data(q.streams_handle(), b"x");
                        rq.get().unwrap().put(next).unwrap();
                    }
                }
            })
            .open({
                let (sig, waiting, back, stop, delivered, seen) = (
                    sig.clone(),
                    waiting.clone(),
                    back.clone(),
                    stop.clone(),
                    delivered.clone(),
                    seen_by_open.clone(),
                );
                move |q| {
                    q.qprocson().unwrap();
                    waiting.add();
                    while q.qwait_sig(&sig).unwrap() && !stop.load(Ordering::SeqCst) {}
                    seen.store(delivered.load(Ordering::SeqCst), Ordering::SeqCst);
                    back.add();
                    Ok(())
                }
            }),
    );
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.push(&m).unwrap());
        waiting.wait_for(1);
        let q = st.queue(1, Side::Read).unwrap();
        assert!(rq.set(q.clone()).is_ok());
        stop.store(true, Ordering::SeqCst);
        q.put(data(&s, b"x")).unwrap();
    });
    let seen = seen_by_open.load(Ordering::SeqCst);
    assert!(
        seen < CAP,
        "open came back only when the flood of {seen} puts stopped"
    );
    s.quiesce();
    assert_eq!(delivered.load(Ordering::SeqCst), CAP, "every put delivered");
}
