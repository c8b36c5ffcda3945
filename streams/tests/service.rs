//! Scenarios 17–20 (docs/streams.md, "Service scheduling").
mod common;
use common::*;
use std::sync::Arc;
use streams::*;

/// A driver whose write srv counts its runs, consumes high-priority messages and puts
/// back the first ordinary one (a srv must never putbq a high-priority message).
fn putbq_driver(runs: Arc<Counter>) -> Arc<ModuleDef> {
    def(
        "drv",
        D_MP | D_MTQPAIR,
        (false, true),
        Fns::pass().put(|q, m| q.putq(m)).srv(move |q| {
            runs.add();
            while let Some(m) = q.getq() {
                if !m.db_type().is_high_priority() {
                    q.putbq(m);
                    break;
                }
            }
        }),
    )
}

#[test]
fn scenario_17_a_srv_that_puts_back_is_rerun_only_by_enabling() {
    let (_p, s) = det();
    let runs = Counter::new();
    let info = ModuleInfo {
        hiwat: 10,
        lowat: 5,
        ..Default::default()
    };
    let d = def_info(
        "drv",
        D_MP | D_MTQPAIR,
        (false, true),
        info,
        Fns::pass().put(|q, m| q.putq(m)).srv({
            let runs = runs.clone();
            move |q| {
                runs.add();
                if let Some(m) = q.getq() {
                    q.putbq(m);
                }
            }
        }),
    );
    let st = Stream::open(&s, &d).unwrap();
    let u = def("U", D_MP | D_MTQPAIR, (false, true), Fns::pass());
    st.push(&u).unwrap();
    let q = st.driver(Side::Write);
    q.putq(data(&s, b"first"));
    s.run_until_idle();
    assert_eq!(runs.get(), 1, "the first putq on a fresh queue runs srv");
    q.putq(data(&s, b"second"));
    q.putq(data(&s, b"third"));
    s.run_until_idle();
    assert_eq!(runs.get(), 1, "after putbq, normal putq does not run srv");
    q.qenable();
    s.run_until_idle();
    assert_eq!(runs.get(), 2, "qenable does");
    // A back-enable does too: fill to hiwat, let U fail canputnext, drain below lowat.
    q.putq(data(&s, &[0; 10]));
    s.run_until_idle();
    let upper = st.queue(1, Side::Write).unwrap();
    assert!(!upper.canputnext());
    let before = runs.get();
    while q.getq().is_some() {}
    s.run_until_idle();
    assert_eq!(
        runs.get(),
        before,
        "back-enable runs the upstream srv, not this one"
    );
    assert_eq!(
        q.flags() & QWANTR,
        QWANTR,
        "getq on the empty queue set QWANTR"
    );
    q.putq(data(&s, b"again"));
    s.run_until_idle();
    assert_eq!(runs.get(), before + 1, "QWANTR makes the next putq enable");
}

#[test]
fn scenario_18_noenable_holds_back_only_ordinary_messages() {
    let (_p, s) = det();
    let runs = Counter::new();
    let st = Stream::open(&s, &putbq_driver(runs.clone())).unwrap();
    let q = st.driver(Side::Write);
    q.noenable();
    q.putq(data(&s, b"normal"));
    s.run_until_idle();
    assert_eq!(runs.get(), 0, "QNOENB: not run");
    q.putq(msg(&s, MsgType::M_PCPROTO, 0, b"hp"));
    s.run_until_idle();
    assert_eq!(runs.get(), 1, "high priority runs srv despite QNOENB");
    q.qenable();
    s.run_until_idle();
    assert_eq!(runs.get(), 2, "qenable runs srv despite QNOENB");
    q.enableok();
    assert_eq!(q.flags() & QNOENB, 0);
}

#[test]
fn scenario_19_qenable_during_a_run_gives_exactly_one_more_run() {
    for flags in [D_MP | D_MTQPAIR, D_MP] {
        let s = host();
        let rec = Recorder::new();
        let runs = Counter::new();
        let gate = Latch::new();
        let entered = Counter::new();
        let d = def(
            "drv",
            flags,
            (false, true),
            Fns::pass().put(|q, m| q.putq(m)).srv({
                let (rec, runs, gate, entered) =
                    (rec.clone(), runs.clone(), gate.clone(), entered.clone());
                move |q| {
                    let _in = rec.enter("srv", &["srv"]);
                    entered.add();
                    if runs.get() == 0 {
                        gate.wait();
                    }
                    runs.add();
                    while q.getq().is_some() {}
                }
            }),
        );
        let st = Stream::open(&s, &d).unwrap();
        let q = st.driver(Side::Write);
        q.qenable();
        entered.wait_for(1);
        for _ in 0..5 {
            q.qenable();
        }
        assert_ne!(q.flags() & QINSERVICE, 0);
        gate.open();
        s.quiesce();
        assert_eq!(runs.get(), 2, "exactly one more run (flags {flags:#x})");
        assert_eq!(rec.overlaps(), 0, "srv never overlaps itself");
        st.close().unwrap();
    }
}

#[test]
fn scenario_20_qenable_without_srv_or_after_qprocsoff_schedules_nothing() {
    let (_p, s) = det();
    let st = Stream::open(&s, &sink_driver("nosrv")).unwrap();
    let q = st.driver(Side::Write);
    q.qenable();
    assert_eq!(q.flags() & QENAB, 0);
    assert!(!s.run_one(), "nothing scheduled for a queue without srv");

    let runs = Counter::new();
    let st = Stream::open(&s, &sink_driver("drv2")).unwrap();
    st.push(&def(
        "M",
        D_MP | D_MTQPAIR,
        (false, true),
        Fns::pass().srv({
            let runs = runs.clone();
            move |_q| runs.add()
        }),
    ))
    .unwrap();
    let m = st.queue(1, Side::Write).unwrap();
    st.pop().unwrap();
    assert_ne!(m.flags() & QWCLOSE, 0);
    m.qenable();
    assert_eq!(m.flags() & QENAB, 0);
    s.run_until_idle();
    assert_eq!(runs.get(), 0, "nothing scheduled after qprocsoff");
}

#[test]
fn run_inline_runs_the_service_it_enabled_in_the_calling_thread() {
    let _w = watchdog(30);
    let s = host();
    let ran_on = Arc::new(std::sync::Mutex::new(Vec::new()));
    let d = def(
        "drv",
        D_MP | D_MTQPAIR,
        (false, true),
        Fns::pass().put(|q, m| q.putq(m)).srv({
            let ran_on = ran_on.clone();
            move |q| {
                while q.getq().is_some() {
                    ran_on.lock().unwrap().push(std::thread::current().id());
                }
            }
        }),
    );
    let st = Stream::open(&s, &d).unwrap();
    let q = st.driver(Side::Write);
    for i in 0..20u8 {
        HostPlatform::run_inline(&s, || q.putq(data(&s, &[i])));
        // Already run when run_inline returns, by this thread: no worker was needed.
        assert_eq!(ran_on.lock().unwrap().len(), usize::from(i) + 1);
    }
    let me = std::thread::current().id();
    assert!(ran_on.lock().unwrap().iter().all(|t| *t == me));
    // Nested: the outermost call runs the work.
    HostPlatform::run_inline(&s, || {
        HostPlatform::run_inline(&s, || q.putq(data(&s, b"x")))
    });
    assert_eq!(ran_on.lock().unwrap().len(), 21);
}
