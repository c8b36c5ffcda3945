//! What PID 1 sets up for itself, and the few system calls std does not offer.

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;

/// Mounts proc, sysfs and devtmpfs (the initramfs has only the directories).
pub fn mount_filesystems() -> io::Result<()> {
    for (kind, dir) in [("proc", "/proc"), ("sysfs", "/sys"), ("devtmpfs", "/dev")] {
        std::fs::create_dir_all(dir)?;
        mount(kind, dir)?;
    }
    Ok(())
}

fn mount(kind: &str, dir: &str) -> io::Result<()> {
    let (kind_c, dir_c) = (CString::new(kind)?, CString::new(dir)?);
    // SAFETY: both strings are NUL-terminated and live across the call; no data argument.
    let r = unsafe {
        libc::mount(
            kind_c.as_ptr(),
            dir_c.as_ptr(),
            kind_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    match r {
        0 => Ok(()),
        _ if io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) => Ok(()),
        _ => Err(io::Error::other(format!(
            "mount {kind} on {dir}: {}",
            io::Error::last_os_error()
        ))),
    }
}

/// Waits until the console has sent everything written to stdout (PID 1's exit panics the
/// kernel, which would cut the UART's queue short).
pub fn drain_stdout() {
    let fd = io::stdout().as_raw_fd();
    // SAFETY: tcdrain only waits on the descriptor; a non-terminal just fails.
    unsafe { libc::tcdrain(fd) };
}

/// The terminal size of `fd` as (columns, rows).
pub fn window_size(fd: &impl AsRawFd) -> io::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which is valid for it.
    match unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } {
        0 => Ok((ws.ws_col, ws.ws_row)),
        _ => Err(io::Error::last_os_error()),
    }
}
