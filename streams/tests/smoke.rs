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

#[test]
fn threaded_platform_runs_service_procedures() {
    let s = host();
    let drv = def(
        "svc",
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
