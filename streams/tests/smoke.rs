mod common;
use common::*;
use streams::*;

#[test]
fn write_through_a_module_reaches_the_driver_and_replies_reach_the_head() {
    let (_p, s) = det();
    let echo = def(
        "echo",
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
    let st = Stream::open(&s, &echo).unwrap();
    st.push(&def("pass", D_MP | D_MTQPAIR, (false, false), Fns::pass()))
        .unwrap();
    st.write(b"hello").unwrap();
    match st.read() {
        ReadResult::Data(m) => assert_eq!(m.data(), b"hello"),
        other => panic!("{other:?}"),
    }
    st.close().unwrap();
}

/// A driver whose write side queues what comes (after `on_write` sees it) and whose service
/// procedure sends it back up.
fn replying_driver(on_write: fn(Q<'_>)) -> std::sync::Arc<ModuleDef> {
    def(
        "svc",
        D_MP | D_MTQPAIR,
        (false, true),
        Fns::pass()
            .put(move |q, m| {
                if q.is_read() {
                    q.putnext(m)
                } else {
                    on_write(q);
                    q.putq(m)
                }
            })
            .srv(|q| {
                while let Some(m) = q.getq() {
                    q.qreply(m);
                }
            }),
    )
}

/// The names of the threads that ran the start hook (see the test below), and a signal
/// for each new one.
static HOOKED: (std::sync::Mutex<Vec<String>>, std::sync::Condvar) =
    (std::sync::Mutex::new(Vec::new()), std::sync::Condvar::new());

#[test]
fn worker_and_timer_threads_run_the_start_hook() {
    set_thread_start(Some(|| {
        let name = std::thread::current().name().unwrap_or("").to_string();
        HOOKED.0.lock().unwrap().push(name);
        HOOKED.1.notify_all();
    }));
    let s = host();
    // A write starts a worker for the service procedure, and its qtimeout the timer thread.
    // The test waits for the callback to run too: a close must find no timeout pending.
    let drv = replying_driver(|q| {
        q.qtimeout(1, |_q| {
            HOOKED.0.lock().unwrap().push("the timeout ran".into());
            HOOKED.1.notify_all();
        })
        .unwrap();
    });
    let st = Stream::open(&s, &drv).unwrap();
    st.write(b"x").unwrap();
    let started = |names: &Vec<String>| {
        ["streams-worker", "streams-timer", "the timeout ran"]
            .iter()
            .all(|want| names.iter().any(|n| n == want))
    };
    let (names, timeout) = HOOKED
        .1
        .wait_timeout_while(
            HOOKED.0.lock().unwrap(),
            std::time::Duration::from_secs(30),
            |names| !started(names),
        )
        .unwrap();
    assert!(!timeout.timed_out(), "{names:?}");
    drop(names);
    set_thread_start(None);
    s.quiesce();
    st.close().unwrap();
}

#[test]
fn threaded_platform_runs_service_procedures() {
    let s = host();
    let drv = replying_driver(|_q| {});
    let st = Stream::open(&s, &drv).unwrap();
    for i in 0..100u8 {
        st.write(&[i]).unwrap();
    }
    s.quiesce();
    for i in 0..100u8 {
        match st.read() {
            ReadResult::Data(m) => assert_eq!(m.data(), &[i]),
            other => panic!("{i}: {other:?}"),
        }
    }
    st.close().unwrap();
}

#[test]
fn a_closed_stream_and_its_framework_leave_nothing_behind() {
    let (p, s) = det();
    let weak = s.downgrade();
    let st = Stream::open(&s, &sink_driver("d")).unwrap();
    st.push(&def(
        "M",
        D_MP | D_MTQPAIR,
        (true, true),
        Fns::pass().put(|q, m| q.putq(m)),
    ))
    .unwrap();
    for i in 0..10u8 {
        st.write(&[i]).unwrap();
        st.driver(Side::Read).putnext(data(&s, &[i])).unwrap();
    }
    st.close().unwrap();
    s.run_until_idle();
    assert_eq!(
        s.pool_stats().blocks_in_use,
        0,
        "every queued message was freed"
    );
    drop((s, p));
    assert!(
        weak.upgrade().is_none(),
        "no reference cycle keeps the framework alive"
    );
}

/// Passes every message on (the default open and close).
struct Passing;

impl Module for Passing {
    fn put(&self, q: Q<'_>, mp: Mblk) {
        q.putnext(mp)
    }
}

#[test]
fn an_open_names_its_device_to_the_driver_and_to_pushed_modules() {
    use std::sync::{Arc, Mutex};
    let (_p, s) = det();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let named = |name: &'static str| {
        let seen = seen.clone();
        ModuleDef::builder(name)
            .flags(D_MP | D_MTQPAIR)
            .build_dev(move |dev| {
                seen.lock().unwrap().push((name, dev));
                Passing
            })
            .unwrap()
    };
    let (driver, module) = (named("driver"), named("module"));
    let st = Stream::open_dev(&s, &driver, 7).unwrap();
    st.push(&module).unwrap();
    let other = Stream::open(&s, &driver).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [("driver", 7), ("module", 7), ("driver", 0)]
    );
    st.close().unwrap();
    other.close().unwrap();
}
