//! The guest's STREAMS platform: one thread per vCPU, interrupts as ring-3 upcalls.
//!
//! * Background work (service procedures, deferred frees, callbacks) runs at *safe points*:
//!   the idle loop ([`idle_until`]) and a blocking [`Platform::wait`], never in an interrupt
//!   handler. `kick` only bumps [`GENERATION`], so a CPU about to halt sees the new work; it
//!   sends no IPI (a service call costs ~50 µs here) because the CPU that queued the work
//!   reaches a safe point of its own soon.
//! * Interrupt handlers only `put` (the core enters the perimeter or defers the message onto
//!   it, for the thread inside to drain on its way out): they never block or spin on a lock
//!   held by the code they interrupted, because the core's locks and the allocator hold
//!   upcalls off while held ([`crate::platform::critical`]).
//! * A blocking wait halts the vCPU through the stub's check-then-halt service; `wake_all`
//!   sends an IPI only to a CPU halted on that very word.
//! * `qtimeout` runs on the x2APIC timer in one-shot mode (1 tick = 1 ms).
//!
//! | part | what it holds |
//! |---|---|
//! | this file | the platform itself: safe points, the idle loop and its hooks, waits and wake-ups, timers |
//! | [`critical`] | the critical sections the STREAMS core's locks take: upcalls held off, no `cli` |
//! | [`lock`] | [`lock::IrqLock`], the driver's spin lock, on the same terms |
//! | [`heap`] | the global allocator |
//! | [`clock`] | a monotonic clock from the TSC |

pub mod clock;
pub mod critical;
pub mod heap;
pub mod lock;

use crate::cpu::percpu::cpu_index;
use crate::cpu::{irq, svc};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use guest_abi::{MAX_VCPUS, WAKE_VECTOR};
use streams::{Platform, Scheduler, Streams, StreamsConfig, Ticks};

/// Interrupt vector of the x2APIC timer that fires `qtimeout`s.
pub const TIMER_VECTOR: u8 = 0xef;
const X2APIC_LVT_TIMER: u32 = 0x832;
const X2APIC_TIMER_INITIAL: u32 = 0x838;
const X2APIC_TIMER_DIVIDE: u32 = 0x83e;
/// KVM's local APIC timer counts at 1 GHz with divide-by-1 (its default bus cycle is 1 ns).
const APIC_TIMER_DIVIDE_BY_1: u64 = 0b1011;

/// Bumped whenever work is queued or a waiter should look again; idle CPUs halt on it.
pub static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The word each CPU is halted on (its address), 0 when running.
static HALTED_ON: [AtomicUsize; MAX_VCPUS] = [const { AtomicUsize::new(0) }; MAX_VCPUS];
/// The deadline (ns) each CPU's timer is armed for, `u64::MAX` when none. Per CPU: a wake-up
/// armed on another CPU would wake the wrong one.
static ARMED: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_VCPUS];
static STREAMS: spin::Once<Streams> = spin::Once::new();

/// Counters of what the platform did (reported by the workloads).
pub struct PlatformStats {
    /// Wake-up IPIs sent by `wake_all` and [`notify`].
    pub ipis: AtomicU64,
    /// Halts in a blocking wait.
    pub wait_halts: AtomicU64,
    /// Halts in the idle loop.
    pub idle_halts: AtomicU64,
    /// Timer interrupts.
    pub timer_irqs: AtomicU64,
}

/// The platform's counters.
pub static STATS: PlatformStats = PlatformStats {
    ipis: AtomicU64::new(0),
    wait_halts: AtomicU64::new(0),
    idle_halts: AtomicU64::new(0),
    timer_irqs: AtomicU64::new(0),
};

/// The guest platform (stateless: its state is per CPU and global).
pub struct GuestPlatform;

/// Creates the guest's STREAMS instance (once, on the bootstrap processor) and installs the
/// timer handler; later calls return the same instance.
pub fn init(config: StreamsConfig) -> &'static Streams {
    STREAMS.call_once(|| {
        irq::set_handler(TIMER_VECTOR, on_timer);
        Streams::new(Arc::new(GuestPlatform), config)
    })
}

/// The guest's STREAMS instance, if [`init`] ran.
pub fn streams() -> Option<&'static Streams> {
    STREAMS.get()
}

/// Called from every timer interrupt (a driver's way to end its own timed waits).
static TIMER_HOOK: spin::Once<fn()> = spin::Once::new();

/// Sets the function every timer interrupt calls (once; it must not block).
pub fn set_timer_hook(f: fn()) {
    TIMER_HOOK.call_once(|| f);
}

