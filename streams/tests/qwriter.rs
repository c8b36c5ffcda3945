//! Scenarios 33–39 (docs/streams.md, "qwriter").
mod common;
use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use streams::*;

#[test]
fn scenario_33_qwriter_runs_at_once_for_the_only_shared_thread() {
    let (_p, s) = det();
    let rec = Recorder::new();
    let m = def(
        "M",
        D_MP | D_MTQPAIR | D_MTPUTSHARED,
        (false, false),
        Fns::pass().put({
            let rec = rec.clone();
            move |q, mp| {
                let r2 = rec.clone();
                let ran = q
                    .qwriter(mp, move |_q, _m| r2.note("f"), Perim::Inner)
                    .unwrap();
                rec.note(format!("returned ran={ran}"));
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    st.driver(Side::Read).put(data(&s, b"x")).unwrap();
    assert_eq!(rec.log(), ["f", "returned ran=true"]);
}

/// A PUTSHARED module whose read put, for "hold*" messages, waits at `gate`; for
/// "writer*" it first waits until two threads are inside, then queues `n` qwriter calls.
fn shared_module(
    flags: u32,
    rec: &Arc<Recorder>,
    gate: &Arc<Latch>,
    inside: &Arc<Counter>,
    n: usize,
) -> Arc<ModuleDef> {
    let (rec, gate, inside) = (rec.clone(), gate.clone(), inside.clone());
    def(
        "M",
        flags,
        (false, false),
        Fns::pass().put(move |q, mp| {
            let t = text(&mp);
            let side = if q.is_read() { "rput" } else { "wput" };
            let _in = rec.enter(format!("{side}:{t}"), &["f"]);
            if t.starts_with("writer") {
                inside.add();
                inside.wait_for(2);
                for i in 1..=n {
                    let r2 = rec.clone();
                    let mp = q.allocb(0).unwrap();
                    let ran = q
                        .qwriter(
                            mp,
                            move |_q, _m| {
                                let _f = r2.enter(format!("f{i}"), &["rput", "wput"]);
                            },
                            Perim::Inner,
                        )
                        .unwrap();
                    rec.note(format!("qwriter{i} ran={ran}"));
                }
                gate.wait();
            } else if t.starts_with("hold") {
                inside.add();
                gate.wait();
            }
        }),
    )
}

#[test]
fn scenario_34_a_deferred_qwriter_runs_alone_before_later_puts() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let m = shared_module(D_MP | D_MTQPAIR | D_MTPUTSHARED, &rec, &gate, &inside, 1);
    let st = Stream::open(&s, &m).unwrap();
    let rq = st.driver(Side::Read);
    thread::scope(|t| {
        t.spawn(|| rq.put(data(&s, b"writer")).unwrap());
        t.spawn(|| rq.put(data(&s, b"hold")).unwrap());
        until(|| has(&rec.log(), "qwriter1 ran=false"));
        rq.put(data(&s, b"m")).unwrap();
        assert!(
            !has(&rec.log(), "+rput:m"),
            "no put enters while the event is pending"
        );
        assert!(!has(&rec.log(), "+f1"));
        gate.open();
    });
    s.quiesce();
    let log = rec.log();
    assert!(
        before(&log, "-rput:writer", "+f1") && before(&log, "-rput:hold", "+f1"),
        "{log:?}"
    );
    assert!(before(&log, "-f1", "+rput:m"), "{log:?}");
    assert_eq!(rec.overlaps(), 0, "no put overlapped f");
}

#[test]
fn scenario_35_nested_qwriter_runs_immediately() {
    let (_p, s) = det();
    let rec = Recorder::new();
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let rec = rec.clone();
            move |q, mp| {
                let r1 = rec.clone();
                q.qwriter(
                    mp,
                    move |q, mp| {
                        r1.note("+f");
                        let r2 = r1.clone();
                        let ran = q
                            .qwriter(mp, move |_q, _m| r2.note("g"), Perim::Inner)
                            .unwrap();
                        r1.note(format!("g ran={ran}"));
                        r1.note("-f");
                    },
                    Perim::Inner,
                )
                .unwrap();
            }
        }),
    );
    let st = Stream::open(&s, &m).unwrap();
    st.driver(Side::Write).put(data(&s, b"x")).unwrap();
    assert_eq!(rec.log(), ["+f", "g", "g ran=true", "-f"]);
}

