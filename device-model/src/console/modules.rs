//! STREAMS modules a port may have pushed between its backend and the device
//! (`--port ...,modules=a+b`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use streams::{D_MP, D_MTQPAIR, Mblk, Module, ModuleDef, MsgType, Q};

/// The modules that can be pushed, with a one-line description each.
pub const MODULES: &[(&str, &str)] = &[
    (
        "pass",
        "passes everything through (measures a module's cost)",
    ),
    (
        "crlf",
        "turns the guest's \\n into \\r\\n on the way to the host (for terminals)",
    ),
];

/// The definition of module `name`, or `None` if there is no such module.
pub fn lookup(name: &str) -> Option<Arc<ModuleDef>> {
    let b = ModuleDef::builder(match name {
        "pass" => "pass",
        "crlf" => "crlf",
        _ => return None,
    })
    .flags(D_MP | D_MTQPAIR);
    Some(match name {
        "pass" => b.build(|| Pass).expect("valid flags"),
        _ => b
            .build(|| Crlf {
                added: AtomicU64::new(0),
            })
            .expect("valid flags"),
    })
}

struct Pass;

impl Module for Pass {
    fn put(&self, q: Q<'_>, mp: Mblk) {
        if mp.db_type() == MsgType::M_FLUSH {
            q.flush_module(mp)
        } else {
            q.putnext(mp)
        }
    }
}

struct Crlf {
    added: AtomicU64,
}

impl Module for Crlf {
    fn put(&self, q: Q<'_>, mp: Mblk) {
        if mp.db_type() == MsgType::M_FLUSH {
            return q.flush_module(mp);
        }
        if !q.is_read() || mp.db_type() != MsgType::M_DATA {
            return q.putnext(mp);
        }
        let lf = mp
            .blocks()
            .map(|b| b.data().iter().filter(|&&c| c == b'\n').count())
            .sum::<usize>();
        if lf == 0 {
            return q.putnext(mp);
        }
        // A new buffer: the original may be the guest's own memory, which is not ours to edit.
        let Some(mut out) = q.allocb(mp.msgdsize() + lf) else {
            return q.putnext(mp); // no memory: better unconverted than lost
        };
        let mut buf = Vec::with_capacity(mp.msgdsize() + lf);
        for b in mp.blocks() {
            for &c in b.data() {
                if c == b'\n' {
                    buf.push(b'\r');
                }
                buf.push(c);
            }
        }
        out.write(&buf).expect("sized to fit");
        self.added.fetch_add(lf as u64, Ordering::Relaxed);
        q.putnext(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use streams::{DetPlatform, ReadResult, Side, Stream, Streams, StreamsConfig};

    /// A driver that sends what is written to it back up.
    struct Loop;
    impl Module for Loop {
        fn put(&self, q: Q<'_>, mp: Mblk) {
            if q.is_read() {
                q.putnext(mp)
            } else {
                q.qreply(mp)
            }
        }
    }

    #[test]
    fn crlf_converts_upstream_only_and_pass_passes() {
        let s = Streams::new(Arc::new(DetPlatform::new()), StreamsConfig::default());
        let lp = ModuleDef::builder("loop").build(|| Loop).unwrap();
        let st = Stream::open(&s, &lp).unwrap();
        st.push(&lookup("pass").unwrap()).unwrap();
        st.push(&lookup("crlf").unwrap()).unwrap();
        assert!(lookup("nope").is_none());
        st.write(b"a\nb\n").unwrap();
        s.run_until_idle();
        let ReadResult::Data(m) = st.read() else {
            panic!("no data")
        };
        assert_eq!(m.data(), b"a\r\nb\r\n");
        let _ = st.driver(Side::Read);
    }
}
