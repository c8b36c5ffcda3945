//! Scenarios 57–62 (docs/streams.md, "Stream head and M_FLUSH").
mod common;
use common::*;
use std::sync::Arc;
use streams::*;

/// A driver that handles M_FLUSH canonically (the framework's helper) and queues
/// anything else written to it.
fn canonical_driver(rec: &Arc<Recorder>) -> Arc<ModuleDef> {
    let rec = rec.clone();
    def(
        "drv",
        D_MP | D_MTQPAIR,
        (false, false),
        Fns::pass().put(move |q, m| {
            if q.is_read() {
                return q.putnext(m);
            }
            if m.db_type() != MsgType::M_FLUSH {
                return q.putq(m);
            }
            rec.note(format!(
                "drv M_FLUSH {:#x} noloop={}",
                m.data()[0],
                m.flag() & MSGNOLOOP != 0
            ));
            q.flush_driver(m);
        }),
    )
}

/// A module that queues data (service procedures never run here) and handles M_FLUSH
/// canonically (the framework's helper).
fn canonical_module() -> Arc<ModuleDef> {
    def(
        "mod",
        D_MP | D_MTQPAIR,
        (true, true),
        Fns::pass().put(|q, m| {
            if m.db_type() == MsgType::M_FLUSH {
                q.flush_module(m);
            } else if m.db_type().is_data() {
                q.putq(m);
            } else {
                q.putnext(m);
            }
        }),
    )
}

fn flush(s: &Streams, flags: u8) -> Mblk {
    msg(s, MsgType::M_FLUSH, 0, &[flags])
}

#[test]
fn scenario_57_an_upstream_flushrw_is_reflected_once() {
    let (_p, s) = det();
    let rec = Recorder::new();
    let st = Stream::open(&s, &canonical_driver(&rec)).unwrap();
    st.push(&canonical_module()).unwrap();
    let (head_r, m_r, m_w, d_w, d_r) = (
        st.queue(0, Side::Read).unwrap(),
        st.queue(1, Side::Read).unwrap(),
        st.queue(1, Side::Write).unwrap(),
        st.driver(Side::Write),
        st.driver(Side::Read),
    );
    head_r.putq(data(&s, b"h"));
    d_r.putnext(data(&s, b"m-read")).unwrap();
    st.write(b"m-write").unwrap();
    d_w.putq(data(&s, b"d-write"));
    assert_eq!(
        [head_r.len(), m_r.len(), m_w.len(), d_w.len()],
        [1, 1, 1, 1]
    );
    d_r.putnext(flush(&s, FLUSHRW)).unwrap();
    assert_eq!(
        [head_r.len(), m_r.len(), m_w.len(), d_w.len()],
        [0, 0, 0, 0],
        "every queue flushed"
    );
    assert!(
        st.head()
            .events()
            .contains(&HeadEvent::FlushReflected(FLUSHW))
    );
    assert_eq!(
        rec.log(),
        ["drv M_FLUSH 0x2 noloop=true"],
        "the driver got FLUSHW with MSGNOLOOP and freed it"
    );
    // An M_FLUSH with FLUSHW and MSGNOLOOP reaching the head is freed, not reflected.
    let mut f = flush(&s, FLUSHW);
    f.set_flag(MSGNOLOOP);
    d_r.putnext(f).unwrap();
    assert_eq!(rec.log().len(), 1);
    assert_eq!(
        st.head()
            .events()
            .iter()
            .filter(|e| matches!(e, HeadEvent::FlushReflected(_)))
            .count(),
        1
    );
}

#[test]
fn scenario_58_flushw_at_the_driver_goes_nowhere_else() {
    let (_p, s) = det();
    let rec = Recorder::new();
    let st = Stream::open(&s, &canonical_driver(&rec)).unwrap();
    st.write(b"queued").unwrap();
    assert_eq!(st.driver(Side::Write).len(), 1);
    st.putmsg(flush(&s, FLUSHW)).unwrap();
    assert!(st.driver(Side::Write).is_empty());
    assert_eq!(rec.log(), ["drv M_FLUSH 0x2 noloop=false"]);
    assert!(st.head().events().is_empty(), "nothing went upstream");
    assert!(matches!(st.read(), ReadResult::WouldBlock));
}

