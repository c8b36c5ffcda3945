//! The log: `env_logger` writing to standard error or to `--log-file`, set up first thing, so
//! that the file is open before the seccomp filter allows no more opens.
//!
//! The level comes from `--log-level` when given, else from `RUST_LOG` (env_logger's syntax:
//! `warn`, `device_model=debug,info`, ...), else `warn`. The device model bounds what a guest
//! can make it log; messages of crates it uses that log guest-controlled events (virtio-queue
//! reports each bad descriptor) pass through [`Bounded`], which keeps the first ten of each
//! such crate and every thousandth after.

use device_model::logging::is_logged;
use log::{LevelFilter, Log, Metadata, Record};
use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The levels `--log-level` takes.
pub(crate) const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Crates whose messages a guest can make them repeat without end.
const GUEST_DRIVEN: [&str; 1] = ["virtio_queue"];

/// A logger that passes on everything but bounds the messages of [`GUEST_DRIVEN`] crates.
struct Bounded<L> {
    inner: L,
    seen: [AtomicU64; GUEST_DRIVEN.len()],
}

impl<L: Log> Bounded<L> {
    fn new(inner: L) -> Self {
        Bounded {
            inner,
            seen: Default::default(),
        }
    }
}

impl<L: Log> Log for Bounded<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.inner.enabled(record.metadata()) {
            return;
        }
        let target = record.target();
        let Some(i) = GUEST_DRIVEN
            .iter()
            .position(|c| target == *c || target.starts_with(&format!("{c}::")))
        else {
            return self.inner.log(record);
        };
        let n = self.seen[i].fetch_add(1, Ordering::Relaxed) + 1;
        if !is_logged(n) {
            return;
        }
        if n == 1 {
            return self.inner.log(record);
        }
        self.inner.log(
            &Record::builder()
                .args(format_args!("{} ({n} such messages so far)", record.args()))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.inner.flush()
    }
}

/// Sets up the process's logger. Fails only when `file` cannot be opened for appending.
pub(crate) fn init(level: Option<LevelFilter>, file: Option<&Path>) -> io::Result<()> {
    let mut builder = env_logger::Builder::new();
    match level {
        Some(level) => {
            builder.filter_level(level);
        }
        None => match std::env::var("RUST_LOG") {
            Ok(spec) if !spec.trim().is_empty() => {
                builder.parse_filters(&spec);
            }
            _ => {
                builder.filter_level(LevelFilter::Warn);
            }
        },
    }
    if let Some(path) = file {
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        builder.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let logger = builder.build();
    let max = logger.filter();
    // Only the first logger of a process counts; main sets it up once.
    if log::set_boxed_logger(Box::new(Bounded::new(logger))).is_ok() {
        log::set_max_level(max);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl Log for Collect {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn log(&self, r: &Record<'_>) {
            self.0.lock().unwrap().push(format!("{}", r.args()));
        }
        fn flush(&self) {}
    }

    fn send(l: &Bounded<Collect>, target: &str, text: &str) {
        l.log(
            &Record::builder()
                .target(target)
                .level(log::Level::Error)
                .args(format_args!("{text}"))
                .build(),
        );
    }

    #[test]
    fn a_guest_driven_crate_is_bounded_and_every_other_passes() {
        let l = Bounded::new(Collect::default());
        for _ in 0..3000 {
            send(&l, "virtio_queue::queue", "bad descriptor");
            send(&l, "device_model::console::ring", "ours");
        }
        let got = l.inner.0.lock().unwrap();
        let theirs: Vec<&String> = got.iter().filter(|m| m.contains("bad")).collect();
        assert_eq!(theirs.len(), 13, "ten, then the 1000th, 2000th and 3000th");
        assert_eq!(theirs[0], "bad descriptor");
        assert_eq!(theirs[12], "bad descriptor (3000 such messages so far)");
        assert_eq!(got.iter().filter(|m| *m == "ours").count(), 3000);
        drop(got);
        send(
            &l,
            "virtio_queue_other",
            "a crate whose name only starts alike",
        );
        assert!(
            l.inner
                .0
                .lock()
                .unwrap()
                .last()
                .unwrap()
                .starts_with("a crate")
        );
    }
}
