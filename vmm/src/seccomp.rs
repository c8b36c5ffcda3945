//! The seccomp filter of a running VM. Once guest memory, KVM, every device and backend, the
//! control socket and the event loop exist, the whole process (every thread, TSYNC, and every
//! thread started later) may make only the system calls a running VM needs; anything else
//! kills the process with SIGSYS. A guest that takes over a device thread cannot open a
//! network socket, start a program or touch another process.
//!
//! Filters are stacked (the kernel applies the strictest answer):
//! - an allow-list, whose default is `KillProcess`: reading and writing descriptors the VMM
//!   already holds, `KVM_RUN` and the few other ioctls of a running VM, epoll, futexes,
//!   memory for the allocator, threads (`clone` only with `CLONE_THREAD`), signals to this
//!   process's own threads, sleeping, accepting clients on the listening sockets, the
//!   calling thread's CPU affinity (`--pin-vcpus`);
//! - two filters that answer, instead of killing, calls a C library makes on its own:
//!   `openat` fails with EACCES (glibc reads `/sys/devices/system/cpu/online` when a thread
//!   first allocates; no file can be opened once the VM runs), and `clone3` fails with
//!   ENOSYS, so that glibc starts threads with `clone`, whose flags a filter can check.
//!
//! The list comes from `strace -f` of every workload, backend (stdio, socket, connect, pty,
//! file, null, pattern, echo), the control socket, fault injection, timeouts and guest
//! crashes; the KVM tests run every one of those under the filter. `--no-seccomp` turns it
//! off.

use crate::error::Error;
use seccompiler::{
    BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;
use std::io;

/// `_IOC` of the Linux ioctl encoding.
const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}

/// `KVM_RUN`.
const KVM_RUN: u64 = ioc(0, 0xae, 0x80, 0);
/// `KVM_GET_REGS` (read when reporting a guest's internal error).
const KVM_GET_REGS: u64 = ioc(2, 0xae, 0x81, size_of::<kvm_bindings::kvm_regs>() as u64);

/// The ioctls of a running VM: KVM_RUN and KVM_GET_REGS on vCPUs, TIOCGWINSZ (a pty's or
/// terminal's window size), FIONBIO (an accepted client made non-blocking), TCSETS2 and TCSETS
/// (a `stdio` port's terminal put back as it was at the end).
const IOCTLS: [u64; 6] = [
    KVM_RUN,
    KVM_GET_REGS,
    libc::TIOCGWINSZ,
    libc::FIONBIO,
    libc::TCSETS2,
    libc::TCSETS,
];

/// System calls allowed with any arguments.
const ANY_ARGS: &[i64] = &[
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_fcntl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_eventfd2,
    libc::SYS_futex,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigaction,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_getrandom,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_setsockopt,
    // Removing the listening sockets' paths at the end of the run.
    libc::SYS_unlink,
    // Answered by the other two filters (EACCES, ENOSYS), so allowed here.
    libc::SYS_openat,
    libc::SYS_clone3,
];

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value)
}

fn rule(conds: Vec<SeccompCondition>) -> Result<SeccompRule, BackendError> {
    SeccompRule::new(conds)
}

/// The allow-list filter (default: kill the process).
fn allow_list(pid: u32) -> Result<SeccompFilter, BackendError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ANY_ARGS.iter().map(|&nr| (nr, Vec::new())).collect();
    let ioctls = IOCTLS
        .iter()
        .map(|&req| {
            let c = SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, req)?;
            rule(vec![c])
        })
        .collect::<Result<_, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctls);
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::MaskedEq(thread),
            thread,
        )?])?],
    );
    // Signals only to this process's own threads (the vCPU kick).
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![cond(0, SeccompCmpOp::Eq, u64::from(pid))?])?],
    );
    // CPU affinity of the calling thread only (`--pin-vcpus` starts vCPU threads on their
    // CPUs and restores the building thread's CPUs at the end).
    rules.insert(
        libc::SYS_sched_setaffinity,
        vec![rule(vec![cond(0, SeccompCmpOp::Eq, 0)?])?],
    );
    // Naming threads.
    rules.insert(
        libc::SYS_prctl,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            libc::PR_SET_NAME as u64,
        )?])?],
    );
    SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch(),
    )
}

/// A filter that answers system call `nr` with `errno` (default: allow).
fn answer(nr: i64, errno: i32) -> Result<SeccompFilter, BackendError> {
    SeccompFilter::new(
        BTreeMap::from([(nr, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch(),
    )
}

fn arch() -> TargetArch {
    TargetArch::x86_64
}

/// The filters, compiled, in the order they are installed.
pub fn programs() -> Result<Vec<BpfProgram>, Error> {
    let compile = |f: Result<SeccompFilter, BackendError>| {
        f.and_then(BpfProgram::try_from).map_err(|e| Error::Host {
            what: "building the seccomp filter",
            source: io::Error::other(e),
        })
    };
    Ok(vec![
        compile(answer(libc::SYS_openat, libc::EACCES))?,
        compile(answer(libc::SYS_clone3, libc::ENOSYS))?,
        compile(allow_list(std::process::id()))?,
    ])
}

/// Installs the filters on every thread of the process (and so on every thread it starts
/// later). Call it once the VM is set up: from here on no file can be opened.
pub fn install() -> Result<(), Error> {
    for p in programs()? {
        seccompiler::apply_filter_all_threads(&p).map_err(|e| Error::Host {
            what: "installing the seccomp filter",
            source: io::Error::other(e),
        })?;
    }
    Ok(())
}