#[test]
fn scenario_59_a_read_error_fails_reads_and_flushes_down() {
    let (_p, s) = det();
    let rec = Recorder::new();
    let st = Stream::open(&s, &canonical_driver(&rec)).unwrap();
    st.driver(Side::Read)
        .putnext(msg(&s, MsgType::M_ERROR, 0, &[5, NOERROR]))
        .unwrap();
    assert!(matches!(st.read(), ReadResult::Error(Errno::EIO)));
    assert_eq!(st.write(b"still works"), Ok(()));
    assert_eq!(st.head().errors(), (Some(Errno::EIO), None));
    assert!(
        rec.log()
            .contains(&"drv M_FLUSH 0x1 noloop=true".to_string()),
        "M_FLUSH(FLUSHR) travelled down: {:?}",
        rec.log()
    );
    // The same error again puts no side newly in error: no second M_FLUSH.
    st.driver(Side::Read)
        .putnext(msg(&s, MsgType::M_ERROR, 0, &[5, NOERROR]))
        .unwrap();
    assert_eq!(
        rec.log()
            .iter()
            .filter(|l| l.starts_with("drv M_FLUSH"))
            .count(),
        1
    );
}

#[test]
fn scenario_60_hangup_fails_writes_and_reads_drain_then_eof() {
    let (_p, s) = det();
    let st = Stream::open(&s, &canonical_driver(&Recorder::new())).unwrap();
    let up = st.driver(Side::Read);
    assert!(!st.readable(), "nothing to read yet");
    up.putnext(data(&s, b"last words")).unwrap();
    assert!(st.readable(), "a message waits");
    up.putnext(msg(&s, MsgType::M_HANGUP, 0, &[])).unwrap();
    assert_eq!(st.write(b"x"), Err(Errno::EIO));
    assert!(matches!(st.read(), ReadResult::Data(m) if m.data() == b"last words"));
    assert!(matches!(st.read(), ReadResult::Eof));
    assert!(
        st.readable(),
        "end of file is readable: a read returns at once"
    );
    assert!(st.head().events().contains(&HeadEvent::Hangup));
}

