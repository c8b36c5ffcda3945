//! The seeded byte streams both sides generate to check data end to end: xorshift64, so that a
//! lost, repeated or reordered buffer shows (the stream has no small period), and the same
//! state gives the same bytes on the host, in our guest and in the Linux guest's checks.

/// A xorshift64 generator: a data stream and random choices from one state.
#[derive(Clone, Debug)]
pub struct Xorshift(u64);

impl Xorshift {
    /// A generator from any `seed` (mixed, and made non-zero).
    pub fn new(seed: u64) -> Self {
        Xorshift((seed ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// A generator that starts from `state` exactly (which must not be 0: the stream would
    /// be all zeros).
    pub fn from_state(state: u64) -> Self {
        debug_assert!(state != 0, "a xorshift state of 0 stays 0");
        Xorshift(state)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fills `buf` with the next bytes of the stream (the low byte of each step).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }

    /// A value in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_state_gives_the_same_bytes_and_no_short_period() {
        let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
        Xorshift::from_state(7).fill(&mut a);
        Xorshift::from_state(7).fill(&mut b);
        assert_eq!(a, b);
        for period in 1..=512 {
            assert!(
                (0..a.len() - period).any(|i| a[i] != a[i + period]),
                "period {period}"
            );
        }
        let mut c = [0u8; 4096];
        Xorshift::new(7).fill(&mut c);
        assert_ne!(a, c, "new() mixes the seed");
        assert_eq!(Xorshift::new(1).below(0), 0);
    }
}
