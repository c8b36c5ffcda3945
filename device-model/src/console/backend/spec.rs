//! Parsing `--port name=NAME,backend=KIND[,console][,unplugged][,modules=a+b]` and `--fault ...`.

use std::path::PathBuf;
use streams::FaultPolicy;

/// Where a port's bytes go and come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// Standard output and input of the VMM process.
    Stdio,
    /// A UNIX socket the VMM listens on; one client at a time, a new one may come later.
    Socket(PathBuf),
    /// A UNIX socket the VMM connects to at start.
    Connect(PathBuf),
    /// A new pseudo-terminal; its window size reaches the guest.
    Pty,
    /// Output appended to a file (created or truncated), input read from another.
    File {
        /// Where the guest's output goes.
        out: PathBuf,
        /// What the guest reads (none if absent).
        input: Option<PathBuf>,
    },
    /// Output discarded (counted, checksummed); no input.
    Null,
    /// Output discarded (counted, checksummed); input an endless deterministic pattern.
    Pattern,
    /// Output sent back to the guest as input (round trips without a client).
    Echo,
}

/// One `--port` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// Port name.
    pub name: String,
    /// Backend.
    pub backend: BackendKind,
    /// Whether it is a console port.
    pub console: bool,
    /// Left out at start, plugged in later (`add NAME` on the control socket).
    pub unplugged: bool,
    /// Modules to push, from the head down.
    pub modules: Vec<String>,
    /// The backend as written (for tables).
    pub backend_text: String,
}

/// Valid port names: what Linux shows in sysfs, so no '/' and nothing odd.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl PortSpec {
    /// Parses one `--port` value.
    pub fn parse(s: &str) -> Result<PortSpec, String> {
        let mut name = None;
        let mut backend = None;
        let mut console = false;
        let mut unplugged = false;
        let mut modules = Vec::new();
        for part in s.split(',') {
            let (k, v) = match part.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (part, None),
            };
            match (k, v) {
                ("name", Some(v)) if valid_name(v) => name = Some(v.to_string()),
                ("name", Some(v)) => {
                    return Err(format!(
                        "port name {v:?}: use 1-64 letters, digits, '.', '_' or '-'"
                    ));
                }
                ("backend", Some(v)) => backend = Some((parse_backend(v)?, v.to_string())),
                ("console", None) => console = true,
                ("unplugged", None) => unplugged = true,
                ("modules", Some(v)) => {
                    for m in v.split('+') {
                        if super::super::modules::lookup(m).is_none() {
                            let known: Vec<&str> =
                                super::super::modules::MODULES.iter().map(|m| m.0).collect();
                            return Err(format!("no module {m:?} (known: {})", known.join(", ")));
                        }
                        modules.push(m.to_string());
                    }
                }
                _ => {
                    return Err(format!(
                        "unknown port option {part:?}: expected name=NAME, backend=KIND, console, unplugged, modules=a+b"
                    ));
                }
            }
        }
        let name = name.ok_or("a port needs name=NAME")?;
        let (backend, backend_text) = backend.ok_or("a port needs backend=KIND")?;
        Ok(PortSpec {
            name,
            backend,
            console,
            unplugged,
            modules,
            backend_text,
        })
    }

    /// Port 0 when no `--port` is given: the console on stdio.
    /// The ports of a VM given no `--port`: `console` (stdio, a console port), `echo` (echo),
    /// `sink` (null) and `source` (pattern), the ports the guest's selftest looks for.
    pub fn defaults() -> Vec<PortSpec> {
        let mut ports = vec![PortSpec::default_console()];
        for (name, backend) in [
            ("echo", BackendKind::Echo),
            ("sink", BackendKind::Null),
            ("source", BackendKind::Pattern),
        ] {
            ports.push(PortSpec {
                name: name.into(),
                backend_text: match backend {
                    BackendKind::Echo => "echo",
                    BackendKind::Null => "null",
                    _ => "pattern",
                }
                .into(),
                backend,
                console: false,
                unplugged: false,
                modules: Vec::new(),
            });
        }
        ports
    }

    /// Port 0 alone: a console on stdio.
    pub fn default_console() -> PortSpec {
        PortSpec {
            name: "console".into(),
            backend: BackendKind::Stdio,
            console: true,
            unplugged: false,
            modules: Vec::new(),
            backend_text: "stdio".into(),
        }
    }
}

