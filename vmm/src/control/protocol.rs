//! What a control client says and what it is answered: one request per line, one JSON answer
//! per line.
//!
//! A request is a JSON object with a `cmd` (`{"cmd":"remove","port":"log"}`) or the same in
//! words (`remove log`), for people typing at `socat`. Every answer is one JSON object with
//! `"ok": true` and what was asked for, or `"ok": false` and an `error` that says why.

use device_model::console::{ConsoleHandle, ConsoleStats, PortStats};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::path::PathBuf;

/// One command.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    /// Every port: backend, path, state and counters.
    Ports,
    /// The console's statistics, as `perimeter run --stats --json` prints them at exit.
    Stats,
    /// Plugs a removed or `unplugged` port in (DEVICE_ADD).
    Add {
        /// The port's name.
        port: String,
    },
    /// Removes a port (DEVICE_REMOVE): the guest's driver hangs up its stream.
    Remove {
        /// The port's name.
        port: String,
    },
    /// Ends the run as a signal would: the guest stops, the statistics are printed, and
    /// perimeter exits with status 0.
    Shutdown,
}

impl Request {
    /// Reads one request line: a JSON object, or words (`ports`, `stats`, `add NAME`,
    /// `remove NAME`, `shutdown`).
    pub fn parse(line: &str) -> Result<Request, String> {
        let line = line.trim();
        if line.starts_with('{') {
            let doc: Value = serde_json::from_str(line).map_err(|e| format!("bad request: {e}"))?;
            let req: Request =
                serde_json::from_value(doc.clone()).map_err(|e| format!("bad request: {e}"))?;
            // serde lets unit variants of a tagged enum carry any fields: refuse them here.
            let allowed: &[&str] = match req {
                Request::Add { .. } | Request::Remove { .. } => &["cmd", "port"],
                _ => &["cmd"],
            };
            let fields = doc.as_object().into_iter().flat_map(|o| o.keys());
            if let Some(extra) = fields.into_iter().find(|k| !allowed.contains(&k.as_str())) {
                return Err(format!("bad request: unknown field `{}`", shorten(extra)));
            }
            return Ok(req);
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ports"] => Ok(Request::Ports),
            ["stats"] => Ok(Request::Stats),
            ["shutdown"] => Ok(Request::Shutdown),
            ["add", port] => Ok(Request::Add {
                port: port.to_string(),
            }),
            ["remove", port] => Ok(Request::Remove {
                port: port.to_string(),
            }),
            [] => Err("empty request".into()),
            _ => Err(format!(
                "unknown request {:?}: expected ports, stats, add NAME, remove NAME or shutdown \
                 (or the same as JSON: {{\"cmd\":\"add\",\"port\":\"NAME\"}})",
                shorten(line)
            )),
        }
    }
}

/// A request's text, cut short for an error message.
pub fn shorten(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        return s.to_string();
    }
    let mut t: String = s.chars().take(MAX).collect();
    t.push('…');
    t
}

/// The answer to a request that failed.
pub fn failure(why: &str) -> Value {
    json!({ "ok": false, "error": why })
}

/// One port as `ports` lists it.
#[derive(Serialize)]
struct PortEntry<'a> {
    /// Where a user connects to the port (a pty's slave, a socket), if anywhere.
    path: Option<&'a PathBuf>,
    /// Plugged in (not removed, not `unplugged` at start).
    plugged: bool,
    /// The guest has the port open.
    guest_open: bool,
    /// A host client is attached (a socket's client, an open pty, always for the others).
    host_open: bool,
    /// The terminal size the guest was last told, columns and rows (0 when never told).
    size: (u16, u16),
    #[serde(flatten)]
    stats: &'a PortStats,
}

