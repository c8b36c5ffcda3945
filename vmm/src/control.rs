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
//!
//! Up to [`MAX_CLIENTS`] clients are served at once, each by its own thread, so an idle
//! client never holds up another. A line longer than [`MAX_LINE`] bytes, or not UTF-8, gets a
//! short error. Every command received is carried out, in order, even when its client has
//! gone by the time the answer is written (a script may send `remove` and close).

use device_model::console::ConsoleHandle;
use device_model::console::backend::pty::readable;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest command line, newline included.
pub const MAX_LINE: usize = 4096;
/// Clients served at once; one more is told so and closed.
pub const MAX_CLIENTS: usize = 16;
/// How often waiting threads look at the stop flag.
const POLL_MS: i32 = 100;

/// A listening control socket and its threads.
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
                return format!("error: no port named {:?}", shorten(name));
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
            "error: unknown command {:?}: expected `ports`, `remove NAME` or `add NAME`",
            shorten(line)
        ),
    }
}

/// At most 64 characters of `s`, for quoting input in an error.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// Splits a client's bytes into lines no longer than [`MAX_LINE`].
#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
    /// The current line ran past [`MAX_LINE`]: skip to its end.
    skipping: bool,
}

/// One line as received.
#[derive(Debug, PartialEq)]
enum Line {
    Text(String),
    TooLong,
    NotUtf8,
}

impl Lines {
    /// Adds `bytes` and returns every line they complete.
    fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if std::mem::take(&mut self.skipping) {
                    out.push(Line::TooLong);
                } else {
                    let raw = std::mem::take(&mut self.buf);
                    out.push(match String::from_utf8(raw) {
                        Ok(t) => Line::Text(t),
                        Err(_) => Line::NotUtf8,
                    });
                }
            } else if !self.skipping {
                if self.buf.len() + 1 >= MAX_LINE {
                    self.buf.clear();
                    self.skipping = true;
                } else {
                    self.buf.push(b);
                }
            }
        }
        out
    }
}

/// Serves one client until it closes (or the socket stops): every line it sent is carried
/// out; answers stop once one cannot be written.
fn serve(mut conn: UnixStream, console: &ConsoleHandle, names: &[String], stop: &AtomicBool) {
    let mut lines = Lines::default();
    // A client that does not read its answers is not answered for long, and never holds
    // this thread past a stop.
    let mut replying = conn.set_write_timeout(Some(Duration::from_secs(1))).is_ok();
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Acquire) {
        if !readable(&conn, POLL_MS) {
            continue;
        }
        let n = match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {
                continue;
            }
            Err(_) => return,
        };
        for line in lines.push(&buf[..n]) {
            let mut reply = match line {
                Line::Text(t) => answer(console, names, t.trim()),
                Line::TooLong => format!("error: a command is at most {MAX_LINE} bytes"),
                Line::NotUtf8 => "error: a command is UTF-8 text".into(),
            };
            match reply.strip_prefix("error: ") {
                Some(why) => log::warn!("control socket: a command refused: {why}"),
                None => log::info!("control socket: {reply}"),
            }
            reply.push('\n');
            // One write per answer: a client that reads one answer and closes gets it whole.
            if replying && conn.write_all(reply.as_bytes()).is_err() {
                replying = false;
            }
        }
    }
}

