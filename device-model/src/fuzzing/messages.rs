//! The STREAMS message API under any sequence of calls (allocb, write, dupmsg, copymsg,
//! linkb, unlinkb, pullupmsg, adjmsg, putq, getq, flushq, freemsg), each result checked
//! against a plain model of the bytes, and the pool checked for leaks at the end.

use super::Input;
use std::collections::VecDeque;
use std::sync::Arc;
use streams::{
    D_MP, D_MTQPAIR, DetPlatform, FLUSHDATA, Mblk, Module, ModuleDef, Q, Side, Stream, Streams,
    StreamsConfig,
};

/// Most messages alive at once.
const LIVE: usize = 16;

/// A driver whose queues only hold what is put on them.
struct Holder;

impl Module for Holder {
    fn put(&self, q: Q<'_>, mp: Mblk) {
        q.putq(mp);
    }
}

/// The bytes of each block of `mp`.
fn blocks(mp: &Mblk) -> Vec<Vec<u8>> {
    mp.blocks().map(|b| b.data().to_vec()).collect()
}

fn check(mp: &Mblk, model: &[Vec<u8>]) {
    assert_eq!(blocks(mp), model, "message differs from its model");
    let total: usize = model.iter().map(Vec::len).sum();
    assert_eq!(mp.msgdsize(), total, "msgdsize");
}

/// Runs one input (see the module comment).
pub fn messages(data: &[u8]) {
    let s = Streams::new(
        Arc::new(DetPlatform::new()),
        StreamsConfig {
            pool: streams::PoolConfig {
                max_bytes: 256 << 10,
                max_blocks: 256,
            },
            ..StreamsConfig::default()
        },
    );
    let holder = ModuleDef::builder("holder")
        .flags(D_MP | D_MTQPAIR)
        .srv(false, true)
        .build(|| Holder)
        .expect("valid flags");
    let st = Stream::open(&s, &holder).expect("open");
    let wq = st.driver(Side::Write);
    let mut queued: VecDeque<Vec<Vec<u8>>> = VecDeque::new();
    let mut live: Vec<(Mblk, Vec<Vec<u8>>)> = Vec::new();
    let mut input = Input::new(data);
    while let Some(op) = input.op() {
        let pick = |input: &mut Input<'_>, n: usize| usize::from(input.u8()) % n.max(1);
        let i = pick(&mut input, live.len());
        match op % 12 {
            0 if live.len() < LIVE => {
                if let Some(mp) = s.allocb(usize::from(input.u16() % 4096)) {
                    live.push((mp, vec![Vec::new()]));
                }
            }
            1 if !live.is_empty() => {
                let bytes = input.bytes(200);
                let (mp, model) = &mut live[i];
                let room = mp.capacity() - mp.wptr();
                match mp.write(bytes) {
                    Ok(()) => model[0].extend_from_slice(bytes),
                    Err(_) => assert!(mp.db_ref() > 1 || room < bytes.len(), "write refused"),
                }
            }
            2 if !live.is_empty() && live.len() < LIVE => {
                let copy = if input.u8() & 1 == 0 {
                    live[i].0.dupmsg()
                } else {
                    live[i].0.copymsg()
                };
                if let Some(mp) = copy {
                    let model = live[i].1.clone();
                    live.push((mp, model));
                }
            }
            3 if live.len() >= 2 => {
                let (other, model) = live.swap_remove(pick(&mut input, live.len()));
                let i = i % live.len();
                live[i].0.linkb(other);
                live[i].1.extend(model);
            }
            4 if !live.is_empty() && live.len() < LIVE => {
                let (mp, model) = &mut live[i];
                let rest = mp.unlinkb();
                assert_eq!(rest.is_some(), model.len() > 1, "unlinkb");
                if let Some(rest) = rest {
                    let tail = model.split_off(1);
                    live.push((rest, tail));
                }
            }
            5 if !live.is_empty() => {
                let len = isize::from(input.u16() as i16) % 5000;
                let (mp, model) = &mut live[i];
                let total: usize = model.iter().map(Vec::len).sum();
                let want = if len < 0 { total } else { len as usize };
                if mp.pullupmsg(len) {
                    assert!(want <= total, "pullupmsg past the end");
                    assert_eq!(mp.len(), want, "pullupmsg's first block");
                    let all: Vec<u8> = model.concat();
                    *model = blocks(mp);
                    assert_eq!(model.concat(), all, "pullupmsg changed the bytes");
                } else {
                    assert!(
                        want > total || s.pool_stats().failed_capacity > 0,
                        "pullupmsg"
                    );
                }
            }
            6 if !live.is_empty() => {
                let len = isize::from(input.u16() as i16) % 5000;
                let (mp, model) = &mut live[i];
                let mut all: Vec<u8> = model.concat();
                let ok = mp.adjmsg(len);
                assert_eq!(ok, len.unsigned_abs() <= all.len(), "adjmsg");
                if ok {
                    if len >= 0 {
                        all.drain(..len as usize);
                    } else {
                        all.truncate(all.len() - len.unsigned_abs());
                    }
                    *model = blocks(mp);
                    assert_eq!(model.concat(), all, "adjmsg");
                }
            }
            7 if !live.is_empty() => {
                let (mp, model) = live.swap_remove(i);
                wq.putq(mp);
                queued.push_back(model);
            }
            8 => match wq.getq() {
                Some(mp) => {
                    let model = queued.pop_front().expect("getq returned more than was put");
                    check(&mp, &model);
                    if live.len() < LIVE {
                        live.push((mp, model));
                    }
                }
                None => assert!(queued.is_empty(), "getq lost a message"),
            },
            9 => {
                wq.flushq(FLUSHDATA);
                queued.clear();
            }
            10 if !live.is_empty() => drop(live.swap_remove(i)),
            _ => {}
        }
        for (mp, model) in &live {
            check(mp, model);
        }
        assert_eq!(wq.len(), queued.len(), "queue length");
    }
    drop(live);
    wq.flushq(FLUSHDATA);
    drop(wq);
    st.close().expect("close");
    s.run_until_idle();
    let stats = s.pool_stats();
    assert_eq!(stats.blocks_in_use, 0, "blocks leaked: {stats:?}");
    assert_eq!(stats.bytes_in_use, 0, "bytes leaked: {stats:?}");
}
