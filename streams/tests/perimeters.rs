//! Scenarios 21–32 (docs/streams.md, "Perimeters"), multi-threaded: latches hold threads inside
//! routines, a recorder logs entries and exits and counts overlaps.
mod common;
use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use streams::*;

fn side(q: &Q<'_>) -> &'static str {
    if q.is_read() { "rput" } else { "wput" }
}

/// put records "+{r,w}put:{data}"; data "hold…" stops at `gate` after counting in `inside`.
fn recording_put(
    rec: Arc<Recorder>,
    gate: Arc<Latch>,
    inside: Arc<Counter>,
    excl: &'static [&'static str],
) -> Fns {
    Fns::pass().put(move |q, m| {
        let t = text(&m);
        // "wput:" in `excl` excludes only write puts; "rput"/"wput" exclude both sides.
        let mine: Vec<&str> = excl
            .iter()
            .copied()
            .filter(|e| !e.ends_with(':') || e.starts_with(side(&q)))
            .collect();
        let _in = rec.enter(format!("{}:{t}", side(&q)), &mine);
        if t.starts_with("hold") {
            inside.add();
            gate.wait();
        }
    })
}

/// A driver `M` whose put records "{r,w}put:{data}" and holds "hold*" messages at `gate`.
struct Held {
    s: Streams,
    st: Stream,
    rec: Arc<Recorder>,
    gate: Arc<Latch>,
    inside: Arc<Counter>,
}

impl Held {
    fn new(s: Streams, flags: u32, excl: &'static [&'static str]) -> Held {
        let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
        let m = def(
            "M",
            flags,
            (false, false),
            recording_put(rec.clone(), gate.clone(), inside.clone(), excl),
        );
        let st = Stream::open(&s, &m).unwrap();
        Held {
            s,
            st,
            rec,
            gate,
            inside,
        }
    }
    /// Puts `bytes` to the driver's queue on `side` (returns at once unless "hold").
    fn put(&self, side: Side, bytes: &[u8]) {
        self.st.driver(side).put(data(&self.s, bytes)).unwrap();
    }
    fn log(&self) -> Vec<String> {
        self.rec.log()
    }
}

#[test]
fn scenario_21_qpair_defers_a_put_while_the_pair_is_busy() {
    let _w = watchdog(60);
    let h = Held::new(host(), D_MP | D_MTQPAIR, &["rput", "wput"]);
    thread::scope(|t| {
        t.spawn(|| h.put(Side::Write, b"hold"));
        h.inside.wait_for(1);
        h.put(Side::Read, b"r1"); // returns at once
        assert!(
            !has(&h.log(), "+rput:r1"),
            "rput has not run while wput is inside"
        );
        h.gate.open();
    });
    h.s.quiesce();
    let log = h.log();
    assert!(before(&log, "-wput:hold", "+rput:r1"), "{log:?}");
    assert_eq!(h.rec.overlaps(), 0);
}

#[test]
fn scenario_22_deferred_puts_are_delivered_in_order_and_never_block() {
    let _w = watchdog(60);
    let h = Held::new(host(), D_MP | D_MTQPAIR, &["rput", "wput"]);
    thread::scope(|t| {
        t.spawn(|| h.put(Side::Write, b"hold"));
        h.inside.wait_for(1);
        for x in ["m1", "m2", "m3"] {
            h.put(Side::Write, x.as_bytes()); // T2 is never blocked
        }
        assert!(!has(&h.log(), "+wput:m1"));
        h.gate.open();
    });
    h.s.quiesce();
    let log: Vec<String> = h.log().into_iter().filter(|l| l.starts_with('+')).collect();
    assert_eq!(log, ["+wput:hold", "+wput:m1", "+wput:m2", "+wput:m3"]);
}

#[test]
fn scenario_23_perq_lets_read_and_write_overlap_but_not_two_writes() {
    let _w = watchdog(60);
    let h = Held::new(host(), D_MP | D_MTPERQ, &["wput:"]);
    thread::scope(|t| {
        t.spawn(|| h.put(Side::Write, b"hold"));
        h.inside.wait_for(1);
        h.put(Side::Read, b"r");
        assert!(has(&h.log(), "-rput:r"), "rput ran while wput was inside");
        h.put(Side::Write, b"w2");
        assert!(!has(&h.log(), "+wput:w2"), "a second wput waits");
        h.gate.open();
    });
    h.s.quiesce();
    assert!(before(&h.log(), "-wput:hold", "+wput:w2"));
    assert_eq!(h.rec.overlaps(), 0, "two wputs never overlap");
}