/// Called by a CPU about to wait with nothing left to run: a driver's last chance to send
/// what it gathered (it must not block; what it queues runs before the CPU waits).
static IDLE_HOOK: spin::Once<fn()> = spin::Once::new();

/// Sets the function an idle CPU calls before it waits (once).
pub fn set_idle_hook(f: fn()) {
    IDLE_HOOK.call_once(|| f);
}

/// What a CPU does with devices while it polls before halting (see [`poll_briefly`]).
pub struct PollHooks {
    /// It starts polling: devices may stop interrupting for what it will find itself.
    pub start: fn(),
    /// One turn: true when it found device work (and queued it).
    pub look: fn() -> bool,
    /// It stops polling, to halt or to run what it found: devices must interrupt again.
    /// True when work turned up meanwhile (it was queued).
    pub stop: fn() -> bool,
}

static POLL_HOOKS: spin::Once<PollHooks> = spin::Once::new();

/// Sets the device side of polling (once).
pub fn set_poll_hooks(hooks: PollHooks) {
    POLL_HOOKS.call_once(|| hooks);
}

fn run_idle_hook() {
    if let Some(f) = IDLE_HOOK.get() {
        f();
    }
}

fn on_timer(_vector: u8) {
    STATS.timer_irqs.fetch_add(1, Ordering::Relaxed);
    ARMED[cpu_index()].store(u64::MAX, Ordering::SeqCst);
    // A CPU about to halt for a deadline (`idle_until_or`) must see that its time came.
    GENERATION.fetch_add(1, Ordering::SeqCst);
    if let Some(s) = streams() {
        s.run_timers();
    }
    if let Some(f) = TIMER_HOOK.get() {
        f();
    }
}

/// Makes this CPU take a timer interrupt at `at_ns` (clock time) or earlier.
pub fn wake_at(at_ns: u64) {
    arm_timer(at_ns);
}

fn wake(cpu: usize) {
    STATS.ipis.fetch_add(1, Ordering::Relaxed);
    svc::send_ipi(cpu as u32, WAKE_VECTOR);
}

/// Makes a CPU on its way to halt in [`idle_until`] go round once more, so that its idle
/// hook runs again, without waking CPUs already halted: for work the hook must see that an
/// interrupt handler did after the hook ran.
pub fn idle_again() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Bumps [`GENERATION`] and wakes every other CPU halted on it (new data at a stream head,
/// a stream became writable): what a thread waits for in [`idle_until`].
pub fn notify() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
    let me = cpu_index();
    let addr = GENERATION.as_ptr() as usize;
    for (cpu, h) in HALTED_ON.iter().enumerate() {
        if cpu != me && h.load(Ordering::SeqCst) == addr {
            wake(cpu);
        }
    }
}

/// Makes this CPU's x2APIC timer interrupt at `at_ns` (clock time) unless an earlier
/// deadline is already armed on it. One-shot; a deadline beyond ~4 s fires early and re-arms.
fn arm_timer(at_ns: u64) {
    if ARMED[cpu_index()].fetch_min(at_ns, Ordering::SeqCst) <= at_ns {
        return;
    }
    let ns = at_ns.saturating_sub(clock::now_ns());
    svc::wrmsr(X2APIC_TIMER_DIVIDE, APIC_TIMER_DIVIDE_BY_1);
    svc::wrmsr(X2APIC_LVT_TIMER, u64::from(TIMER_VECTOR));
    svc::wrmsr(X2APIC_TIMER_INITIAL, ns.clamp(1, u64::from(u32::MAX)));
}

/// Like [`idle_until`], but also returns once the clock reaches `deadline_ns` (the x2APIC
/// timer wakes the CPU). Returns whether `done()` held.
pub fn idle_until_or(deadline_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let mut ok = false;
    idle_until(|| {
        ok = done();
        if !ok && clock::now_ns() < deadline_ns {
            arm_timer(deadline_ns);
            return false;
        }
        true
    });
    ok
}

/// Runs interrupt handlers left pending and all queued STREAMS work. A safe point: call it
/// only outside every perimeter and critical section (a workload's loop, the idle loop).
pub fn run_deferred() {
    irq::run_pending();
    if let Some(s) = streams() {
        s.run_until_idle();
    }
}

/// How long an idle CPU polls before it halts (`poll_us=N` on the command line).
static POLL_NS: AtomicU64 = AtomicU64::new(u64::MAX);

