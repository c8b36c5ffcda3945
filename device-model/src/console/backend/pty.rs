//! A pseudo-terminal for a port: the master side stays with the VMM, the slave's path is
//! printed for the user (`screen /dev/pts/N`), and its window size is polled.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

/// Opens a new pty in raw mode; returns its master and the slave's path.
pub fn open() -> io::Result<(File, PathBuf)> {
    // SAFETY: posix_openpt returns a new descriptor (or -1), which we own from here on.
    let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let master = unsafe { File::from_raw_fd(fd) };
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: plain calls on our own descriptor; `name` is writable for its whole length and
    // ptsname_r NUL-terminates on success.
    let path = unsafe {
        if libc::grantpt(fd) != 0
            || libc::unlockpt(fd) != 0
            || libc::ptsname_r(fd, name.as_mut_ptr(), name.len()) != 0
        {
            return Err(io::Error::last_os_error());
        }
        std::ffi::CStr::from_ptr(name.as_ptr())
    };
    let path = PathBuf::from(path.to_string_lossy().into_owned());
    set_raw(&master)?;
    Ok((master, path))
}

/// Puts the terminal in raw mode: bytes pass unchanged both ways.
pub fn set_raw(f: &File) -> io::Result<()> {
    // SAFETY: termios is plain old data, filled by tcgetattr before use; the descriptor is ours.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(f.as_raw_fd(), &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The window size as (cols, rows), if the terminal has one.
pub fn window_size(f: &File) -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we pass.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col != 0).then_some((ws.ws_col, ws.ws_row))
}

/// Waits up to `ms` milliseconds for `fd` to be readable (or hung up); true if it is.
pub fn readable(fd: &impl AsRawFd, ms: i32) -> bool {
    poll_one(fd, libc::POLLIN, ms)
}

/// Waits up to `ms` milliseconds for `fd` to take more (or fail); true if it will.
pub fn writable(fd: &impl AsRawFd, ms: i32) -> bool {
    poll_one(fd, libc::POLLOUT, ms)
}

fn poll_one(fd: &impl AsRawFd, events: libc::c_short, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    r > 0
}