#[test]
fn scenario_36_deferred_qwriter_events_run_fifo_before_deferred_messages() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let m = shared_module(D_MP | D_MTQPAIR | D_MTPUTSHARED, &rec, &gate, &inside, 3);
    let st = Stream::open(&s, &m).unwrap();
    let rq = st.driver(Side::Read);
    thread::scope(|t| {
        t.spawn(|| rq.put(data(&s, b"writer")).unwrap());
        t.spawn(|| rq.put(data(&s, b"hold")).unwrap());
        until(|| has(&rec.log(), "qwriter3 ran=false"));
        rq.put(data(&s, b"m1")).unwrap();
        st.driver(Side::Write).put(data(&s, b"m2")).unwrap();
        gate.open();
    });
    s.quiesce();
    let log: Vec<String> = rec
        .log()
        .into_iter()
        .filter(|l| l.starts_with('+') && !l.contains("hold") && !l.contains("writer"))
        .collect();
    assert_eq!(log, ["+f1", "+f2", "+f3", "+rput:m1", "+wput:m2"]);
}

/// Two streams over sink drivers, each with an instance of a D_MTOUTPERIM module of `fns`.
fn two_instances(s: &Streams, fns: Fns) -> (Stream, Stream) {
    let m = def("M", D_MP | D_MTQPAIR | D_MTOUTPERIM, (false, false), fns);
    let (s1, s2) = (
        Stream::open(s, &sink_driver("d")).unwrap(),
        Stream::open(s, &sink_driver("d")).unwrap(),
    );
    s1.push(&m).unwrap();
    s2.push(&m).unwrap();
    (s1, s2)
}

#[test]
fn scenario_37_qwriter_outer_waits_for_every_instance_and_holds_them_off() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let alone = Arc::new(Mutex::new(None));
    let fns = Fns::pass().put({
        let (rec, gate, inside, alone) = (rec.clone(), gate.clone(), inside.clone(), alone.clone());
        move |q, mp| {
            let t = text(&mp);
            let side = if q.is_read() { "rput" } else { "wput" };
            let _in = rec.enter(format!("{side}:{t}"), &["f"]);
            match t.as_str() {
                "hold" => {
                    inside.add();
                    gate.wait();
                }
                "outer" => {
                    let (r2, a2) = (rec.clone(), alone.clone());
                    let ran = q
                        .qwriter(
                            mp,
                            move |_q, _m| {
                                let _f = r2.enter("f", &["rput", "wput"]);
                                *a2.lock().unwrap() = Some(r2.inside_now());
                            },
                            Perim::Outer,
                        )
                        .unwrap();
                    rec.note(format!("qwriter ran={ran}"));
                }
                _ => {}
            }
        }
    });
    let (s1, s2) = two_instances(&s, fns);
    let (m1, m2) = (
        s1.queue(1, Side::Write).unwrap(),
        s2.queue(1, Side::Write).unwrap(),
    );
    thread::scope(|t| {
        t.spawn(|| m2.put(data(&s, b"hold")).unwrap());
        inside.wait_for(1);
        s1.queue(1, Side::Read)
            .unwrap()
            .put(data(&s, b"outer"))
            .unwrap();
        assert!(has(&rec.log(), "qwriter ran=false"), "returns before f");
        m1.put(data(&s, b"a1")).unwrap();
        m2.put(data(&s, b"a2")).unwrap();
        m2.put(data(&s, b"b2")).unwrap();
        m2.other().qenable();
        let log = rec.log();
        assert!(
            !log.iter()
                .any(|l| l.starts_with("+wput:a") || l.starts_with("+wput:b")),
            "{log:?}"
        );
        gate.open();
    });
    s.quiesce();
    let log = rec.log();
    assert!(before(&log, "-wput:hold", "+f"), "{log:?}");
    for x in ["+wput:a1", "+wput:a2", "+wput:b2"] {
        assert!(before(&log, "-f", x), "{x} after f: {log:?}");
    }
    assert!(before(&log, "+wput:a2", "+wput:b2"));
    assert_eq!(
        alone.lock().unwrap().clone().unwrap(),
        ["f"],
        "f ran with no thread in any instance"
    );
    assert_eq!(rec.overlaps(), 0);
}

/// The background writer that waits for a busy instance (OUTERWAIT), or for the outer
/// held by another thread (RERUN), is pending work: quiesce returns only after it ran.
#[test]
fn quiesce_waits_for_an_outer_writer_parked_on_a_busy_instance() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let fns = Fns::pass().put({
        let (rec, gate, inside) = (rec.clone(), gate.clone(), inside.clone());
        move |q, mp| match text(&mp).as_str() {
            "hold" => {
                inside.add();
                gate.wait();
            }
            "outer" => {
                let r2 = rec.clone();
                q.qwriter(mp, move |_q, _m| r2.note("f"), Perim::Outer)
                    .unwrap();
            }
            _ => {}
        }
    });
    let (s1, s2) = two_instances(&s, fns);
    thread::scope(|t| {
        t.spawn(|| s2.queue(1, Side::Write).unwrap().put(data(&s, b"hold")));
        inside.wait_for(1);
        s1.queue(1, Side::Read)
            .unwrap()
            .put(data(&s, b"outer"))
            .unwrap();
        // The scenario: the instance stays busy for a while after quiesce is called.
        t.spawn(|| {
            thread::sleep(std::time::Duration::from_millis(200));
            gate.open();
        });
        s.quiesce();
        assert_eq!(rec.log(), ["f"], "quiesce returned before the writer ran");
    });
}