#[test]
fn scenario_61_setopts_moves_the_head_marks() {
    let (_p, s) = det();
    let st = Stream::open(&s, &canonical_driver(&Recorder::new())).unwrap();
    st.push(&canonical_module()).unwrap();
    let (head_r, m_r, up) = (
        st.queue(0, Side::Read).unwrap(),
        st.queue(1, Side::Read).unwrap(),
        st.driver(Side::Read),
    );
    let setopts = |so: Stroptions| msg(&s, MsgType::M_SETOPTS, 0, &so.encode());
    up.putnext(setopts(Stroptions {
        flags: SO_HIWAT | SO_LOWAT,
        hiwat: 10,
        lowat: 2,
        ..Default::default()
    }))
    .unwrap();
    assert_eq!((head_r.hiwat(), head_r.lowat()), (10, 2));
    head_r.putq(data(&s, &[1; 6]));
    assert_eq!(head_r.flags() & QFULL, 0);
    head_r.putq(data(&s, &[2; 6]));
    assert_ne!(head_r.flags() & QFULL, 0, "QFULL at 10 bytes");
    assert!(
        !m_r.canputnext(),
        "the module below is flow-controlled (QWANTW set)"
    );
    up.putnext(setopts(Stroptions {
        flags: SO_HIWAT,
        hiwat: 100,
        ..Default::default()
    }))
    .unwrap();
    assert_ne!(
        head_r.flags() & QFULL,
        0,
        "raising hiwat alone does not clear QFULL"
    );
    let m_flags = m_r.flags() & QENAB;
    up.putnext(setopts(Stroptions {
        flags: SO_LOWAT,
        lowat: 50,
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(m_flags, 0);
    assert_ne!(
        m_r.flags() & QENAB,
        0,
        "lowat above the count back-enables the service queue below"
    );
}

#[test]
fn scenario_62_only_one_pcproto_waits_at_the_head() {
    let (_p, s) = det();
    let st = Stream::open(&s, &canonical_driver(&Recorder::new())).unwrap();
    let up = st.driver(Side::Read);
    up.putnext(msg(&s, MsgType::M_PCPROTO, 0, b"first"))
        .unwrap();
    up.putnext(msg(&s, MsgType::M_PCPROTO, 0, b"second"))
        .unwrap();
    assert!(st.head().events().contains(&HeadEvent::PcprotoDiscarded));
    assert!(matches!(st.read(), ReadResult::Data(m) if m.data() == b"first"));
    assert!(matches!(st.read(), ReadResult::WouldBlock));
}

#[test]
fn the_head_naks_ioctls_from_below_and_drops_m_ctl() {
    let (_p, s) = det();
    let rec = Recorder::new();
    let st = Stream::open(&s, &canonical_driver(&rec)).unwrap();
    let up = st.driver(Side::Read);
    up.putnext(msg(&s, MsgType::M_IOCTL, 0, b"ioc")).unwrap();
    up.putnext(msg(&s, MsgType::M_CTL, 0, b"ctl")).unwrap();
    let dq = st.driver(Side::Write);
    assert_eq!(
        dq.peek_order().first().map(|o| o.0),
        Some(MsgType::M_IOCNAK),
        "the NAK went back down"
    );
    assert!(
        st.head()
            .events()
            .contains(&HeadEvent::Discarded(MsgType::M_CTL))
    );
    assert!(matches!(st.read(), ReadResult::WouldBlock));
}

#[test]
fn writes_stop_at_the_flow_control_limit() {
    let (_p, s) = det();
    let info = ModuleInfo {
        hiwat: 8,
        lowat: 2,
        ..Default::default()
    };
    let drv = def_info(
        "drv",
        D_MP | D_MTQPAIR,
        (false, true),
        info,
        Fns::pass().put(|q, m| q.putq(m)),
    );
    let st = Stream::open(&s, &drv).unwrap();
    st.driver(Side::Write).noenable();
    assert_eq!(st.write(&[0; 8]), Ok(()));
    assert_eq!(st.write(b"x"), Err(Errno::EAGAIN));
}

/// A driver whose write queue keeps what it gets until told to drain (hiwat 100 bytes).
fn holding_driver(drain: Arc<std::sync::atomic::AtomicBool>) -> Arc<ModuleDef> {
    def_info(
        "hold",
        D_MP | D_MTQPAIR,
        (false, true),
        ModuleInfo {
            hiwat: 100,
            lowat: 10,
            ..Default::default()
        },
        Fns::pass()
            .put(|q, m| if q.is_read() { q.putnext(m) } else { q.putq(m) })
            .srv(move |q| {
                if drain.load(std::sync::atomic::Ordering::SeqCst) {
                    while q.getq().is_some() {}
                }
            }),
    )
}

#[test]
fn a_refused_writer_is_told_when_the_stream_drains() {
    let (_p, s) = det();
    let drain = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = Stream::open(&s, &holding_driver(drain.clone())).unwrap();
    let woken = Counter::new();
    let w = woken.clone();
    st.head().set_writable(move || w.add());
    st.write(&[0; 150]).unwrap();
    s.run_until_idle();
    assert_eq!(st.write(b"x"), Err(Errno::EAGAIN));
    assert_eq!(woken.get(), 0);
    drain.store(true, std::sync::atomic::Ordering::SeqCst);
    st.driver(Side::Write).qenable();
    s.run_until_idle();
    assert_eq!(woken.get(), 1, "the back-enable reaches the head's writer");
    st.write(b"x").unwrap();
}

#[test]
fn a_head_bufcall_runs_when_buffers_return() {
    let (_p, s) = det();
    let st = Stream::open(&s, &sink_driver("sink")).unwrap();
    s.set_faults(vec![FaultPolicy::EveryNth(1)]);
    assert_eq!(st.write(b"x"), Err(Errno::ENOMEM));
    let ran = Counter::new();
    let r = ran.clone();
    st.bufcall(1, move || r.add()).unwrap();
    s.set_faults(vec![]);
    s.run_until_idle();
    assert_eq!(ran.get(), 1);
    st.write(b"x").unwrap();
    let r = ran.clone();
    let id = st.bufcall(1, move || r.add()).unwrap();
    st.unbufcall(id);
    s.run_until_idle();
    assert_eq!(ran.get(), 1, "a cancelled bufcall never runs");
}

#[test]
fn closing_a_stream_cancels_its_heads_bufcall() {
    let config = StreamsConfig {
        pool: PoolConfig {
            max_blocks: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let s = Streams::new(Arc::new(DetPlatform::new()), config);
    let st = Stream::open(&s, &sink_driver("sink")).unwrap();
    let hog = s.allocb(1).unwrap();
    assert_eq!(st.write(b"x"), Err(Errno::ENOMEM));
    let ran = Counter::new();
    let r = ran.clone();
    let id = st.bufcall(1, move || r.add()).unwrap();
    assert_eq!(s.callback_state(id), Some(CbState::Pending));
    st.close().unwrap();
    assert_eq!(s.callback_state(id), None, "cancelled at close");
    drop(hog);
    s.run_until_idle();
    assert_eq!(ran.get(), 0, "a closed stream's bufcall never runs");
}