fn accept_loop(
    l: &UnixListener,
    console: &ConsoleHandle,
    names: &Arc<Vec<String>>,
    stop: &Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Acquire) {
        clients.retain(|t| !t.is_finished());
        if !readable(l, POLL_MS) {
            continue;
        }
        let Ok((mut c, _)) = l.accept() else { continue };
        if c.set_nonblocking(false).is_err() {
            continue;
        }
        if active.load(Ordering::Acquire) >= MAX_CLIENTS {
            log::warn!("control socket: a client turned away ({MAX_CLIENTS} are connected)");
            let _ = c.write_all(
                format!("error: {MAX_CLIENTS} clients are connected already\n").as_bytes(),
            );
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let (console, names, stop, active2) =
            (console.clone(), names.clone(), stop.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                serve(c, &console, &names, &stop);
                active2.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(t) => clients.push(t),
            Err(e) => {
                log::warn!("control socket: no thread for a client ({e}); it is let go");
                active.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    for t in clients {
        let _ = t.join();
    }
}

impl ControlSocket {
    /// Listens on `path` (a stale socket file is replaced; anything else, or a socket a
    /// live process listens on, refused) and serves clients until dropped.
    pub fn start(
        path: &Path,
        console: ConsoleHandle,
        names: Vec<String>,
    ) -> Result<ControlSocket, crate::error::Error> {
        let l = device_model::console::backend::listen(path).map_err(|source| {
            crate::error::Error::Control {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let names = Arc::new(names);
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(&l, &console, &names, &s))
            .map_err(crate::error::Error::host(
                "starting the control socket's thread",
            ))?;
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

    fn socket(ports: &[&str]) -> (ConsoleRuntime, ControlSocket, PathBuf) {
        let specs: Vec<PortSpec> = ports
            .iter()
            .map(|n| PortSpec::parse(&format!("name={n},backend=null")).unwrap())
            .collect();
        let rt = ConsoleRuntime::start(&specs, &[]).unwrap();
        let path = std::env::temp_dir().join(format!(
            "perimeter-control-{}-{}.sock",
            std::process::id(),
            ports.join("")
        ));
        let names = ports.iter().map(|n| n.to_string()).collect();
        let c = ControlSocket::start(&path, rt.handle(), names).unwrap();
        (rt, c, path)
    }

    fn eventually(what: &str, f: impl Fn() -> bool) {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(std::time::Instant::now() < until, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn commands_sent_by_a_client_that_leaves_at_once_are_all_carried_out() {
        let (rt, c, path) = socket(&["a", "b", "c"]);
        let h = rt.handle();
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"remove a\nremove b\nremove c\n").unwrap();
        client.shutdown(std::net::Shutdown::Both).unwrap();
        drop(client);
        eventually("every port removed", || {
            (0..3).all(|i| h.port(i).unwrap().removed())
        });
        drop(c);
        let _ = rt.finish(Duration::from_secs(1));
    }

    fn ask(c: &mut std::io::BufReader<UnixStream>, line: &[u8]) -> String {
        c.get_mut().write_all(line).unwrap();
        let mut answer = String::new();
        std::io::BufRead::read_line(c, &mut answer).unwrap();
        answer
    }

    #[test]
    fn clients_are_served_at_once_and_bad_lines_get_short_errors() {
        let (rt, c, path) = socket(&["x", "y"]);
        // An idle client, and one that sent half a line, hold nobody up.
        let _idle = UnixStream::connect(&path).unwrap();
        let mut half = UnixStream::connect(&path).unwrap();
        half.write_all(b"por").unwrap();
        let mut me = std::io::BufReader::new(UnixStream::connect(&path).unwrap());
        me.get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(ask(&mut me, b"ports\n"), "ok 0:x 1:y\n");
        assert_eq!(
            ask(&mut me, b"ports \xff\xfe\n"),
            "error: a command is UTF-8 text\n"
        );
        let mut long = vec![b'z'; 1 << 20];
        long.push(b'\n');
        let a = ask(&mut me, &long);
        assert!(a.len() < 100 && a.contains("at most 4096 bytes"), "{a}");
        let a = ask(
            &mut me,
            &[b"fly ".as_slice(), &[b'q'; 5000][..4000], b"\n"].concat(),
        );
        assert!(
            a.len() < 200 && a.starts_with("error: unknown command"),
            "{a}"
        );
        // The connection still works, and so does the half line once it is finished.
        assert_eq!(ask(&mut me, b"remove y\n"), "ok removed y\n");
        half.write_all(b"ts\n").unwrap();
        let mut half = std::io::BufReader::new(half);
        let mut answer = String::new();
        std::io::BufRead::read_line(&mut half, &mut answer).unwrap();
        assert_eq!(answer, "ok 0:x 1:y(removed)\n");
        drop(c);
        assert!(
            !path.exists(),
            "the socket file goes with the control socket"
        );
        let _ = rt.finish(Duration::from_secs(1));
    }

    #[test]
    fn lines_are_split_bounded_and_checked() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"po"), []);
        assert_eq!(
            l.push(b"rts\nadd a\n\xff\n"),
            [
                Line::Text("ports".into()),
                Line::Text("add a".into()),
                Line::NotUtf8
            ]
        );
        let long = vec![b'x'; 3 * MAX_LINE];
        assert_eq!(l.push(&long), []);
        assert!(l.buf.len() < MAX_LINE);
        assert_eq!(l.push(b"\nok\n"), [Line::TooLong, Line::Text("ok".into())]);
    }
}
