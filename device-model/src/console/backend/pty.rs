//! A pseudo-terminal for a port: the master side stays with the VMM, the slave's path is
//! printed for the user (`screen /dev/pts/N`), and its window size is polled. The system calls
//! are rustix's (no `unsafe` here).

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
use rustix::termios::{OptionalActions, tcgetattr, tcgetwinsize, tcsetattr};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Opens a new pty in raw mode; returns its master and the slave's path.
pub fn open() -> io::Result<(File, PathBuf)> {
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let name = ptsname(&master, Vec::new())?;
    let path = PathBuf::from(OsString::from_vec(name.into_bytes()));
    let master = File::from(master);
    set_raw(&master)?;
    Ok((master, path))
}

/// Puts the terminal in raw mode: bytes pass unchanged both ways.
pub fn set_raw(f: &impl AsFd) -> io::Result<()> {
    let mut t = tcgetattr(f)?;
    t.make_raw();
    tcsetattr(f, OptionalActions::Now, &t)?;
    Ok(())
}

/// The window size as (cols, rows), if the terminal has one.
pub fn window_size(f: &impl AsFd) -> Option<(u16, u16)> {
    let ws = tcgetwinsize(f).ok()?;
    (ws.ws_col != 0).then_some((ws.ws_col, ws.ws_row))
}

/// Waits up to `ms` milliseconds for `fd` to be readable (or hung up); true if it is.
pub fn readable(fd: &impl AsFd, ms: i32) -> bool {
    poll_one(fd, PollFlags::IN, ms)
}

/// Waits up to `ms` milliseconds for `fd` to take more (or fail); true if it will.
pub fn writable(fd: &impl AsFd, ms: i32) -> bool {
    poll_one(fd, PollFlags::OUT, ms)
}

fn poll_one(fd: &impl AsFd, events: PollFlags, ms: i32) -> bool {
    let mut fds = [PollFd::new(fd, events)];
    let ms = ms.max(0);
    let timeout = Timespec {
        tv_sec: i64::from(ms / 1000),
        tv_nsec: i64::from(ms % 1000) * 1_000_000,
    };
    poll(&mut fds, Some(&timeout)).is_ok_and(|n| n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn a_pty_is_raw_and_carries_bytes_both_ways_unchanged() {
        let (mut master, path) = open().unwrap();
        assert!(path.starts_with("/dev/pts/"), "{path:?}");
        let mut slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        // Raw: no echo, no CR/LF translation, no line buffering.
        slave.write_all(b"a\nb\r").unwrap();
        assert!(readable(&master, 1000));
        let mut buf = [0u8; 16];
        let n = master.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a\nb\r");
        master.write_all(b"x").unwrap();
        assert!(readable(&slave, 1000));
        let n = slave.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"x");
        assert!(!readable(&master, 0), "nothing echoed back");
        assert!(writable(&master, 0));
    }
}