#[test]
fn scenario_24_permod_excludes_across_streams() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let m = def(
        "M",
        D_MP | D_MTPERMOD,
        (false, false),
        recording_put(rec.clone(), gate.clone(), inside.clone(), &["rput", "wput"]).put({
            let (rec, gate, inside) = (rec.clone(), gate.clone(), inside.clone());
            move |q, mp| {
                let t = text(&mp);
                let _in = rec.enter(format!("{}:{t}", side(&q)), &["rput", "wput"]);
                if t.starts_with("hold") {
                    inside.add();
                    gate.wait();
                }
                q.putnext(mp);
            }
        }),
    );
    let (s1, s2) = (
        Stream::open(&s, &sink_driver("d1")).unwrap(),
        Stream::open(&s, &sink_driver("d2")).unwrap(),
    );
    s1.push(&m).unwrap();
    s2.push(&m).unwrap();
    thread::scope(|t| {
        t.spawn(|| s1.putmsg(data(&s, b"hold")).unwrap());
        inside.wait_for(1);
        s2.putmsg(data(&s, b"x")).unwrap();
        assert!(
            !has(&rec.log(), "+wput:x"),
            "the other stream's instance waits"
        );
        gate.open();
    });
    s.quiesce();
    assert!(before(&rec.log(), "-wput:hold", "+wput:x"));
    // Hammer both streams from four threads.
    thread::scope(|t| {
        for i in 0..4 {
            let st = if i % 2 == 0 { &s1 } else { &s2 };
            let s = &s;
            t.spawn(move || {
                for _ in 0..300 {
                    st.putmsg(data(s, b"y")).unwrap();
                    st.driver(Side::Read).put(data(s, b"z")).unwrap();
                }
            });
        }
    });
    s.quiesce();
    assert_eq!(rec.overlaps(), 0, "no two routines of M overlapped");
    assert_eq!(
        s1.driver(Side::Write).len() + s2.driver(Side::Write).len(),
        2 + 1200
    );
}

#[test]
fn scenario_25_d_mp_alone_lets_puts_overlap() {
    let _w = watchdog(60);
    let h = Held::new(host(), D_MP, &["wput"]);
    thread::scope(|t| {
        t.spawn(|| h.put(Side::Write, b"hold"));
        h.inside.wait_for(1);
        h.put(Side::Write, b"y");
        assert!(has(&h.log(), "-wput:y"), "the second put ran concurrently");
        h.gate.open();
    });
    assert_eq!(h.rec.overlaps(), 1, "the two puts overlapped");
}

#[test]
fn scenario_26_putshared_puts_overlap_but_srv_waits_for_them() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let fns = recording_put(rec.clone(), gate.clone(), inside.clone(), &["srv"]).srv({
        let rec = rec.clone();
        move |_q| {
            let _in = rec.enter("srv", &["rput", "wput", "srv"]);
        }
    });
    let m = def("M", D_MP | D_MTQPAIR | D_MTPUTSHARED, (false, true), fns);
    let st = Stream::open(&s, &m).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.driver(Side::Write).put(data(&s, b"hold1")).unwrap());
        t.spawn(|| st.driver(Side::Write).put(data(&s, b"hold2")).unwrap());
        assert!(
            inside.wait_for_timeout(2, 10_000),
            "two puts inside at once"
        );
        st.driver(Side::Write).qenable();
        assert!(!Counter::new().wait_for_timeout(1, 100));
        assert!(
            !has(&rec.log(), "+srv"),
            "srv does not start while puts are inside"
        );
        gate.open();
    });
    s.quiesce();
    let log = rec.log();
    assert!(
        before(&log, "-wput:hold1", "+srv") && before(&log, "-wput:hold2", "+srv"),
        "{log:?}"
    );
    assert_eq!(rec.overlaps(), 0, "srv never overlapped a put");
}

