//! `--serial`: where COM1's output goes and where its input comes from.

use super::SerialPort;
use super::input::{Input, InputThread};
use crate::error::Error;
use device_model::console::backend::listen;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One `--serial` argument.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SerialSpec {
    /// Output on perimeter's stdout; input from its stdin (a terminal in raw mode, `Ctrl-A x`
    /// to quit) unless a `stdio` console port has it.
    #[default]
    Stdio,
    /// Output to a file (created or truncated); no input.
    File(PathBuf),
    /// A UNIX socket perimeter listens on: one client at a time, both ways.
    Socket(PathBuf),
    /// Output discarded (counted); no input.
    Null,
}

impl SerialSpec {
    /// Parses `stdio`, `file:PATH`, `socket:PATH` or `null`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let path = |p: &str| match p {
            "" => Err(format!("{s:?}: the path is missing")),
            p => Ok(PathBuf::from(p)),
        };
        match s.split_once(':') {
            None if s == "stdio" => Ok(SerialSpec::Stdio),
            None if s == "null" => Ok(SerialSpec::Null),
            Some(("file", p)) => path(p).map(SerialSpec::File),
            Some(("socket", p)) => path(p).map(SerialSpec::Socket),
            _ => Err(format!(
                "{s:?}: expected stdio, file:PATH, socket:PATH or null"
            )),
        }
    }

    /// The path a `file:` or `socket:` backend takes.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            SerialSpec::File(p) | SerialSpec::Socket(p) => Some(p),
            SerialSpec::Stdio | SerialSpec::Null => None,
        }
    }
}

impl fmt::Display for SerialSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialSpec::Stdio => f.write_str("stdio"),
            SerialSpec::File(p) => write!(f, "file:{}", p.display()),
            SerialSpec::Socket(p) => write!(f, "socket:{}", p.display()),
            SerialSpec::Null => f.write_str("null"),
        }
    }
}

/// The client of a `socket:` backend, shared by the output side (the vCPU writing) and the
/// input thread (which accepts and reads).
pub(super) type Client = Arc<Mutex<Option<UnixStream>>>;

/// The output side of a `socket:` backend: written without blocking, so that a client that
/// does not read never stalls the vCPU; a byte it cannot take now is lost (and counted).
struct ClientOut(Client);

impl Write for ClientOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut client = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = client.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        match c.write(buf) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                // Gone: the input thread takes the next client.
                *client = None;
                Err(e)
            }
            r => r,
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `--serial` backend, opened (file created, socket listening) but not yet moving input.
pub struct SerialBackend {
    out: Option<Box<dyn Write + Send>>,
    input: Option<Input>,
    /// Removed when the backend ends, started or not.
    socket: Option<PathBuf>,
}

impl SerialBackend {
    /// Opens `spec`. `stdout` is where `stdio` writes; `stdin_free` says whether stdin is
    /// COM1's to read (no `stdio` console port has it).
    pub fn open(
        spec: &SerialSpec,
        stdout: Box<dyn Write + Send>,
        stdin_free: bool,
    ) -> Result<Self, Error> {
        let failed = |what: &str, source: io::Error| Error::Serial {
            what: format!("{spec}: {what}"),
            source,
        };
        let (out, input, socket): (Box<dyn Write + Send>, _, _) = match spec {
            SerialSpec::Stdio if stdin_free => {
                use std::os::fd::AsFd;
                let stdin = io::stdin()
                    .as_fd()
                    .try_clone_to_owned()
                    .map(File::from)
                    .map_err(|e| failed("stdin", e))?;
                (stdout, Input::Stdin(stdin), None)
            }
            SerialSpec::Stdio => (stdout, Input::None, None),
            SerialSpec::File(p) => {
                let f = File::create(p).map_err(|e| failed("cannot create it", e))?;
                (Box::new(f), Input::None, None)
            }
            SerialSpec::Socket(p) => {
                let listener = listen(p).map_err(|e| failed("cannot listen", e))?;
                listener
                    .set_nonblocking(true)
                    .map_err(|e| failed("cannot listen", e))?;
                let client = Client::default();
                let out = Box::new(ClientOut(client.clone()));
                (out, Input::Socket { listener, client }, Some(p.clone()))
            }
            SerialSpec::Null => (Box::new(io::sink()), Input::None, None),
        };
        Ok(SerialBackend {
            out: Some(out),
            input: Some(input),
            socket,
        })
    }

    /// Where the UART writes (once).
    pub fn take_output(&mut self) -> Box<dyn Write + Send> {
        self.out.take().expect("the output is taken once")
    }

    /// Starts moving input into `port` (a terminal on stdin goes into raw mode now); `quit`
    /// ends the run (`Ctrl-A x` on a terminal).
    pub fn start(
        mut self,
        port: Arc<SerialPort>,
        quit: Box<dyn Fn() + Send>,
    ) -> Result<SerialRunning, Error> {
        let input = self.input.take().unwrap_or(Input::None);
        let thread = InputThread::start(input, port, quit)?;
        Ok(SerialRunning {
            thread,
            _backend: self,
        })
    }
}

impl Drop for SerialBackend {
    fn drop(&mut self) {
        if let Some(p) = self.socket.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A backend whose input is moving. Dropping it (or [`SerialRunning::stop`]) ends the input
/// thread, puts the terminal back and removes the socket file.
pub struct SerialRunning {
    thread: Option<InputThread>,
    _backend: SerialBackend,
}

impl SerialRunning {
    /// Ends it (as dropping it does).
    pub fn stop(self) {}
}

impl Drop for SerialRunning {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            t.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_and_prints_back() {
        for s in [
            "stdio",
            "null",
            "file:/tmp/com1.out",
            "socket:/tmp/com1.sock",
        ] {
            assert_eq!(SerialSpec::parse(s).unwrap().to_string(), s);
        }
        for bad in ["", "tty", "file:", "socket:", "file", "pty:/x", "STDIO"] {
            assert!(SerialSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_socket_without_a_client_refuses_output_and_a_full_one_does_not_block() {
        let client = Client::default();
        let mut out = ClientOut(client.clone());
        assert_eq!(
            out.write(b"x").unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        *client.lock().unwrap() = Some(a);
        // Nobody reads `_b`: the socket's buffer fills, then writes fail without blocking.
        let chunk = [0u8; 4096];
        let full = (0..10_000).any(|_| out.write(&chunk).is_err());
        assert!(full, "a client that does not read fills up");
        assert!(client.lock().unwrap().is_some(), "a full client stays");
    }
}