/// What the console's side of a request needs: the device, each port's backend and path, and
/// the rest of the statistics (the transport's counters).
pub struct Context {
    /// The running console.
    pub console: ConsoleHandle,
    /// Each port's backend as given on the command line, by port number.
    pub backends: Vec<String>,
    /// Each port's path, by port number.
    pub paths: Vec<Option<PathBuf>>,
    /// Fills in what the console does not know itself (the transport's counters).
    pub complete: Box<dyn Fn(&mut ConsoleStats) + Send + Sync>,
    /// COM1's counters, for `stats`.
    pub serial: Option<std::sync::Arc<crate::devices::serial::SerialCounters>>,
}

impl Context {
    fn stats(&self) -> ConsoleStats {
        let mut s = self.console.stats(&self.backends);
        (self.complete)(&mut s);
        s
    }

    /// The statistics as `--stats --json` has them: the console's, the transport's and
    /// COM1's.
    pub fn stats_document(&self) -> Value {
        let mut stats = serde_json::to_value(self.stats()).expect("plain data");
        if let Some(c) = &self.serial {
            stats["serial"] = json!(c.stats());
        }
        stats
    }

    fn port_id(&self, name: &str) -> Option<u32> {
        (0..self.console.ports() as u32)
            .find(|&i| self.console.port(i).is_some_and(|p| p.config.name == name))
    }

    /// Carries out `req` (except `shutdown`, which the server does) and answers it.
    pub fn answer(&self, req: &Request) -> Value {
        match req {
            Request::Ports => {
                let stats = self.stats();
                let ports: Vec<PortEntry<'_>> = stats
                    .ports
                    .iter()
                    .filter_map(|s| {
                        let p = self.console.port(s.port)?;
                        Some(PortEntry {
                            path: self.paths.get(s.port as usize).and_then(Option::as_ref),
                            plugged: !p.removed(),
                            guest_open: p.guest_open(),
                            host_open: p.host_open(),
                            size: p.size(),
                            stats: s,
                        })
                    })
                    .collect();
                json!({ "ok": true, "ports": ports })
            }
            Request::Stats => json!({ "ok": true, "stats": self.stats_document() }),
            Request::Add { port } | Request::Remove { port } => {
                let Some(id) = self.port_id(port) else {
                    return failure(&format!("no port named {:?}", shorten(port)));
                };
                let (done, result) = match req {
                    Request::Add { .. } => ("added", self.console.add_port(id)),
                    _ => ("removed", self.console.remove_port(id)),
                };
                match result {
                    Ok(()) => json!({ "ok": true, done: port }),
                    Err(e) => failure(&e.to_string()),
                }
            }
            Request::Shutdown => json!({ "ok": true, "shutdown": true }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_json_or_words_and_bad_ones_say_why() {
        let remove = Request::Remove { port: "log".into() };
        assert_eq!(Request::parse("remove log"), Ok(remove.clone()));
        assert_eq!(
            Request::parse(r#" {"cmd":"remove","port":"log"} "#),
            Ok(remove)
        );
        assert_eq!(Request::parse("ports"), Ok(Request::Ports));
        assert_eq!(Request::parse(r#"{"cmd":"stats"}"#), Ok(Request::Stats));
        assert_eq!(Request::parse("shutdown"), Ok(Request::Shutdown));
        assert_eq!(Request::parse(""), Err("empty request".into()));
        let e = Request::parse("remove").unwrap_err();
        assert!(e.starts_with("unknown request \"remove\""), "{e}");
        let e = Request::parse(r#"{"cmd":"fly"}"#).unwrap_err();
        assert!(e.starts_with("bad request: unknown variant `fly`"), "{e}");
        let e = Request::parse(r#"{"cmd":"add"}"#).unwrap_err();
        assert!(e.contains("missing field `port`"), "{e}");
        let e = Request::parse(r#"{"cmd":"ports","x":1}"#).unwrap_err();
        assert!(e.contains("unknown field `x`"), "{e}");
        let long = "x".repeat(100);
        let e = Request::parse(&long).unwrap_err();
        assert!(e.len() < 200 && e.contains('…'), "{e}");
    }
}
