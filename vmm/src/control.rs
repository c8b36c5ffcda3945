//! The control socket (`--control PATH`): change a running VM from a script.
//!
//! A UNIX stream socket; each line is one command, each answer one line (`ok ...` or
//! `error: ...`):
//!
//! * `ports`: the ports, as `ok 0:console 1:echo ...` (ports not plugged in, removed or
//!   `unplugged` from the start, marked `(removed)`);
//! * `remove NAME`: removes the port (DEVICE_REMOVE); the guest's driver hangs up its stream;
//! * `add NAME`: plugs a removed or `unplugged` port in (DEVICE_ADD); the guest's driver
//!   sets it up as at boot.

use device_model::console::ConsoleHandle;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A listening control socket and its thread.
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Answers one command line.
pub fn answer(console: &ConsoleHandle, names: &[String], line: &str) -> String {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("ports"), None, _) => {
            let list: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let gone = if console.port(i as u32).is_some_and(|p| p.removed()) {
                        "(removed)"
                    } else {
                        ""
                    };
                    format!("{i}:{n}{gone}")
                })
                .collect();
            format!("ok {}", list.join(" "))
        }
        (Some(verb @ ("remove" | "add")), Some(name), None) => {
            let Some(id) = names.iter().position(|n| n == name) else {
                return format!("error: no port named {name:?}");
            };
            let (done, result) = match verb {
                "remove" => ("removed", console.remove_port(id as u32)),
                _ => ("added", console.add_port(id as u32)),
            };
            match result {
                Ok(()) => format!("ok {done} {name}"),
                Err(e) => format!("error: {e}"),
            }
        }
        (None, _, _) => "error: empty command".into(),
        _ => format!(
            "error: unknown command {line:?}: expected `ports`, `remove NAME` or `add NAME`"
        ),
    }
}

fn serve(conn: UnixStream, console: &ConsoleHandle, names: &[String], stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut lines = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::Acquire) {
        match lines.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {
                let reply = answer(console, names, line.trim());
                if writeln!(out, "{reply}").is_err() {
                    return;
                }
                line.clear();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

impl ControlSocket {
    /// Listens on `path` (a stale socket file is replaced, anything else refused) and serves
    /// one client at a time until dropped.
    pub fn start(
        path: &Path,
        console: ConsoleHandle,
        names: Vec<String>,
    ) -> Result<ControlSocket, String> {
        let err = |e: std::io::Error| format!("--control {}: {e}", path.display());
        let l = device_model::console::backend::listen(path).map_err(err)?;
        l.set_nonblocking(true).map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                while !s.load(Ordering::Acquire) {
                    match l.accept() {
                        Ok((c, _)) => {
                            let _ = c.set_nonblocking(false);
                            serve(c, &console, &names, &s);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })
            .map_err(|e| format!("--control: cannot start its thread: {e}"))?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use device_model::console::ConsoleRuntime;
    use device_model::console::backend::PortSpec;

    #[test]
    fn commands_list_and_remove_ports_and_bad_ones_say_why() {
        let specs: Vec<PortSpec> = ["a", "b"]
            .iter()
            .map(|n| PortSpec::parse(&format!("name={n},backend=null")).unwrap())
            .collect();
        let rt = ConsoleRuntime::start(&specs, &[]).unwrap();
        let h = rt.handle();
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(answer(&h, &names, "ports"), "ok 0:a 1:b");
        assert_eq!(answer(&h, &names, "remove b"), "ok removed b");
        assert!(answer(&h, &names, "remove b").contains("not plugged in"));
        assert_eq!(answer(&h, &names, "ports"), "ok 0:a 1:b(removed)");
        assert_eq!(answer(&h, &names, "add b"), "ok added b");
        assert!(answer(&h, &names, "add b").contains("already plugged in"));
        assert_eq!(answer(&h, &names, "ports"), "ok 0:a 1:b");
        assert!(answer(&h, &names, "add zz").contains("no port named"));
        assert!(answer(&h, &names, "remove zz").contains("no port named"));
        assert!(answer(&h, &names, "fly away").starts_with("error: unknown command"));
        assert!(answer(&h, &names, "").starts_with("error: empty"));
        let _ = rt.finish(Duration::from_secs(1));
    }
}
