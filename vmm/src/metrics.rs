//! `--metrics FILE`: the run's statistics (the `--stats --json` document without the guest's
//! results) appended to a file as one JSON line every `--metrics-every`, and once more as the
//! guest stops, each line stamped with the wall-clock time and the time since the VM started.
//! The file is opened before the seccomp filter; the writer thread only writes to it.

use crate::control::Context;
use crate::error::Error;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The running writer.
pub struct Metrics {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// One line: when, and the statistics.
fn line(context: &Context, start: Instant) -> String {
    let mut doc = context.stats_document();
    doc["time"] = jiff::Timestamp::now().to_string().into();
    doc["uptime_ms"] = (start.elapsed().as_millis() as u64).into();
    let mut s = serde_json::to_string(&doc).expect("plain data serializes");
    s.push('\n');
    s
}

impl Metrics {
    /// Opens (appends to) `path` and starts writing a line every `every`.
    pub fn start(path: &Path, every: Duration, context: Context) -> Result<Self, Error> {
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| Error::Metrics {
                path: path.to_path_buf(),
                source,
            })?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let start = Instant::now();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                let (lock, cv) = &*s;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (g, _) = cv
                        .wait_timeout_while(stopped, every, |s| !*s)
                        .unwrap_or_else(|e| e.into_inner());
                    stopped = g;
                    // The last line is written as the run stops, whatever the interval.
                    if let Err(e) = file.write_all(line(&context, start).as_bytes()) {
                        log::warn!("--metrics: writing failed ({e}); no more lines");
                        return;
                    }
                    if *stopped {
                        return;
                    }
                }
            })
            .map_err(|source| Error::Host {
                what: "spawning the metrics thread",
                source,
            })?;
        Ok(Metrics {
            stop,
            thread: Some(thread),
        })
    }

    /// Writes the last line and stops.
    pub fn finish(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        self.stop_now();
    }
}