fn path(kind: &str, p: &str) -> Result<PathBuf, String> {
    if p.is_empty() {
        Err(format!("backend {kind}: needs a path ({kind}:PATH)"))
    } else {
        Ok(PathBuf::from(p))
    }
}

fn parse_backend(v: &str) -> Result<BackendKind, String> {
    let (kind, arg) = match v.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (v, None),
    };
    Ok(match (kind, arg) {
        ("stdio", None) => BackendKind::Stdio,
        ("socket", Some(p)) => BackendKind::Socket(path("socket", p)?),
        ("connect", Some(p)) => BackendKind::Connect(path("connect", p)?),
        ("pty", None) => BackendKind::Pty,
        ("file", Some(a)) => {
            let (out, input) = match a.split_once(':') {
                Some((o, i)) => (path("file", o)?, Some(path("file", i)?)),
                None => (path("file", a)?, None),
            };
            BackendKind::File { out, input }
        }
        ("null", None) => BackendKind::Null,
        ("pattern", None) => BackendKind::Pattern,
        ("echo", None) => BackendKind::Echo,
        _ => {
            return Err(format!(
                "unknown backend {v:?}: expected stdio, socket:PATH, connect:PATH, pty, file:OUT[:IN], null, pattern or echo"
            ));
        }
    })
}

/// A path as a key for comparing two paths given on the command line: absolute, with `.`
/// and `..` resolved as far as the file system can.
pub fn path_key(p: &std::path::Path) -> std::path::PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| abs.clone(), |d| d.join(name)),
        _ => abs,
    }
}

/// The paths a port creates or listens on (its socket, or its output file).
fn claimed_paths(p: &PortSpec) -> Vec<&std::path::Path> {
    match &p.backend {
        BackendKind::Socket(s) => vec![s.as_path()],
        BackendKind::File { out, .. } => vec![out.as_path()],
        _ => Vec::new(),
    }
}

/// Checks a whole port list: 1 to 31 ports, distinct names, at most one stdio port, no two
/// ports listening on (or writing) the same path.
pub fn check_ports(ports: &[PortSpec]) -> Result<(), String> {
    let max = super::super::defs::MAX_PORTS as usize;
    if ports.is_empty() || ports.len() > max {
        return Err(format!("give 1 to {max} ports, not {}", ports.len()));
    }
    for (i, p) in ports.iter().enumerate() {
        if ports[..i].iter().any(|q| q.name == p.name) {
            return Err(format!("two ports are named {:?}", p.name));
        }
        for path in claimed_paths(p) {
            let key = path_key(path);
            if let Some(q) = ports[..i]
                .iter()
                .find(|q| claimed_paths(q).iter().any(|o| path_key(o) == key))
            {
                return Err(format!(
                    "ports {:?} and {:?} both use {}",
                    q.name,
                    p.name,
                    path.display()
                ));
            }
        }
    }
    if ports[0].unplugged {
        return Err(format!(
            "port 0 ({}) cannot be unplugged: a driver without MULTIPORT sees only port 0",
            ports[0].name
        ));
    }
    if ports
        .iter()
        .filter(|p| p.backend == BackendKind::Stdio)
        .count()
        > 1
    {
        return Err("only one port can use backend=stdio".into());
    }
    Ok(())
}

/// One `--fault` argument: a pool policy, or a pool size limit.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultSpec {
    /// An allocation failure policy.
    Policy(FaultPolicy),
    /// The pool holds at most this many bytes.
    PoolBytes(usize),
}

