//! Property tests: queue order and flow-control counters against a simple model.
mod common;
use common::*;
use proptest::prelude::*;
use streams::*;

#[derive(Clone, Debug)]
enum Op {
    Putq { hp: bool, band: u8, len: usize },
    Putbq { hp: bool, band: u8, len: usize },
    Getq,
    Flush { all: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let band = prop_oneof![Just(0u8), Just(1u8), Just(3u8), Just(255u8)];
    prop_oneof![
        (any::<bool>(), band.clone(), 0usize..40).prop_map(|(hp, band, len)| Op::Putq {
            hp: hp && len % 5 == 0,
            band,
            len
        }),
        (any::<bool>(), band, 0usize..40).prop_map(|(hp, band, len)| Op::Putbq {
            hp: hp && len % 7 == 0,
            band,
            len
        }),
        Just(Op::Getq),
        Just(Op::Getq),
        any::<bool>().prop_map(|all| Op::Flush { all }),
    ]
}

/// The model's sort key: high priority first, then higher bands.
fn key(hp: bool, band: u8) -> u16 {
    if hp { 256 } else { band as u16 }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn queue_order_and_counters_match_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let (_p, s) = det();
        let hiwat = 50;
        let info = ModuleInfo { hiwat, lowat: 10, ..Default::default() };
        let d = def_info("D", D_MP | D_MTQPAIR, (false, true), info, Fns::pass().put(|q, m| q.putq(m)));
        let st = Stream::open(&s, &d).unwrap();
        let q = st.driver(Side::Write);
        // The model: (key, id, len, is M_DATA) in queue order.
        let mut model: Vec<(u16, u32, usize, bool)> = Vec::new();
        let mut next_id = 0u32;
        for op in ops {
            match op {
                Op::Putq { hp, band, len } | Op::Putbq { hp, band, len } => {
                    let front = matches!(op, Op::Putbq { .. });
                    let ty = if hp { MsgType::M_PCPROTO } else { MsgType::M_DATA };
                    let id = next_id;
                    next_id += 1;
                    // The first four bytes carry the message's id.
                    let tagged = msg(&s, ty, band, &[&id.to_le_bytes()[..], &vec![0u8; len][..]].concat());
                    let k = key(hp, if hp { 0 } else { band });
                    let pos = if front {
                        model.iter().position(|e| e.0 <= k).unwrap_or(model.len())
                    } else {
                        model.iter().position(|e| e.0 < k).unwrap_or(model.len())
                    };
                    model.insert(pos, (k, id, len + 4, !hp));
                    if front { q.putbq(tagged) } else { q.putq(tagged) }
                }
                Op::Getq => {
                    let got = q.getq();
                    let want = if model.is_empty() { None } else { Some(model.remove(0)) };
                    let got_id = got.map(|m| u32::from_le_bytes(m.data()[..4].try_into().unwrap()));
                    prop_assert_eq!(got_id, want.map(|w| w.1));
                }
                Op::Flush { all } => {
                    q.flushq(if all { FLUSHALL } else { FLUSHDATA });
                    // M_DATA and M_PCPROTO are both data messages: FLUSHDATA removes all here.
                    model.clear();
                }
            }
            // Order.
            let mut ids = Vec::new();
            q.for_each(|m| ids.push(u32::from_le_bytes(m.data()[..4].try_into().unwrap())));
            prop_assert_eq!(ids, model.iter().map(|e| e.1).collect::<Vec<_>>());
            // Band-0 and high-priority byte count, and QFULL for band 0.
            let count: usize = model.iter().filter(|e| e.0 == 0 || e.0 == 256).map(|e| e.2).sum();
            let blocks = model.iter().filter(|e| e.0 == 0 || e.0 == 256).count();
            prop_assert_eq!(q.count(), count);
            let full = count >= hiwat || blocks >= hiwat;
            prop_assert_eq!(q.flags() & QFULL != 0, full);
            // Each band's QB_FULL.
            for band in [1u8, 3, 255] {
                let bc: usize = model.iter().filter(|e| e.0 == band as u16).map(|e| e.2).sum();
                let bn = model.iter().filter(|e| e.0 == band as u16).count();
                prop_assert_eq!(q.band_flags(band) & QB_FULL != 0, bc >= hiwat || bn >= hiwat);
            }
        }
    }
}
