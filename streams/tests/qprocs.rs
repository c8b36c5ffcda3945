//! Scenarios 40–45 (docs/streams.md, "qprocson and qprocsoff").
mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use streams::*;

/// A module that logs "{r,w}put:{data}" and passes messages on.
fn logging(rec: &Arc<Recorder>) -> Fns {
    let rec = rec.clone();
    Fns::pass().put(move |q, m| {
        rec.note(format!(
            "{}:{}",
            if q.is_read() { "rput" } else { "wput" },
            text(&m)
        ));
        q.putnext(m);
    })
}

#[test]
fn scenario_40_before_qprocson_messages_flow_past_the_module() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let (gate, opening) = (Latch::new(), Counter::new());
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        logging(&rec).open({
            let (gate, opening) = (gate.clone(), opening.clone());
            move |q| {
                opening.add();
                gate.wait();
                q.qprocson().unwrap();
                Ok(())
            }
        }),
    );
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.push(&m).unwrap());
        opening.wait_for(1);
        st.write(b"early").unwrap();
        gate.open();
    });
    st.write(b"late").unwrap();
    assert_eq!(contents(&st.driver(Side::Write)), ["early", "late"]);
    assert_eq!(
        rec.log(),
        ["wput:late"],
        "M's put saw only the message sent after qprocson"
    );
}

#[test]
fn scenario_41_an_inserted_queue_backenables_the_writer_above() {
    let (_p, s) = det();
    let info = ModuleInfo {
        hiwat: 10,
        lowat: 5,
        ..Default::default()
    };
    let d = def_info(
        "D",
        D_MP | D_MTQPAIR,
        (false, true),
        info,
        Fns::pass().put(|q, m| q.putq(m)),
    );
    let st = Stream::open(&s, &d).unwrap();
    st.push(&def("U", D_MP | D_MTQPAIR, (false, true), Fns::pass()))
        .unwrap();
    let (u, dq) = (st.queue(1, Side::Write).unwrap(), st.driver(Side::Write));
    dq.noenable();
    dq.putq(data(&s, &[0; 10]));
    assert!(!u.canputnext());
    assert_ne!(dq.flags() & QWANTW, 0);
    assert_eq!(u.flags() & QENAB, 0);
    st.insert(&def("M", D_MP | D_MTQPAIR, (false, true), Fns::pass()), 2)
        .unwrap();
    assert_ne!(u.flags() & QENAB, 0, "U's srv enabled when M was linked in");
    assert!(
        u.canputnext(),
        "U now flow-controls against M's empty queue"
    );
}

#[test]
fn scenario_42_qprocsoff_waits_for_every_thread_in_the_stream() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let (g1, g3, in1, in3) = (Latch::new(), Latch::new(), Counter::new(), Counter::new());
    let drv = sink_driver("d");
    let st = Stream::open(&s, &drv).unwrap();
    // X, below M: its read put waits at g3 for "hold".
    st.push(&def(
        "X",
        D_MP | D_MTQPAIR,
        (false, false),
        logging(&rec).put({
            let (rec, g3, in3) = (rec.clone(), g3.clone(), in3.clone());
            move |q, m| {
                rec.note(format!(
                    "{}:{}",
                    if q.is_read() { "X.rput" } else { "X.wput" },
                    text(&m)
                ));
                if text(&m) == "hold" {
                    in3.add();
                    g3.wait();
                    rec.note("X left");
                } else {
                    q.putnext(m);
                }
            }
        }),
    ))
    .unwrap();
    // M (PERQ): its write srv waits at g1.
    st.push(&def(
        "M",
        D_MP | D_MTPERQ,
        (false, true),
        logging(&rec)
            .put(|q, m| if q.is_read() { q.putnext(m) } else { q.putq(m) })
            .srv({
                let (rec, g1, in1) = (rec.clone(), g1.clone(), in1.clone());
                move |q| {
                    while let Some(m) = q.getq() {
                        in1.add();
                        g1.wait();
                        rec.note("M.srv left");
                        q.putnext(m);
                    }
                }
            }),
    ))
    .unwrap();
    let popped = Counter::new();
    thread::scope(|t| {
        st.queue(1, Side::Write)
            .unwrap()
            .put(data(&s, b"via-srv"))
            .unwrap();
        in1.wait_for(1);
        t.spawn(|| {
            st.queue(2, Side::Read)
                .unwrap()
                .put(data(&s, b"hold"))
                .unwrap()
        });
        in3.wait_for(1);
        t.spawn(|| {
            st.pop().unwrap();
            rec.note("qprocsoff done");
            popped.add();
        });
        until(|| st.queue(2, Side::Write).unwrap().syncq_flags() & SQ_BLOCKED != 0);
        g1.open();
        assert!(!popped.wait_for_timeout(1, 100), "still waiting for X");
        g3.open();
    });
    let log = rec.log();
    assert!(
        before(&log, "M.srv left", "qprocsoff done") && before(&log, "X left", "qprocsoff done"),
        "{log:?}"
    );
    st.write(b"after").unwrap();
    assert!(has(&rec.log(), "X.wput:after"));
    assert!(!has(&rec.log(), "wput:after"), "M is bypassed");
    assert_eq!(st.modules(), 1);
}