/// Spins (interrupts arrive as upcalls meanwhile) until [`GENERATION`] moves past `seen`, the
/// poll hooks find device work, or the poll time is over; true if there is work. Halting and
/// being woken costs a ring-0 service and, from another CPU, an IPI: when the next event is
/// close, spinning is cheaper. Meanwhile devices may leave out the interrupts for what the
/// hooks find (an interrupt is an exit and a ring-0 entry here).
fn poll_briefly(seen: u64) -> bool {
    let mut ns = POLL_NS.load(Ordering::Relaxed);
    if ns == u64::MAX {
        ns = crate::cpu::bootinfo::arg("poll_us")
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(DEFAULT_POLL_NS, |us| us * 1000);
        POLL_NS.store(ns, Ordering::Relaxed);
    }
    if ns == 0 {
        return false;
    }
    let hooks = POLL_HOOKS.get();
    if let Some(h) = hooks {
        (h.start)();
    }
    let until = clock::now_ns() + ns;
    let mut moved = false;
    while clock::now_ns() < until {
        if GENERATION.load(Ordering::Acquire) != seen || hooks.is_some_and(|h| (h.look)()) {
            moved = true;
            break;
        }
        core::hint::spin_loop();
    }
    // Every path out re-enables the devices' interrupts: a halt must not miss one.
    hooks.is_some_and(|h| (h.stop)()) || moved
}

/// Default poll time before halting.
const DEFAULT_POLL_NS: u64 = 200_000;

/// Runs deferred work and halts this CPU until `done()` holds. `done` is re-checked after
/// every interrupt and every [`notify`] from another CPU, and never called again once it
/// returned true (so it may take what it waits for, as a read does).
pub fn idle_until(mut done: impl FnMut() -> bool) {
    let me = cpu_index();
    loop {
        run_deferred();
        if done() {
            return;
        }
        let seen = GENERATION.load(Ordering::SeqCst);
        run_idle_hook();
        if streams().is_some_and(Streams::has_queued_tasks) {
            continue;
        }
        if poll_briefly(seen) {
            continue;
        }
        HALTED_ON[me].store(GENERATION.as_ptr() as usize, Ordering::SeqCst);
        // Re-checked by the stub with interrupts off: a notify after `seen` was read changed
        // the word, one before it is covered by this `done()`.
        let finished = done();
        if !finished {
            STATS.idle_halts.fetch_add(1, Ordering::Relaxed);
            svc::wait(&GENERATION, seen);
        }
        HALTED_ON[me].store(0, Ordering::SeqCst);
        if finished {
            return; // `done` may consume what it found: it is not asked again
        }
    }
}

/// The idle loop of a CPU with nothing else to do: runs interrupts and deferred work forever.
/// It waits for its own interrupts only, so [`notify`] sends it no IPI.
pub fn idle_forever() -> ! {
    loop {
        run_deferred();
        let seen = GENERATION.load(Ordering::SeqCst);
        run_idle_hook();
        if streams().is_some_and(Streams::has_queued_tasks) {
            continue;
        }
        STATS.idle_halts.fetch_add(1, Ordering::Relaxed);
        svc::wait(&GENERATION, seen);
    }
}

impl Platform for GuestPlatform {
    fn now(&self) -> Ticks {
        clock::now_ns() / 1_000_000
    }

    fn kick(&self, _sched: &dyn Scheduler) {
        GENERATION.fetch_add(1, Ordering::SeqCst);
    }

    fn timer_deadline(&self, _sched: &dyn Scheduler, at: Option<Ticks>) {
        // No deadline: a stale timer firing later is harmless.
        if let Some(at) = at {
            arm_timer(at.saturating_mul(1_000_000));
        }
    }

    fn wait(&self, sched: &dyn Scheduler, word: &AtomicU32, expected: u32) {
        let me = cpu_index();
        assert!(
            crate::cpu::percpu::this_cpu()
                .in_upcall
                .load(Ordering::Relaxed)
                == 0,
            "a blocking STREAMS wait inside an interrupt handler or critical section"
        );
        irq::run_pending();
        if word.load(Ordering::SeqCst) != expected {
            return;
        }
        let seen = GENERATION.load(Ordering::SeqCst);
        if sched.run_one() {
            return; // the caller re-checks its condition
        }
        HALTED_ON[me].store(word.as_ptr() as usize, Ordering::SeqCst);
        STATS.wait_halts.fetch_add(1, Ordering::Relaxed);
        svc::wait2(word, expected, &GENERATION, seen);
        HALTED_ON[me].store(0, Ordering::SeqCst);
    }

    fn wake_all(&self, word: &AtomicU32) {
        let me = cpu_index();
        let addr = word.as_ptr() as usize;
        for (cpu, h) in HALTED_ON.iter().enumerate() {
            if cpu != me && h.load(Ordering::SeqCst) == addr {
                wake(cpu);
            }
        }
    }
}
