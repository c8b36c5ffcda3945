//! Logging what the device refuses or loses, through the `log` crate (the binary chooses the
//! logger). What a guest can make happen again and again is logged by [`limited!`], so that a
//! guest cannot flood the host's log however often it repeats it.

/// Whether the `n`th occurrence (from 1) of something repeated is logged (at a call site of
/// `limited!`, or by the VMM's logger for a crate that logs what a guest controls): the first
/// ten, then every thousandth.
pub fn is_logged(n: u64) -> bool {
    n <= 10 || n.is_multiple_of(1000)
}

/// `limited!(Level, "format", args...)`: logs like `log::log!` the first ten times this call
/// site runs, then every thousandth time, adding how many times it ran so far.
macro_rules! limited {
    ($level:expr, $($arg:tt)+) => {{
        static SEEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if $crate::logging::is_logged(n) && log::log_enabled!($level) {
            if n == 1 {
                log::log!($level, $($arg)+);
            } else {
                log::log!($level, "{} ({} times so far)", format_args!($($arg)+), n);
            }
        }
    }};
}
pub(crate) use limited;

#[cfg(test)]
mod tests {
    use super::is_logged;

    #[test]
    fn a_repeated_event_is_logged_ten_times_then_every_thousandth() {
        let logged: Vec<u64> = (1..=5000).filter(|&n| is_logged(n)).collect();
        assert_eq!(logged.len(), 15);
        assert_eq!(&logged[9..], &[10, 1000, 2000, 3000, 4000, 5000]);
    }
}
