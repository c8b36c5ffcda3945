//! Scenarios 8–16 (docs/streams.md, "Queues and order"): priority order, flow control, back-enabling.
mod common;
use common::*;
use streams::*;

/// head – U (write srv) – D (driver, write srv, marks `hiwat`/`lowat`, QNOENB). Their
/// service procedures do nothing; nothing runs until the deterministic platform is told to.
/// Returns the stream with D's and U's write queues.
fn u_over_d(s: &Streams, hiwat: usize, lowat: usize) -> (Stream, QueueRef, QueueRef) {
    let info = ModuleInfo {
        hiwat,
        lowat,
        ..Default::default()
    };
    let d = def_info(
        "D",
        D_MP | D_MTQPAIR,
        (false, true),
        info,
        Fns::pass().put(|q, m| q.putq(m)),
    );
    let st = Stream::open(s, &d).unwrap();
    st.push(&def("U", D_MP | D_MTQPAIR, (false, true), Fns::pass()))
        .unwrap();
    let (d, u) = (st.driver(Side::Write), st.queue(1, Side::Write).unwrap());
    d.noenable();
    (st, d, u)
}

fn types(q: &QueueRef) -> Vec<(MsgType, u8)> {
    q.peek_order().into_iter().map(|(t, b, _)| (t, b)).collect()
}

#[test]
fn scenario_08_putq_orders_high_priority_then_bands_then_band_0() {
    let (_p, s) = det();
    let st = Stream::open(&s, &sink_driver("drv")).unwrap();
    let q = st.driver(Side::Write);
    q.noenable();
    for (name, ty, band) in [
        ("A", MsgType::M_DATA, 0),
        ("B", MsgType::M_DATA, 3),
        ("C", MsgType::M_PCPROTO, 0),
        ("D", MsgType::M_DATA, 5),
        ("E", MsgType::M_DATA, 3),
        ("F", MsgType::M_IOCACK, 0),
    ] {
        q.putq(msg(&s, ty, band, name.as_bytes()));
    }
    assert_eq!(contents(&q), ["C", "F", "D", "B", "E", "A"]);
    let order: Vec<String> = std::iter::from_fn(|| q.getq())
        .map(|m| String::from_utf8(m.data().to_vec()).unwrap())
        .collect();
    assert_eq!(order, ["C", "F", "D", "B", "E", "A"]);
}

#[test]
fn scenario_09_putbq_goes_to_the_front_of_its_band() {
    let (_p, s) = det();
    let st = Stream::open(&s, &sink_driver("drv")).unwrap();
    let q = st.driver(Side::Write);
    for (name, ty, band) in [
        ("A", MsgType::M_DATA, 0),
        ("B", MsgType::M_DATA, 3),
        ("C", MsgType::M_PCPROTO, 0),
        ("D", MsgType::M_DATA, 5),
        ("E", MsgType::M_DATA, 3),
        ("F", MsgType::M_IOCACK, 0),
    ] {
        q.putq(msg(&s, ty, band, name.as_bytes()));
    }
    q.putbq(msg(&s, MsgType::M_DATA, 3, b"G"));
    assert_eq!(contents(&q), ["C", "F", "D", "G", "B", "E", "A"]);
}

#[test]
fn scenario_10_high_priority_messages_lose_their_band() {
    let (_p, s) = det();
    let st = Stream::open(&s, &sink_driver("drv")).unwrap();
    let q = st.driver(Side::Write);
    q.putq(msg(&s, MsgType::M_PCPROTO, 7, b"x"));
    assert_eq!(types(&q), [(MsgType::M_PCPROTO, 0)]);
}

#[test]
fn scenario_11_qfull_at_hiwat_and_backenable_below_lowat_only_when_wanted() {
    for wanted in [false, true] {
        let (_p, s) = det();
        let (_st, d, u) = u_over_d(&s, 100, 50);
        d.putq(data(&s, &[0; 60]));
        assert_eq!(d.flags() & QFULL, 0);
        d.putq(data(&s, &[0; 60]));
        assert_ne!(d.flags() & QFULL, 0, "QFULL after the second");
        if wanted {
            assert!(!u.canputnext());
            assert_ne!(d.flags() & QWANTW, 0);
        }
        d.getq().unwrap();
        assert_eq!(d.flags() & QFULL, 0, "60 < 100");
        assert_eq!(u.flags() & QENAB, 0, "no back-enable above lowat");
        d.getq().unwrap();
        assert_eq!(
            u.flags() & QENAB != 0,
            wanted,
            "back-enable only if QWANTW was set"
        );
        assert_eq!(u.flags() & QBACK != 0, wanted);
    }
}

