//! `perimeter ctl SOCKET REQUEST...`: sends one request to a running perimeter's control
//! socket and prints the answer, one line of JSON, on stdout (as `ch-remote` is to Cloud
//! Hypervisor).

use super::Request;
use crate::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long an answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends the request `words` make (`ports`, `remove log`, ...) to `socket`; returns whether
/// the answer says ok, and the answer.
pub fn request(socket: &Path, words: &[String]) -> Result<(bool, String), Error> {
    let req = Request::parse(&words.join(" ")).map_err(Error::BadInput)?;
    let line = serde_json::to_string(&req).expect("a request serializes");
    let bad = |e: std::io::Error| Error::BadInput(format!("{}: {e}", socket.display()));
    let mut c = UnixStream::connect(socket).map_err(bad)?;
    c.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(bad)?;
    c.write_all(format!("{line}\n").as_bytes()).map_err(bad)?;
    let mut answer = String::new();
    BufReader::new(&c)
        .read_line(&mut answer)
        .map_err(|e| Error::Host {
            what: "reading the control socket's answer",
            source: e,
        })?;
    let answer = answer.trim_end().to_string();
    let doc: serde_json::Value = serde_json::from_str(&answer).map_err(|e| Error::Host {
        what: "reading the control socket's answer",
        source: std::io::Error::other(format!("not JSON ({e}): {answer:?}")),
    })?;
    Ok((doc["ok"] == true, answer))
}