/// Parses `allocb=every:N`, `allocb=rate:P[:SEED]` or `pool=BYTES`.
pub fn parse_fault(s: &str) -> Result<FaultSpec, String> {
    let bad = || {
        format!(
            "fault {s:?}: expected allocb=every:N (N >= 1), allocb=rate:P[:SEED] (0 <= P <= 1) or pool=BYTES"
        )
    };
    if let Some(b) = s.strip_prefix("pool=") {
        let n: usize = b.parse().map_err(|_| bad())?;
        return (n >= 4096)
            .then_some(FaultSpec::PoolBytes(n))
            .ok_or_else(|| format!("fault {s:?}: a pool needs at least 4096 bytes"));
    }
    let a = s.strip_prefix("allocb=").ok_or_else(bad)?;
    if let Some(n) = a.strip_prefix("every:") {
        let n: u64 = n.parse().map_err(|_| bad())?;
        return (n >= 1)
            .then_some(FaultSpec::Policy(FaultPolicy::EveryNth(n)))
            .ok_or_else(bad);
    }
    let r = a.strip_prefix("rate:").ok_or_else(bad)?;
    let (p, seed) = match r.split_once(':') {
        Some((p, s)) => (p, s.parse::<u64>().map_err(|_| bad())?),
        None => (r, 1),
    };
    let p: f64 = p.parse().map_err(|_| bad())?;
    if !(0.0..=1.0).contains(&p) {
        return Err(bad());
    }
    Ok(FaultSpec::Policy(FaultPolicy::Probability { p, seed }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_bad_ones_say_why() {
        let p = PortSpec::parse("name=serial0,backend=socket:/tmp/s,console,modules=crlf+pass")
            .unwrap();
        assert_eq!(p.name, "serial0");
        assert_eq!(p.backend, BackendKind::Socket("/tmp/s".into()));
        assert!(p.console);
        assert_eq!(p.modules, ["crlf", "pass"]);
        let f = PortSpec::parse("name=f,backend=file:/o:/i").unwrap();
        assert_eq!(
            f.backend,
            BackendKind::File {
                out: "/o".into(),
                input: Some("/i".into())
            }
        );
        for (bad, why) in [
            ("backend=null", "name=NAME"),
            ("name=a", "backend=KIND"),
            ("name=a/b,backend=null", "letters"),
            ("name=a,backend=tcp:1", "unknown backend"),
            ("name=a,backend=socket:", "needs a path"),
            ("name=a,backend=null,modules=zip", "no module"),
            ("name=a,backend=null,colour", "unknown port option"),
        ] {
            let e = PortSpec::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let two = [PortSpec::default_console(), PortSpec::default_console()];
        assert!(check_ports(&two).unwrap_err().contains("named"));
        let late = PortSpec::parse("name=late,backend=echo,unplugged").unwrap();
        assert!(late.unplugged);
        let first = vec![late.clone(), PortSpec::default_console()];
        assert!(
            check_ports(&first)
                .unwrap_err()
                .contains("cannot be unplugged")
        );
        assert!(check_ports(&[PortSpec::default_console(), late]).is_ok());
    }

    #[test]
    fn faults_parse() {
        assert_eq!(
            parse_fault("allocb=every:3"),
            Ok(FaultSpec::Policy(FaultPolicy::EveryNth(3)))
        );
        assert_eq!(
            parse_fault("allocb=rate:0.5:9"),
            Ok(FaultSpec::Policy(FaultPolicy::Probability {
                p: 0.5,
                seed: 9
            }))
        );
        assert_eq!(parse_fault("pool=65536"), Ok(FaultSpec::PoolBytes(65536)));
        for bad in [
            "allocb=every:0",
            "allocb=rate:1.5",
            "pool=12",
            "oom",
            "allocb=rate:x",
        ] {
            assert!(parse_fault(bad).is_err(), "{bad}");
        }
    }
}