#[test]
fn scenario_12_zero_length_messages_exert_flow_control() {
    let (_p, s) = det();
    let (_st, d, u) = u_over_d(&s, 4, 1);
    for i in 0..4 {
        assert!(u.canputnext(), "before message {i}");
        d.putq(s.allocb(0).unwrap());
    }
    assert_eq!(d.count(), 0);
    assert_ne!(d.flags() & QFULL, 0, "four blocks reach hiwat 4");
    assert!(!u.canputnext());
}

#[test]
fn scenario_13_flow_control_skips_queues_without_service_procedures() {
    let (_p, s) = det();
    let info = ModuleInfo {
        hiwat: 10,
        lowat: 5,
        ..Default::default()
    };
    // head – B (srv) – A (no srv) – C (driver, srv)
    let c = def_info(
        "C",
        D_MP | D_MTQPAIR,
        (false, true),
        info,
        Fns::pass().put(|q, m| q.putq(m)),
    );
    let st = Stream::open(&s, &c).unwrap();
    st.push(&def("A", D_MP | D_MTQPAIR, (false, false), Fns::pass()))
        .unwrap();
    let back_seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = back_seen.clone();
    st.push(&def(
        "B",
        D_MP | D_MTQPAIR,
        (false, true),
        Fns::pass().srv(move |q| seen.lock().unwrap().push(q.flags() & QBACK != 0)),
    ))
    .unwrap();
    let (b, a, cq) = (
        st.queue(1, Side::Write).unwrap(),
        st.queue(2, Side::Write).unwrap(),
        st.driver(Side::Write),
    );
    cq.noenable();
    cq.putq(data(&s, &[0; 10]));
    assert!(!b.canputnext(), "B sees C full through A");
    assert_ne!(cq.flags() & QWANTW, 0, "QWANTW on C");
    assert_eq!(a.flags() & QWANTW, 0, "not on A");
    cq.getq().unwrap();
    s.run_until_idle();
    assert_eq!(
        *back_seen.lock().unwrap(),
        [true],
        "B's srv ran, back-enabled"
    );
    assert_eq!(b.flags() & QBACK, 0, "QBACK cleared after the run");
}

#[test]
fn scenario_14_bands_have_their_own_flow_control() {
    let (_p, s) = det();
    let (_st, d, u) = u_over_d(&s, 10, 5);
    assert!(u.bcanputnext(9), "a band never used can");
    d.putq(msg(&s, MsgType::M_DATA, 9, &[0; 10]));
    s.run_until_idle(); // banded putq enables D's srv even with QNOENB; it only records
    assert!(u.canputnext(), "band 0 unaffected");
    assert!(!u.bcanputnext(9));
    assert_ne!(d.band_flags(9) & QB_WANTW, 0);
    assert_eq!(u.flags() & QENAB, 0);
    d.getq().unwrap();
    assert_ne!(
        u.flags() & QENAB,
        0,
        "band 9 below its lowat back-enables upstream"
    );
}

#[test]
fn scenario_15_flushdata_keeps_control_messages_in_order() {
    let (_p, s) = det();
    let (_st, d, u) = u_over_d(&s, 2, 1);
    for (ty, name) in [
        (MsgType::M_CTL, "ctl"),
        (MsgType::M_DATA, "data"),
        (MsgType::M_IOCTL, "ioctl"),
        (MsgType::M_PROTO, "proto"),
        (MsgType::M_DELAY, "delay"),
    ] {
        d.putq(msg(&s, ty, 0, name.as_bytes()));
    }
    assert!(!u.canputnext());
    d.flushq(FLUSHDATA);
    assert_eq!(contents(&d), ["ctl", "ioctl"]);
    assert_eq!(u.flags() & QENAB, 0, "two blocks left: not below lowat 1");
    d.flushq(FLUSHALL);
    assert!(d.is_empty());
    assert_ne!(
        u.flags() & QENAB,
        0,
        "below lowat with QWANTW: upstream enabled"
    );
}

#[test]
fn scenario_16_flushband_touches_only_its_band() {
    let (_p, s) = det();
    let st = Stream::open(&s, &sink_driver("drv")).unwrap();
    let q = st.driver(Side::Write);
    for (band, name) in [(3, "a"), (0, "b"), (3, "c"), (5, "d")] {
        q.putq(msg(&s, MsgType::M_DATA, band, name.as_bytes()));
    }
    q.putq(msg(&s, MsgType::M_PCPROTO, 0, b"hp"));
    q.flushband(3, FLUSHALL);
    assert_eq!(contents(&q), ["hp", "d", "b"]);
    q.flushband(9, FLUSHALL); // never used: no-op
    assert_eq!(q.len(), 3);
    q.flushband(0, FLUSHDATA); // band 0 includes high priority
    assert_eq!(contents(&q), ["d"]);
}
