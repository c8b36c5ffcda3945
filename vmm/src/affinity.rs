//! `--pin-vcpus`: each vCPU thread alone on a host CPU, perimeter's other threads on the rest.
//!
//! On a small host the device's threads (the transmit poller, STREAMS workers, backends) and
//! the host peers otherwise land on a vCPU's CPU now and then, and each time one wakes there it
//! must preempt the running guest, which costs tens of µs where guest entry is slow. Pinned,
//! the vCPUs run undisturbed and the rest share the other CPUs.
//!
//! The split is taken from the CPUs this process may run on (so `taskset` chooses them): vCPU
//! `i` gets the `i`-th, the rest get the others. The thread that builds the VM is confined to
//! the rest before it starts any thread, so every thread it starts inherits that; it takes
//! vCPU `i`'s CPU only while it starts vCPU `i`'s thread, and gets its own CPUs back when the
//! run ends. Two pinned VMs on one host share the same CPUs: pin one VM per set of CPUs.

use crate::error::Error;
use std::io;

/// The CPUs the calling thread may run on, in increasing order.
pub fn allowed() -> io::Result<Vec<usize>> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel writes at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET reads bit `c` of `set`, and `c` is below the set's size in bits.
    Ok((0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}

/// Confines the calling thread (and the threads it starts from now on) to `cpus`.
pub fn set_this_thread(cpus: &[usize]) -> io::Result<()> {
    set_thread(0, cpus)
}

/// Confines thread `tid` of this process (0: the calling thread) to `cpus`.
pub fn set_thread(tid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * size_of::<libc::cpu_set_t>();
    for &c in cpus.iter().filter(|&&c| c < max) {
        // SAFETY: `c` is below the set's size in bits.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a live cpu_set_t of the size passed; the call only reads it.
    let r = unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which CPUs the vCPUs get and which the rest of the threads share.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// vCPU `i`'s CPU.
    pub vcpus: Vec<usize>,
    /// Every other thread's.
    pub rest: Vec<usize>,
}

impl Split {
    /// Splits `allowed` for `vcpus` vCPUs: refused unless at least one CPU is left over.
    pub fn of(allowed: &[usize], vcpus: u32) -> Result<Split, Error> {
        let n = vcpus as usize;
        if allowed.len() <= n {
            return Err(Error::BadInput(format!(
                "--pin-vcpus: {vcpus} vCPU(s) need {} CPUs, one each and one for the rest, \
                 and this process may run on {} ({})",
                n + 1,
                allowed.len(),
                list(allowed)
            )));
        }
        Ok(Split {
            vcpus: allowed[..n].to_vec(),
            rest: allowed[n..].to_vec(),
        })
    }

    /// The split of the CPUs this process may run on.
    pub fn for_this_process(vcpus: u32) -> Result<Split, Error> {
        let allowed = allowed().map_err(Error::host("reading the CPU affinity"))?;
        Split::of(&allowed, vcpus)
    }
}

/// `0,1,5`: a list `taskset -c` takes.
fn list(cpus: &[usize]) -> String {
    cpus.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs of a pinned run's other threads, while it runs.
static REST: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());

/// Moves the calling thread to the CPUs of a pinned run's other threads (nothing when no run
/// is pinned). For threads that a vCPU thread may start, which would otherwise inherit the
/// vCPU's CPU: the STREAMS workers and timer (through their start hook), the stage clock.
pub fn leave_vcpu_cpus() {
    let rest = REST.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !rest.is_empty() {
        let _ = set_this_thread(&rest);
    }
}

/// A VM's pinning while it runs: the building thread is on the rest until this is dropped.
pub struct Pinning {
    split: Split,
    original: Vec<usize>,
}

impl Pinning {
    /// Confines the calling thread to the split's rest (the threads it starts inherit it).
    pub fn start(vcpus: u32) -> Result<Pinning, Error> {
        let original = allowed().map_err(Error::host("reading the CPU affinity"))?;
        let split = Split::of(&original, vcpus)?;
        set_this_thread(&split.rest).map_err(Error::host("setting the CPU affinity"))?;
        *REST.lock().unwrap_or_else(|e| e.into_inner()) = split.rest.clone();
        streams::set_thread_start(Some(leave_vcpu_cpus));
        Ok(Pinning { split, original })
    }

    /// Runs `start_thread` on vCPU `index`'s CPU, so that the thread it starts has that CPU
    /// alone; back on the rest afterwards.
    pub fn on_vcpu_cpu<T>(&self, index: usize, start_thread: impl FnOnce() -> T) -> io::Result<T> {
        set_this_thread(&self.split.vcpus[index..=index])?;
        let t = start_thread();
        set_this_thread(&self.split.rest)?;
        Ok(t)
    }
}

impl Drop for Pinning {
    fn drop(&mut self) {
        streams::set_thread_start(None);
        REST.lock().unwrap_or_else(|e| e.into_inner()).clear();
        // The seccomp filter allows this call for the calling thread.
        let _ = set_this_thread(&self.original);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vcpu_gets_a_cpu_and_the_rest_share_what_is_left() {
        let s = Split::of(&[2, 3, 5, 7], 2).unwrap();
        assert_eq!(s.vcpus, [2, 3]);
        assert_eq!(s.rest, [5, 7]);
    }

    #[test]
    fn too_few_cpus_are_refused_in_one_line() {
        for (allowed, vcpus) in [(&[0, 1][..], 2), (&[4][..], 1)] {
            let e = Split::of(allowed, vcpus).unwrap_err().to_string();
            assert!(e.starts_with("--pin-vcpus:"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_thread_confined_to_one_cpu_runs_there_and_threads_it_starts_inherit_it() {
        let all = allowed().unwrap();
        let cpu = *all.last().unwrap();
        std::thread::spawn(move || {
            set_this_thread(&[cpu]).unwrap();
            assert_eq!(allowed().unwrap(), [cpu]);
            let child = std::thread::spawn(|| allowed().unwrap()).join().unwrap();
            assert_eq!(child, [cpu]);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_a_vcpu_thread_starts_leaves_the_vcpus_cpu() {
        let all = allowed().unwrap();
        if all.len() < 2 {
            eprintln!("SKIPPED: this test may use only one CPU");
            return;
        }
        let (vcpu, rest) = (all[0], all[1..].to_vec());
        *REST.lock().unwrap() = rest.clone();
        let got = std::thread::spawn(move || {
            set_this_thread(&[vcpu]).unwrap();
            std::thread::spawn(|| {
                leave_vcpu_cpus();
                allowed().unwrap()
            })
            .join()
            .unwrap()
        })
        .join()
        .unwrap();
        REST.lock().unwrap().clear();
        assert_eq!(got, rest);
    }
}