#[test]
fn scenario_38_bad_perimeters_are_errors() {
    let (_p, s) = det();
    let results = Arc::new(Mutex::new(Vec::new()));
    let m = def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass()
            .put({
                let results = results.clone();
                move |q, mp| {
                    let dup = mp.dupb().unwrap();
                    results
                        .lock()
                        .unwrap()
                        .push(q.qwriter(mp, |_q, _m| {}, Perim::Outer));
                    results
                        .lock()
                        .unwrap()
                        .push(q.qwriter_raw(dup, |_q, _m| {}, 3));
                }
            })
            .open({
                let results = results.clone();
                move |q| {
                    q.qprocson().unwrap();
                    let mp = q.allocb(0).unwrap();
                    results
                        .lock()
                        .unwrap()
                        .push(q.qwriter(mp, |_q, _m| {}, Perim::Inner));
                    Ok(())
                }
            }),
    );
    let st = Stream::open(&s, &m).unwrap();
    st.driver(Side::Write).put(data(&s, b"x")).unwrap();
    assert_eq!(
        *results.lock().unwrap(),
        [
            Err(Error::WrongContext {
                call: "qwriter",
                context: "open"
            }),
            Err(Error::NoOuterPerimeter),
            Err(Error::BadPerimeter(3)),
        ]
    );
}

#[test]
fn scenario_39_close_waits_for_a_pending_qwriter_and_removal_drops_a_perq_event() {
    let _w = watchdog(60);
    // First half: QPAIR|PUTSHARED — close's entry waits; f runs alone before close.
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let m = shared_module(D_MP | D_MTQPAIR | D_MTPUTSHARED, &rec, &gate, &inside, 1);
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&m).unwrap();
    let wq = st.queue(1, Side::Write).unwrap();
    let closed = Counter::new();
    thread::scope(|t| {
        t.spawn(|| wq.put(data(&s, b"writer")).unwrap());
        t.spawn(|| wq.put(data(&s, b"hold")).unwrap());
        until(|| has(&rec.log(), "qwriter1 ran=false"));
        t.spawn(|| {
            st.pop().unwrap();
            closed.add();
        });
        assert!(!closed.wait_for_timeout(1, 100), "close waits");
        assert!(!has(&rec.log(), "+f1"));
        gate.open();
    });
    assert!(has(&rec.log(), "-f1"), "f ran before close was entered");

    // Second half: PERQ|PUTSHARED — an event pending on the write syncq when the pair is
    // removed is never called, and its message is freed.
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let frees = Arc::new(AtomicUsize::new(0));
    let m = {
        let (rec, gate, inside, frees) = (rec.clone(), gate.clone(), inside.clone(), frees.clone());
        def(
            "P",
            D_MP | D_MTPERQ | D_MTPUTSHARED,
            (false, false),
            Fns::pass().put(move |q, mp| {
                let t = text(&mp);
                inside.add();
                if t == "writer" {
                    inside.wait_for(2);
                    let buf = Box::into_raw(Box::new([0u8; 4])) as *mut u8 as usize;
                    let f2 = frees.clone();
                    // SAFETY: the box is owned by the message until the free routine runs.
                    let ev = unsafe {
                        q.streams_handle().desballoc(
                            buf as *mut u8,
                            4,
                            Box::new(move || {
                                drop(Box::from_raw(buf as *mut [u8; 4]));
                                f2.fetch_add(1, Ordering::SeqCst);
                            }),
                        )
                    }
                    .unwrap();
                    let r2 = rec.clone();
                    let ran = q
                        .qwriter(ev, move |_q, _m| r2.note("f"), Perim::Inner)
                        .unwrap();
                    rec.note(format!("ran={ran}"));
                }
                gate.wait();
            }),
        )
    };
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&m).unwrap();
    let wq = st.queue(1, Side::Write).unwrap();
    thread::scope(|t| {
        t.spawn(|| wq.put(data(&s, b"writer")).unwrap());
        t.spawn(|| wq.put(data(&s, b"hold")).unwrap());
        until(|| has(&rec.log(), "ran=false"));
        t.spawn(|| st.pop().unwrap());
        until(|| wq.syncq_flags() & SQ_BLOCKED != 0);
        gate.open();
    });
    s.quiesce();
    assert!(
        !has(&rec.log(), "f"),
        "the event was never called: {:?}",
        rec.log()
    );
    assert_eq!(frees.load(Ordering::SeqCst), 1, "its message was freed");
}