#[test]
fn scenario_43_messages_deferred_at_qprocsoff_move_on_or_are_freed() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let (gate, closing) = (Latch::new(), Counter::new());
    let close = {
        let (gate, closing) = (gate.clone(), closing.clone());
        move |q: Q<'_>| {
            closing.add();
            gate.wait();
            q.qprocsoff().unwrap();
        }
    };
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        logging(&rec).close(close.clone()),
    ))
    .unwrap();
    let mq = st.queue(1, Side::Write).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.pop().unwrap());
        closing.wait_for(1);
        for x in ["m1", "m2", "m3"] {
            mq.put(data(&s, x.as_bytes())).unwrap(); // deferred: close holds M
        }
        gate.open();
    });
    s.quiesce();
    assert_eq!(
        contents(&st.driver(Side::Write)),
        ["m1", "m2", "m3"],
        "moved to the module below, in order"
    );
    assert!(rec.log().is_empty(), "M's put never ran");

    // A driver's deferred messages are freed.
    let (gate, closing) = (Latch::new(), Counter::new());
    let frees = Arc::new(AtomicUsize::new(0));
    let drv = def(
        "drv",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put(|_q, _m| panic!("never delivered")).close({
            let (gate, closing) = (gate.clone(), closing.clone());
            move |q| {
                closing.add();
                gate.wait();
                q.qprocsoff().unwrap();
            }
        }),
    );
    let st = Stream::open(&s, &drv).unwrap();
    let dq = st.driver(Side::Write);
    thread::scope(|t| {
        t.spawn(|| drop(st));
        closing.wait_for(1);
        for _ in 0..3 {
            let f2 = frees.clone();
            let buf = Box::into_raw(Box::new([0u8; 1])) as *mut u8 as usize;
            // SAFETY: the box belongs to the message until the free routine runs.
            let m = unsafe {
                s.desballoc(
                    buf as *mut u8,
                    1,
                    Box::new(move || {
                        drop(Box::from_raw(buf as *mut [u8; 1]));
                        f2.fetch_add(1, Ordering::SeqCst);
                    }),
                )
            }
            .unwrap();
            dq.put(m).unwrap();
        }
        gate.open();
    });
    assert_eq!(
        frees.load(Ordering::SeqCst),
        3,
        "a driver's deferred messages are freed"
    );
}

#[test]
fn scenario_44_a_scheduled_srv_never_runs_after_qprocsoff() {
    let (_p, s) = det();
    let runs = Counter::new();
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&def(
        "M",
        D_MP | D_MTQPAIR,
        (false, true),
        Fns::pass().put(|q, m| q.putq(m)).srv({
            let runs = runs.clone();
            move |_q| runs.add()
        }),
    ))
    .unwrap();
    let mq = st.queue(1, Side::Write).unwrap();
    mq.put(data(&s, b"x")).unwrap();
    assert_ne!(mq.flags() & QENAB, 0, "scheduled, not started");
    st.pop().unwrap();
    s.run_until_idle();
    assert_eq!(runs.get(), 0);
    assert_eq!(mq.flags() & (QENAB | QINSERVICE), 0);
}

