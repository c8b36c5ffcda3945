//! The latency histogram a guest's `pingpong` reports in its `hist=` field, so that a host can
//! pool the round trips of many runs (and of both VMMs, which boot the same guest) and draw
//! their whole distribution. Buckets are a quarter of an octave wide: from 4 ns up, a bucket's
//! upper bound is at most 25% above its lower one.
//!
//! The field lists the non-empty buckets: `hist=I:C,I:C,...`, bucket index `I` (see
//! [`bucket`]) and how many round trips fell in it.

/// The bucket of a duration of `ns` nanoseconds: four per power of two (`0` holds 1 ns,
/// `4` holds 2-3 ns, then `4 * e + q` holds the `q`th quarter of `[2^e, 2^(e+1))`).
pub fn bucket(ns: u64) -> u32 {
    let ns = ns.max(1);
    let e = 63 - ns.leading_zeros();
    let quarter = if e >= 2 {
        ((ns >> (e - 2)) & 3) as u32
    } else {
        0
    };
    4 * e + quarter
}

/// The durations bucket `i` holds: from the first (inclusive) to the second (exclusive).
pub fn bounds(i: u32) -> (u64, u64) {
    let (e, quarter) = (i / 4, u64::from(i % 4));
    if e >= 64 {
        return (u64::MAX, u64::MAX);
    }
    if e < 2 {
        return (1 << e, 2u64 << e);
    }
    let step = 1u64 << (e - 2);
    let lo = (4 + quarter) * step;
    (lo, lo.saturating_add(step))
}

/// Reads a `hist=` value into (bucket, count) pairs; `None` if it is not one.
pub fn parse(text: &str) -> Option<impl Iterator<Item = (u32, u64)> + '_> {
    let valid = text.split(',').all(|pair| {
        pair.split_once(':')
            .is_some_and(|(i, c)| i.parse::<u32>().is_ok() && c.parse::<u64>().is_ok())
    });
    (valid && !text.is_empty()).then(|| {
        text.split(',').filter_map(|pair| {
            let (i, c) = pair.split_once(':')?;
            Some((i.parse().ok()?, c.parse().ok()?))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_falls_inside_its_buckets_bounds_and_buckets_are_narrow() {
        let mut ns = 1u64;
        while ns < u64::MAX / 8 {
            for t in [ns, ns + 1, ns * 5 / 4, ns * 3 / 2 + 7] {
                let (lo, hi) = bounds(bucket(t));
                assert!(
                    lo <= t && t < hi,
                    "{t}: bucket {} is [{lo}, {hi})",
                    bucket(t)
                );
                if t >= 4 {
                    assert!(hi - lo <= lo.div_ceil(4), "{t}: [{lo}, {hi}) too wide");
                }
            }
            ns = ns * 3 + 1;
        }
        assert_eq!(bucket(0), bucket(1));
        assert!(bucket(1000) < bucket(1300), "monotonic");
        let (lo, hi) = bounds(bucket(u64::MAX));
        assert!(
            lo > 1 << 62 && hi == u64::MAX,
            "the last bucket ends at the top"
        );
    }

    #[test]
    fn a_field_reads_back_and_a_bad_one_is_refused() {
        assert!(parse("40:3,41:10").unwrap().eq([(40, 3), (41, 10)]));
        assert!(parse("").is_none());
        assert!(parse("40:3,x").is_none());
        assert!(parse("40:-1").is_none());
    }
}