#[test]
fn scenario_27_an_exclusive_entry_runs_after_every_deferred_message() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let fns = recording_put(rec.clone(), gate.clone(), inside.clone(), &[]).srv({
        let rec = rec.clone();
        move |_q| {
            rec.note("+srv");
        }
    });
    let m = def("M", D_MP | D_MTQPAIR, (false, true), fns);
    let st = Stream::open(&s, &m).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.driver(Side::Write).put(data(&s, b"hold")).unwrap());
        inside.wait_for(1);
        st.driver(Side::Write).put(data(&s, b"m1")).unwrap();
        st.driver(Side::Write).put(data(&s, b"m2")).unwrap();
        st.driver(Side::Write).qenable();
        gate.open();
    });
    s.quiesce();
    let log = rec.log();
    assert!(
        before(&log, "+wput:m2", "+srv") && before(&log, "+wput:m1", "+wput:m2"),
        "{log:?}"
    );
}

#[test]
fn scenario_28_loop_around_is_deferred_not_recursive() {
    let (_p, s) = det();
    let rec = Recorder::new();
    let reflector = def(
        "refl",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put(|q, m| {
            if q.is_read() {
                q.putnext(m)
            } else {
                q.qreply(m)
            }
        }),
    );
    let st = Stream::open(&s, &reflector).unwrap();
    st.push(&def(
        "M",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put({
            let rec = rec.clone();
            move |q, m| {
                let _in = rec.enter(side(&q), &["rput", "wput"]);
                q.putnext(m);
            }
        }),
    ))
    .unwrap();
    st.write(b"ping").unwrap();
    assert_eq!(rec.log(), ["+wput", "-wput", "+rput", "-rput"]);
    assert!(matches!(st.read(), ReadResult::Data(m) if m.data() == b"ping"));
}

#[test]
fn scenario_29_ocexcl_open_waits_for_every_instance_and_holds_them_off() {
    let _w = watchdog(60);
    let s = host();
    let (rec, gate, inside) = (Recorder::new(), Latch::new(), Counter::new());
    let (open_gate, opened, hold_open) = (
        Latch::new(),
        Counter::new(),
        Arc::new(AtomicBool::new(false)),
    );
    let fns = recording_put(rec.clone(), gate.clone(), inside.clone(), &["open"]).open({
        let (rec, open_gate, opened, hold_open) = (
            rec.clone(),
            open_gate.clone(),
            opened.clone(),
            hold_open.clone(),
        );
        move |q| {
            let _in = rec.enter("open", &["rput", "wput"]);
            q.qprocson().unwrap();
            if hold_open.load(Ordering::SeqCst) {
                opened.add();
                open_gate.wait();
            }
            Ok(())
        }
    });
    let m = def(
        "M",
        D_MP | D_MTQPAIR | D_MTOUTPERIM | D_MTOCEXCL,
        (false, false),
        fns,
    );
    let streams: Vec<Stream> = (0..4)
        .map(|_| Stream::open(&s, &sink_driver("d")).unwrap())
        .collect();
    for st in &streams[..3] {
        st.push(&m).unwrap();
    }
    hold_open.store(true, Ordering::SeqCst);
    thread::scope(|t| {
        t.spawn(|| streams[0].putmsg(data(&s, b"hold")).unwrap());
        inside.wait_for(1);
        t.spawn(|| streams[3].push(&m).unwrap());
        assert!(
            !opened.wait_for_timeout(1, 200),
            "open of instance 4 waits for the put in instance 1"
        );
        gate.open();
        opened.wait_for(1);
        for (i, x) in [(1, "x2a"), (2, "x3"), (0, "x1"), (1, "x2b")] {
            streams[i].putmsg(data(&s, x.as_bytes())).unwrap();
        }
        let log = rec.log();
        assert!(
            !log.iter().any(|l| l.starts_with("+wput:x")),
            "puts wait while open holds the outer: {log:?}"
        );
        open_gate.open();
    });
    s.quiesce();
    let log = rec.log();
    let opens: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, l)| *l == "-open")
        .map(|(i, _)| i)
        .collect();
    let last_open = *opens.last().unwrap();
    for x in ["x1", "x2a", "x2b", "x3"] {
        let i = log.iter().position(|l| *l == format!("+wput:{x}")).unwrap();
        assert!(i > last_open, "{x} after the open returned: {log:?}");
    }
    assert!(before(&log, "+wput:x2a", "+wput:x2b"), "per-queue FIFO");
    assert_eq!(rec.overlaps(), 0);
}

