//! The `hostile` workload: the guest attacks its own virtio-console, one case at a time, and
//! checks that the device either ignores the request, returns the bad buffer unused, or sets
//! DEVICE_NEEDS_RESET; that the port named `echo` still moves data while a broken device
//! runs on; and that a reset brings the device back. Bad buffers go to the port named `sink`
//! (or `source` for receive buffers): nothing of them may reach the host.
//!
//! Each case prints `hostile: NAME: OUTCOME, ..., survived` (or `FAILED: why`); the run ends
//! with a summary, an `@result` line and exit 0 only when every case survived.

mod cases;
mod raw;

use crate::cpu::bootinfo;
use crate::drivers::virtio_mmio::Transport;
use crate::println;
use alloc::string::String;
use raw::Raw;

/// What the device did with a hostile request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It set DEVICE_NEEDS_RESET.
    NeedsReset,
    /// It returned the bad buffer unused (in the used ring, nothing written).
    Returned,
    /// Nothing changed: the write or message had no effect.
    Ignored,
}

impl Outcome {
    fn describe(self) -> &'static str {
        match self {
            Outcome::NeedsReset => "device needs reset",
            Outcome::Returned => "buffer returned unused",
            Outcome::Ignored => "ignored",
        }
    }
}

/// The ports the cases use, by name.
#[derive(Clone, Copy)]
pub struct Ports {
    /// Echoes: the port that must keep moving data.
    pub echo: u32,
    /// Takes output: the target of bad transmit buffers.
    pub sink: u32,
    /// Gives input: the target of bad receive buffers.
    pub source: u32,
    /// Guest RAM size (addresses at or past it are outside memory).
    pub mem_size: u64,
}

/// One hostile case.
pub struct Case {
    /// Its name in the report.
    pub name: &'static str,
    /// Whether it runs on a device already up, handshaken, with `echo` open (else it brings
    /// the device up itself, and leaves it up with `echo` open unless it needs a reset).
    pub online: bool,
    /// The outcomes that count as survived.
    pub allowed: &'static [Outcome],
    /// Does the hostile act; returns what the device did, or why that is wrong.
    pub run: fn(&mut Raw, &Ports) -> Result<Outcome, String>,
}

/// Bytes sent through the echo port after each case.
const ECHO_BYTES: usize = 1500;

/// Runs every case; exits 0 if all survived.
pub fn run() -> ! {
    let Some((_, t)) = Transport::find(3) else {
        println!("hostile: no virtio-console device");
        crate::exit(1)
    };
    let mut d = Raw::new(t);
    let ports = match discover(&mut d) {
        Ok(p) => p,
        Err(e) => {
            println!("hostile: {e}");
            crate::exit(1)
        }
    };
    let cases = cases::ALL;
    let (mut survived, mut echoed) = (0, 0);
    for (n, c) in cases.iter().enumerate() {
        match run_case(&mut d, &ports, c, n as u8) {
            Ok((outcome, moved)) => {
                survived += 1;
                echoed += moved;
                let echo = if moved > 0 {
                    alloc::format!("echo port moved {moved} bytes")
                } else {
                    String::from("device not running, echo skipped")
                };
                println!(
                    "hostile: {}: {}, {echo}, survived",
                    c.name,
                    outcome.describe()
                );
            }
            Err(e) => println!("hostile: {}: FAILED: {e}", c.name),
        }
    }
    // The last case may have left the device broken: it must come back once more.
    let recovered = d
        .up(&[ports.echo])
        .and_then(|()| d.echo_check(ports.echo, 0xee, ECHO_BYTES));
    if let Err(e) = &recovered {
        println!("hostile: the device did not recover after the last case: {e}");
    }
    d.reset();
    let ok = survived == cases.len() && recovered.is_ok();
    println!("hostile: {survived} of {} cases survived", cases.len());
    super::report::Line::new("hostile")
        .add("cases", cases.len())
        .add("survived", survived)
        .add("bytes", echoed)
        .add("check", if ok { "ok" } else { "FAILED" })
        .emit();
    crate::exit(if ok { 0 } else { 1 })
}

/// Brings the device up once to learn the ports' numbers from their names.
fn discover(d: &mut Raw) -> Result<Ports, String> {
    d.up(&[])?;
    let find = |name: &str| {
        d.port(name).ok_or_else(|| {
            alloc::format!("hostile needs ports named echo, sink and source (no {name:?})")
        })
    };
    Ok(Ports {
        echo: find("echo")?,
        sink: find("sink")?,
        source: find("source")?,
        mem_size: bootinfo::params().mem_size,
    })
}

/// One case: the device up (online cases), the act, its outcome checked, then the echo port
/// checked while the device runs. Returns the outcome and the bytes echoed.
fn run_case(d: &mut Raw, p: &Ports, c: &Case, n: u8) -> Result<(Outcome, usize), String> {
    if c.online {
        d.up(&[p.echo])
            .and_then(|()| d.echo_check(p.echo, n, 64))
            .map_err(|e| alloc::format!("the device did not come up again: {e}"))?;
    }
    let outcome = (c.run)(d, p)?;
    if !c.allowed.contains(&outcome) {
        let allowed: alloc::vec::Vec<&str> = c.allowed.iter().map(|o| o.describe()).collect();
        return Err(alloc::format!(
            "the device answered \"{}\", this case allows only: {}",
            outcome.describe(),
            allowed.join(" or ")
        ));
    }
    // A device that was running keeps serving its other ports, broken ring or not.
    if c.online || outcome != Outcome::NeedsReset {
        d.echo_check(p.echo, n ^ 0x80, ECHO_BYTES).map_err(|e| {
            alloc::format!("{}, but the echo port stopped: {e}", outcome.describe())
        })?;
        return Ok((outcome, ECHO_BYTES));
    }
    Ok((outcome, 0))
}