#[test]
fn scenario_45_double_qprocsoff_is_a_noop_and_a_missing_one_is_reported() {
    let (_p, s) = det();
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&def(
        "twice",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().close({
            let results = results.clone();
            move |q| {
                results.lock().unwrap().push(q.qprocsoff());
                results.lock().unwrap().push(q.qprocsoff());
            }
        }),
    ))
    .unwrap();
    st.pop().unwrap();
    assert_eq!(*results.lock().unwrap(), [Ok(()), Ok(())]);
    st.push(&def(
        "forgetful",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().close(|_q| {}),
    ))
    .unwrap();
    let mq = st.queue(1, Side::Write).unwrap();
    assert_eq!(st.pop(), Err(Error::CloseWithoutQprocsoff("forgetful")));
    assert_ne!(mq.flags() & QWCLOSE, 0, "the framework did the qprocsoff");
    st.write(b"x").unwrap();
    assert_eq!(
        contents(&st.driver(Side::Write)),
        ["x"],
        "the module is out of the flow"
    );
}

#[test]
fn an_open_that_forgets_qprocson_fails_and_leaves_nothing_behind() {
    let (_p, s) = det();
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    let r = st.push(&def(
        "lazy",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().open(|_q| Ok(())),
    ));
    assert_eq!(r, Err(Error::OpenWithoutQprocson("lazy")));
    assert_eq!(st.modules(), 0);
    let r = st.push(&def(
        "refuses",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().open(|q| {
            q.qprocson().unwrap();
            Err(Errno::EBUSY)
        }),
    ));
    assert_eq!(r, Err(Error::Errno(Errno::EBUSY)));
    assert_eq!(st.modules(), 0);
    st.write(b"x").unwrap();
    assert_eq!(contents(&st.driver(Side::Write)), ["x"]);
}

#[test]
fn put_before_qprocson_is_an_error() {
    let (_p, s) = det();
    let results = Arc::new(std::sync::Mutex::new(Vec::new()));
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&def(
        "early",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().open({
            let results = results.clone();
            move |q| {
                let m = q.allocb(1).unwrap();
                results.lock().unwrap().push(q.put(m).err());
                results.lock().unwrap().push(q.qtimeout(1, |_q| {}).err());
                results.lock().unwrap().push(q.qwait().err());
                q.qprocson().unwrap();
                Ok(())
            }
        }),
    ))
    .unwrap();
    assert_eq!(
        *results.lock().unwrap(),
        [
            Some(Error::NotLinked("put")),
            Some(Error::NotLinked("qtimeout")),
            Some(Error::NotLinked("qwait"))
        ]
    );
}

#[test]
fn popping_a_full_module_backenables_the_writer_waiting_for_it() {
    let (_p, s) = det();
    // head – P (read srv, small marks) – D (driver, read srv)
    let d = def("D", D_MP | D_MTQPAIR, (true, false), Fns::pass());
    let st = Stream::open(&s, &d).unwrap();
    let info = ModuleInfo {
        hiwat: 4,
        lowat: 1,
        ..Default::default()
    };
    st.push(&def_info(
        "P",
        D_MP | D_MTQPAIR,
        (true, false),
        info,
        Fns::pass(),
    ))
    .unwrap();
    let (p_r, d_r) = (st.queue(1, Side::Read).unwrap(), st.driver(Side::Read));
    p_r.noenable();
    p_r.putq(data(&s, &[0; 4]));
    assert!(!d_r.canputnext(), "D is flow-controlled by P");
    assert_eq!(d_r.flags() & QENAB, 0);
    st.pop().unwrap();
    assert_ne!(
        d_r.flags() & QENAB,
        0,
        "D's srv is back-enabled to retry against the head"
    );
    assert!(d_r.canputnext());
}