#[test]
fn scenario_30_opens_without_ocexcl_run_concurrently() {
    let _w = watchdog(60);
    let s = host();
    let inside = Counter::new();
    let both = Arc::new(std::sync::Mutex::new(Vec::new()));
    let fns = Fns::pass().open({
        let (inside, both) = (inside.clone(), both.clone());
        move |q| {
            inside.add();
            both.lock()
                .unwrap()
                .push(inside.wait_for_timeout(2, 10_000));
            q.qprocson().unwrap();
            Ok(())
        }
    });
    let m = def("M", D_MP | D_MTQPAIR | D_MTOUTPERIM, (false, false), fns);
    let (a, b) = (
        Stream::open(&s, &sink_driver("d")).unwrap(),
        Stream::open(&s, &sink_driver("d")).unwrap(),
    );
    thread::scope(|t| {
        t.spawn(|| a.push(&m).unwrap());
        t.spawn(|| b.push(&m).unwrap());
    });
    assert_eq!(
        *both.lock().unwrap(),
        [true, true],
        "each open saw the other inside"
    );
}

#[test]
fn scenario_31_bad_flag_combinations_are_rejected_at_registration() {
    for flags in [
        D_MP | D_MTPERMOD | D_MTOUTPERIM,
        D_MP | D_MTQPAIR | D_MTOCEXCL,
        D_MP | D_MTPUTSHARED,
        D_MTQPAIR,
        D_MP | D_MTQPAIR | D_MTOCSHARED,
        D_MP | D_MTQPAIR | D_MTPUTSHARED | D_MTSVCSHARED,
    ] {
        let r = ModuleDef::builder("bad").flags(flags).build(|| Sink);
        assert_eq!(r.unwrap_err(), Error::BadMtFlags(flags), "{flags:#x}");
    }
    struct Sink;
    impl Module for Sink {
        fn put(&self, _q: Q<'_>, _m: Mblk) {}
    }
}

#[test]
fn scenario_32_perq_open_excludes_read_puts_but_not_write_puts() {
    let _w = watchdog(60);
    let s = host();
    let rec = Recorder::new();
    let (open_gate, opened) = (Latch::new(), Counter::new());
    let fns = Fns::pass()
        .put({
            let rec = rec.clone();
            move |q, m| {
                rec.note(format!("{}:{}", side(&q), text(&m)));
                q.putnext(m);
            }
        })
        .open({
            let (open_gate, opened) = (open_gate.clone(), opened.clone());
            move |q| {
                q.qprocson().unwrap();
                opened.add();
                open_gate.wait();
                Ok(())
            }
        });
    let m = def("M", D_MP | D_MTPERQ, (false, false), fns);
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    thread::scope(|t| {
        t.spawn(|| st.push(&m).unwrap());
        opened.wait_for(1);
        st.putmsg(data(&s, b"w")).unwrap();
        assert!(has(&rec.log(), "wput:w"), "write put ran during open");
        st.driver(Side::Read).putnext(data(&s, b"r")).unwrap();
        assert!(!has(&rec.log(), "rput:r"), "read put waits for open");
        open_gate.open();
    });
    s.quiesce();
    assert!(has(&rec.log(), "rput:r"));
}

#[test]
fn too_many_deferred_messages_make_the_stream_flow_controlled() {
    let _w = watchdog(60);
    let s = HostPlatform::streams(StreamsConfig {
        syncq_max: 10,
        ..Default::default()
    });
    let h = Held::new(s, D_MP | D_MTQPAIR, &[]);
    let wq = h.st.driver(Side::Write);
    thread::scope(|t| {
        t.spawn(|| h.put(Side::Write, b"hold"));
        h.inside.wait_for(1);
        for i in 0..10 {
            h.put(Side::Write, format!("m{i}").as_bytes());
        }
        assert_eq!(wq.deferred(), 10);
        assert!(h.st.canwrite(), "at the limit: still writable");
        h.put(Side::Write, b"m10");
        assert!(
            !h.st.canwrite(),
            "past the limit: canputnext fails upstream"
        );
        h.gate.open();
    });
    h.s.quiesce();
    assert_eq!(wq.deferred(), 0);
    assert!(
        h.st.canwrite(),
        "QFULL re-evaluated once the deferred messages drained"
    );
    assert_eq!(
        h.log().iter().filter(|l| l.starts_with("+wput:m")).count(),
        11
    );
}
