//! A console with its backends running: what `perimeter run --port ...` builds.

use super::backend::{FaultSpec, PortIo, PortSpec, check_ports};
use super::{Console, ConsoleError, ConsoleHandle, ConsoleStats, PortConfig, modules};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streams::{FaultPolicy, HostPlatform, Streams, StreamsConfig};

/// The device, its STREAMS instance and one running backend per port.
pub struct ConsoleRuntime {
    device: Arc<Mutex<Console>>,
    handle: ConsoleHandle,
    streams: Streams,
    io: Vec<PortIo>,
    specs: Vec<PortSpec>,
}

impl ConsoleRuntime {
    /// Builds the console for `specs` (port 0 first) with the host-side `faults`, and starts
    /// every backend. Errors name the port and what went wrong.
    pub fn start(specs: &[PortSpec], faults: &[FaultSpec]) -> Result<Self, ConsoleError> {
        check_ports(specs).map_err(ConsoleError::Ports)?;
        let mut config = StreamsConfig::default();
        let mut policies: Vec<FaultPolicy> = Vec::new();
        for f in faults {
            match f {
                FaultSpec::PoolBytes(n) => config.pool.max_bytes = *n,
                FaultSpec::Policy(p) => policies.push(p.clone()),
            }
        }
        let streams = HostPlatform::streams(config);
        let ports = specs
            .iter()
            .map(|s| {
                let m = s
                    .modules
                    .iter()
                    .map(|m| modules::lookup(m).ok_or_else(|| ConsoleError::NoModule(m.clone())))
                    .collect::<Result<Vec<_>, _>>()?;
                let c = PortConfig {
                    name: s.name.clone(),
                    console: s.console,
                    plugged: !s.unplugged,
                };
                Ok((c, m))
            })
            .collect::<Result<Vec<_>, ConsoleError>>()?;
        let console = Console::new(&streams, ports)?;
        let handle = console.handle();
        let mut io = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let stream = console
                .stream(i as u32)
                .expect("one stream per port")
                .clone();
            io.push(PortIo::start(&handle, stream, i as u32, &s.backend)?);
        }
        // Faults start now: setting up (control token, head options) is not what is tested.
        streams.set_faults(policies);
        Ok(ConsoleRuntime {
            device: Arc::new(Mutex::new(console)),
            handle,
            streams,
            io,
            specs: specs.to_vec(),
        })
    }

    /// The device, for its transport.
    pub fn device(&self) -> Arc<Mutex<Console>> {
        self.device.clone()
    }

    /// The STREAMS instance (tests wait on it).
    #[cfg(test)]
    pub(crate) fn streams(&self) -> &Streams {
        &self.streams
    }

    /// A handle for the event loop.
    pub fn handle(&self) -> ConsoleHandle {
        self.handle.clone()
    }

    /// Ports whose backend has a path a user connects to (pty slaves, sockets).
    pub fn paths(&self) -> Vec<(String, PathBuf)> {
        self.specs
            .iter()
            .zip(&self.io)
            .filter_map(|(s, io)| io.path.clone().map(|p| (s.name.clone(), p)))
            .collect()
    }

    /// The statistics so far.
    pub fn stats(&self) -> ConsoleStats {
        let labels: Vec<String> = self.specs.iter().map(|s| s.backend_text.clone()).collect();
        let mut st = self.handle.stats(&labels);
        for (p, io) in st.ports.iter_mut().zip(&self.io) {
            p.out_crc32 = io.out_crc();
            p.pending_out_bytes = io.pending();
            p.pending_in_bytes = io.pending_in();
        }
        st
    }

    /// Ends the run: stops input, takes what the guest left in its transmit rings, writes
    /// everything out that a backend can take (until `grace` has passed), and returns the
    /// final statistics.
    pub fn finish(self, grace: Duration) -> ConsoleStats {
        let deadline = Instant::now() + grace;
        for io in &self.io {
            io.stop_input();
        }
        self.handle.flush_tx();
        quiesce(&self.streams, deadline);
        let labels: Vec<String> = self.specs.iter().map(|s| s.backend_text.clone()).collect();
        let ConsoleRuntime { io, handle, .. } = self;
        // The backends first, then the counters: they no longer move.
        let ends: Vec<_> = io.into_iter().map(|io| io.finish(deadline)).collect();
        let mut st = handle.stats(&labels);
        for (p, end) in st.ports.iter_mut().zip(ends) {
            (p.pending_out_bytes, p.pending_in_bytes, p.out_crc32) = end;
        }
        st
    }
}

/// Waits, at most until `deadline`, for the STREAMS instance to run out of work.
fn quiesce(streams: &Streams, deadline: Instant) {
    let s = streams.clone();
    let t = std::thread::spawn(move || s.quiesce());
    while !t.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_stops_a_console_from_starting_is_said_in_one_line_of_one_error_type() {
        let spec = |s: &str| PortSpec::parse(s).unwrap();
        let cases = [
            (
                vec![spec("name=a,backend=connect:/nonexistent/perimeter.sock")],
                "port a: cannot connect to /nonexistent/perimeter.sock: ",
            ),
            (
                // The parser refuses it; a spec made in code can still name it.
                vec![PortSpec {
                    modules: vec!["nosuch".into()],
                    ..spec("name=a,backend=null")
                }],
                "no module \"nosuch\"",
            ),
            (
                vec![spec("name=a,backend=null"), spec("name=a,backend=null")],
                "two ports are named \"a\"",
            ),
        ];
        for (specs, want) in cases {
            let e = match ConsoleRuntime::start(&specs, &[]) {
                Err(e) => e,
                Ok(_) => panic!("{want}: started"),
            };
            let text = e.to_string();
            assert!(text.starts_with(want), "{text}");
            assert!(!text.contains('\n'), "{text}");
            if want.starts_with("port a:") {
                assert!(matches!(e, ConsoleError::Backend { .. }), "{e:?}");
            }
        }
    }
}
