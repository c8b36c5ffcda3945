//! Building a VM from a [`VmConfig`], running it to an [`Outcome`], and tearing it down.
//!
//! Threads: one per vCPU ([`crate::vcpu`]), one event loop (event-manager) for device work that
//! arrives on eventfds, and the caller's thread, which waits for the outcome (or the timeout),
//! then stops and joins every other thread before returning.

use crate::affinity;
use crate::boot;
use crate::bus::Bus;
use crate::config::VmConfig;
use crate::control::ControlSocket;
use crate::devices::debug::{DebugPage, IrqTestRelay};
use crate::devices::serial::{SerialBackend, SerialStats};
use crate::devices::virtio_mmio::{self, Irq, VirtioMmio};
use crate::error::{Error, Outcome};
use crate::guest_kind::{CONSOLE_SLOT, Entry};
use crate::irq::MsiRouter;
use crate::linux::{self};
use crate::loader;
use crate::memory;
use crate::results::GuestResult;
use crate::signals::StopSignals;
use crate::vcpu::{self, Vcpu};
use device_model::console::{ConsoleEvents, ConsoleRuntime, ConsoleStats};
use device_model::rng::{Rng, RngEvents};
use event_manager::{EventManager, EventOps, EventSubscriber, Events, SubscriberOps};
use guest_abi::{BootParams, IRQ_TEST_VECTOR, MmioDevice, MmioKind, debug, layout};
use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE, kvm_fpu, kvm_mp_state,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{IoEventAddress, Kvm, VcpuFd, VmFd};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};
use vmm_sys_util::signal::Killable;

/// Where guest output goes.
pub struct Output {
    /// Console output (debug page and COM1).
    pub out: Box<dyn Write + Send>,
    /// Console error output (debug page's error register).
    pub err: Box<dyn Write + Send>,
    /// COM1's output with `--serial stdio`.
    pub serial: Box<dyn Write + Send>,
}

impl Output {
    /// The process's standard output and error.
    pub fn stdio() -> Self {
        Output {
            out: Box::new(io::stdout()),
            err: Box::new(io::stderr()),
            serial: Box::new(io::stdout()),
        }
    }
}

/// How a run ended, and what its console moved.
#[derive(Debug)]
pub struct RunReport {
    /// How the guest ended.
    pub outcome: Outcome,
    /// The console's final statistics (every port).
    pub console: ConsoleStats,
    /// The guest's `@result` lines, checked against the host's figures where possible.
    pub results: Vec<GuestResult>,
    /// What COM1 moved.
    pub serial: SerialStats,
}

/// How long the console may take, after the guest stopped, to hand the guest's last output to
/// its backends.
const CONSOLE_GRACE: Duration = Duration::from_secs(2);

/// Boots `config` with output to the process's stdout/stderr and runs it to its end.
pub fn run(config: &VmConfig) -> Result<RunReport, Error> {
    run_with_output(config, Output::stdio())
}

/// Boots `config`, sending guest output to `output`, and runs it to its end.
pub fn run_with_output(config: &VmConfig, output: Output) -> Result<RunReport, Error> {
    let mut phases = Phases::from_env();
    config.validate()?;
    // Before any thread starts: they all inherit the CPUs left to them.
    let pinning = match config.pin_vcpus {
        true => Some(affinity::Pinning::start(config.vcpus)?),
        false => None,
    };
    let (name, image) = loader::image_bytes(&config.kernel)?;
    let mem_size = config.memory_bytes();
    let mem = memory::guest_memory(mem_size)?;
    boot::write_entry_tables(&mem)?;
    let pvm = linux::cpuid::pvm_host();
    let entry = Entry::load(config, &mem, &name, &image, pvm)?;
    phases.mark("memory mapped, image loaded");

    let kvm = Kvm::new().map_err(Error::KvmUnavailable)?;
    let vm = create_vm(&kvm, &entry, &mem)?;
    let router = MsiRouter::new(vm.clone());
    phases.mark("VM, irqchip and memory slot created");

    let (tx, rx) = mpsc::channel();
    let mut mmio = Bus::new();
    let results = Arc::new(Mutex::new(Vec::new()));
    let page = Arc::new(DebugPage::new(
        mem.clone(),
        tx.clone(),
        output.out,
        output.err,
        results.clone(),
    ));
    mmio.insert(layout::DEBUG_BASE, layout::DEBUG_SIZE, page.clone())?;
    let mut pio = Bus::new();
    let stdin_taken = config
        .ports
        .iter()
        .any(|p| p.backend == device_model::console::backend::BackendKind::Stdio);
    let mut serial = SerialBackend::open(&config.serial, output.serial, !stdin_taken)?;
    let com1 = entry.add_legacy_ports(&mut pio, &router, tx.clone(), serial.take_output())?;
    let pairs = irq_test_pairs(&vm, &router, config.vcpus)?;
    let rng = attach_rng(&vm, &router, &mut mmio, &mem)?;
    let console = attach_console(config, &entry, &vm, &router, &mut mmio, &mem)?;
    let quit = tx.clone();
    console.runtime.handle().set_quit(Box::new(move || {
        let _ = quit.send(Outcome::Quit);
    }));
    let quit = tx.clone();
    let com1_input = serial.start(
        com1.clone(),
        Box::new(move || {
            let _ = quit.send(Outcome::Quit);
        }),
    )?;
    let control = match &config.control {
        Some(path) => {
            let c =
                ControlSocket::start(path, control_context(config, &console, &com1), tx.clone())?;
            eprintln!("perimeter: control: {}", path.display());
            Some(c)
        }
        None => None,
    };

    let metrics = match &config.metrics {
        Some(path) => {
            let context = control_context(config, &console, &com1);
            Some(crate::metrics::Metrics::start(
                path,
                config.metrics_every,
                context,
            )?)
        }
        None => None,
    };

    let mut cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    entry.adjust_cpuid(&kvm, &mut cpuid, pvm);
    let mut vcpus = Vec::new();
    for cpu in 0..config.vcpus {
        vcpus.push(create_vcpu(&vm, &cpuid, cpu, entry)?);
    }
    // Some hosts cannot report the TSC rate; the guest's clock then reads 0 kHz and says so.
    let tsc_khz = vcpus[0].get_tsc_khz().unwrap_or(0);
    page.stages.attach(console.runtime.handle(), tsc_khz);
    let params = boot_params(config, tsc_khz, rng.entry, console.entry);
    entry.write_boot_params(&mem, &params, &config.cmdline)?;
    phases.mark("devices and vCPUs created");

    vcpu::install_kick_handler().map_err(Error::host("installing the vCPU kick signal handler"))?;
    let signals =
        StopSignals::install().map_err(Error::host("installing the stop signal handlers"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let subscribers: Vec<Subscriber> = vec![
        Arc::new(IrqTestRelay { pairs }),
        Arc::new(RngEvents {
            device: rng.device,
            notify: rng.notify,
        }),
        Arc::new(ConsoleEvents {
            console: console.runtime.handle(),
            notify: console.notify,
        }),
    ];
    let events = EventLoop::start(subscribers, stop.clone())?;
    if config.seccomp {
        if let Err(e) = crate::seccomp::install() {
            shut_down(&stop, Vec::new(), events);
            return Err(e);
        }
        phases.mark("seccomp filter installed");
    }
    let buses = (Arc::new(mmio), Arc::new(pio));
    let mut threads = Vec::new();
    if let Err(e) = start_vcpus(vcpus, &buses, &tx, &stop, pinning.as_ref(), &mut threads) {
        shut_down(&stop, threads, events);
        return Err(Error::Host {
            what: "spawning a vCPU thread",
            source: e,
        });
    }
    drop(tx);

    phases.mark("threads started");
    let outcome = wait_for_outcome(&rx, &threads, config.timeout, &signals);
    phases.mark("guest ended the run");
    shut_down(&stop, threads, events);
    drop(control);
    com1_input.stop();
    if let Some(m) = metrics {
        m.finish();
    }
    phases.mark("threads joined");
    let mut stats = console.runtime.finish(CONSOLE_GRACE);
    stats.transport = console
        .transport
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .counters();
    phases.mark("console output delivered");
    drop((router, vm));
    phases.mark("VM closed");
    drop(mem);
    phases.mark("guest memory unmapped");
    let mut results = std::mem::take(&mut *results.lock().unwrap_or_else(|e| e.into_inner()));
    crate::results::check(&mut results, &stats);
    Ok(RunReport {
        outcome,
        console: stats,
        results,
        serial: com1.counters().stats(),
    })
}

/// What the control socket (and `--metrics`) answers from: the console, each port's backend
/// and path, the transport's counters and COM1's.
fn control_context(
    config: &VmConfig,
    console: &ConsoleSlot,
    com1: &crate::devices::serial::SerialPort,
) -> crate::control::Context {
    let paths = console.runtime.paths();
    let transport = console.transport.clone();
    crate::control::Context {
        console: console.runtime.handle(),
        backends: config
            .ports
            .iter()
            .map(|p| p.backend_text.clone())
            .collect(),
        paths: config
            .ports
            .iter()
            .map(|p| {
                paths
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map(|(_, path)| path.clone())
            })
            .collect(),
        complete: Box::new(move |s| {
            s.transport = transport
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .counters();
        }),
        serial: Some(com1.counters()),
    }
}

/// The VM with its irqchip, the timers the guest needs and guest memory registered.
fn create_vm(kvm: &Kvm, entry: &Entry, mem: &GuestMemoryMmap) -> Result<Arc<VmFd>, Error> {
    let vm = Arc::new(kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?);
    vm.set_tss_address(0xfffb_d000)
        .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
    entry.create_timers(&vm)?;
    register_memory(&vm, mem)?;
    Ok(vm)
}

/// The debug page's test interrupt, per vCPU: an ioeventfd on its register (datamatch the
/// CPU) and the irqfd of an MSI to that CPU, relayed by the event loop.
fn irq_test_pairs(
    vm: &VmFd,
    router: &MsiRouter,
    vcpus: u32,
) -> Result<Vec<(EventFd, EventFd)>, Error> {
    let mut pairs = Vec::new();
    for cpu in 0..vcpus {
        let irq = router.add(cpu, IRQ_TEST_VECTOR)?;
        let kick = EventFd::new(EFD_NONBLOCK).map_err(Error::host("eventfd for IRQ_TEST"))?;
        vm.register_ioevent(
            &kick,
            &IoEventAddress::Mmio(layout::DEBUG_BASE + debug::IRQ_TEST),
            cpu,
        )
        .map_err(Error::kvm("KVM_IOEVENTFD"))?;
        pairs.push((kick, irq));
    }
    Ok(pairs)
}

/// The virtio-rng every VM gets in slot 0 (it exercises the transport on every boot).
struct RngSlot {
    entry: MmioDevice,
    device: Arc<Mutex<Rng>>,
    notify: EventFd,
}

fn attach_rng(
    vm: &VmFd,
    router: &MsiRouter,
    mmio: &mut Bus,
    mem: &GuestMemoryMmap,
) -> Result<RngSlot, Error> {
    let device = Arc::new(Mutex::new(Rng::new(Box::new(
        std::fs::File::open("/dev/urandom").map_err(Error::host("opening /dev/urandom"))?,
    ))));
    let (entry, transport) = virtio_mmio::attach(
        vm,
        router,
        mmio,
        mem,
        0,
        device.clone(),
        Irq::Msi { dest: 0 },
    )?;
    let notify = transport
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .queue_events()[0]
        .try_clone()
        .map_err(Error::host("eventfd for virtio-rng"))?;
    Ok(RngSlot {
        entry,
        device,
        notify,
    })
}

/// The virtio-console in [`CONSOLE_SLOT`], its backends started (sockets listen, ptys exist).
struct ConsoleSlot {
    entry: MmioDevice,
    runtime: ConsoleRuntime,
    transport: Arc<VirtioMmio>,
    notify: Vec<EventFd>,
}

fn attach_console(
    config: &VmConfig,
    entry: &Entry,
    vm: &VmFd,
    router: &MsiRouter,
    mmio: &mut Bus,
    mem: &GuestMemoryMmap,
) -> Result<ConsoleSlot, Error> {
    let runtime = ConsoleRuntime::start(&config.ports, &config.faults)
        .map_err(|e| Error::BadInput(e.to_string()))?;
    runtime.handle().set_tx_poll(config.tx_poll);
    let (slot_entry, transport) = virtio_mmio::attach(
        vm,
        router,
        mmio,
        mem,
        CONSOLE_SLOT,
        runtime.device(),
        entry.console_irq(config),
    )?;
    let notify = transport
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .queue_events()
        .iter()
        .map(EventFd::try_clone)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::host("eventfds for virtio-console"))?;
    for (name, path) in runtime.paths() {
        eprintln!("perimeter: port {name}: {}", path.display());
    }
    Ok(ConsoleSlot {
        entry: slot_entry,
        runtime,
        transport,
        notify,
    })
}

/// What the project's guests are told about the machine.
fn boot_params(
    config: &VmConfig,
    tsc_khz: u32,
    rng: MmioDevice,
    console: MmioDevice,
) -> BootParams {
    let mut params = BootParams::new();
    params.vcpus = config.vcpus;
    params.mem_size = config.memory_bytes();
    params.tsc_khz = tsc_khz.into();
    params.cmdline_addr = layout::CMDLINE_ADDR;
    params.cmdline_len = config.cmdline.len() as u64;
    params.mmio[0] = MmioDevice {
        base: layout::DEBUG_BASE,
        size: layout::DEBUG_SIZE,
        kind: MmioKind::Debug as u32,
        vector: IRQ_TEST_VECTOR.into(),
        dest_apic: 0,
        flags: 0,
    };
    params.mmio[1] = rng;
    params.mmio[2] = console;
    params.mmio_count = 3;
    params
}

/// Starts a thread per vCPU (each on its own CPU with `pinning`) into `threads`; on failure
/// the caller stops those already started.
fn start_vcpus(
    vcpus: Vec<VcpuFd>,
    (mmio, pio): &(Arc<Bus>, Arc<Bus>),
    outcome: &mpsc::Sender<Outcome>,
    stop: &Arc<AtomicBool>,
    pinning: Option<&affinity::Pinning>,
    threads: &mut Vec<JoinHandle<()>>,
) -> io::Result<()> {
    for (index, fd) in vcpus.into_iter().enumerate() {
        let v = Vcpu {
            fd,
            index: index as u32,
            mmio: mmio.clone(),
            pio: pio.clone(),
            outcome: outcome.clone(),
            stop: stop.clone(),
        };
        let spawn = || {
            thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    // A panic here is a perimeter bug; it must still end the run, not hang it.
                    let (outcome, index) = (v.outcome.clone(), v.index);
                    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| v.run())).is_err() {
                        let why = format!("internal error: the vCPU {index} thread panicked");
                        let _ = outcome.send(Outcome::Crashed(why));
                    }
                })
        };
        let spawned = match pinning {
            Some(p) => p.on_vcpu_cpu(index, spawn).and_then(|r| r),
            None => spawn(),
        };
        threads.push(spawned?);
    }
    Ok(())
}

fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), Error> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| Error::Host {
                what: "guest memory host address",
                source: io::Error::other(e),
            })?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: the region is a live mmap of `memory_size` bytes owned by `mem`, which the
        // caller keeps alive until after the VM fd (and every vCPU thread) is gone.
        unsafe { vm.set_user_memory_region(r) }
            .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

fn create_vcpu(vm: &VmFd, cpuid: &CpuId, cpu: u32, entry: Entry) -> Result<VcpuFd, Error> {
    let fd = vm
        .create_vcpu(cpu.into())
        .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
    let mut cpuid = cpuid.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            // Initial APIC ID in leaf 1, x2APIC ID in the topology leaves.
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | (cpu << 24),
            0xb | 0x1f => e.edx = cpu,
            _ => {}
        }
    }
    fd.set_cpuid2(&cpuid)
        .map_err(Error::kvm("KVM_SET_CPUID2"))?;
    let sregs = fd.get_sregs().map_err(Error::kvm("KVM_GET_SREGS"))?;
    let (sregs, regs) = entry.entry_state(sregs, cpu);
    fd.set_sregs(&sregs).map_err(Error::kvm("KVM_SET_SREGS"))?;
    fd.set_regs(&regs).map_err(Error::kvm("KVM_SET_REGS"))?;
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    fd.set_fpu(&fpu).map_err(Error::kvm("KVM_SET_FPU"))?;
    if cpu != 0 {
        // With the in-kernel irqchip, APs wait for INIT/SIPI; ours start in long mode at once.
        fd.set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        })
        .map_err(Error::kvm("KVM_SET_MP_STATE"))?;
    }
    Ok(fd)
}

fn wait_for_outcome(
    rx: &mpsc::Receiver<Outcome>,
    threads: &[JoinHandle<()>],
    timeout: Option<Duration>,
    signals: &StopSignals,
) -> Outcome {
    let start = Instant::now();
    loop {
        if let Some(sig) = signals.received() {
            return Outcome::Signalled(sig);
        }
        let slice = match timeout {
            Some(t) => match t.checked_sub(start.elapsed()) {
                Some(left) => left.min(Duration::from_millis(100)),
                None => return Outcome::TimedOut(t),
            },
            None => Duration::from_millis(100),
        };
        match rx.recv_timeout(slice) {
            Ok(outcome) => return outcome,
            Err(RecvTimeoutError::Timeout) => {
                if threads.iter().all(|t| t.is_finished()) {
                    return rx.try_recv().unwrap_or_else(|_| {
                        Outcome::Crashed("every vCPU stopped without an exit code".into())
                    });
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Outcome::Crashed("every vCPU stopped without an exit code".into());
            }
        }
    }
}

/// How long shutting down may wait for a thread before leaving it behind (a perimeter bug: a
/// thread stuck on a lock or a blocked write); the process then exits without it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn shut_down(stop: &AtomicBool, threads: Vec<JoinHandle<()>>, events: EventLoop) {
    stop.store(true, Ordering::Release);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    for (index, t) in threads.into_iter().enumerate() {
        // A vCPU may be halted in KVM_RUN, or may re-enter it just after a kick: keep kicking.
        while !t.is_finished() && Instant::now() < deadline {
            let _ = t.kill(vcpu::kick_signal());
            thread::sleep(Duration::from_millis(1));
        }
        if !t.is_finished() {
            eprintln!("perimeter: vCPU {index} did not stop; leaving it behind");
        } else if t.join().is_err() {
            eprintln!("perimeter: the vCPU {index} thread panicked");
        }
    }
    events.stop(deadline);
}

/// The device event loop thread.
struct EventLoop {
    wake: EventFd,
    thread: Option<JoinHandle<()>>,
}

struct Wake(EventFd);

impl EventSubscriber for Wake {
    fn process(&self, _events: Events, _ops: &mut EventOps) {
        let _ = self.0.read();
    }
    fn init(&self, ops: &mut EventOps) {
        ops.add(Events::new(&self.0, EventSet::IN))
            .expect("a fresh epoll accepts an eventfd");
    }
}

type Subscriber = Arc<dyn EventSubscriber + Send + Sync>;

impl EventLoop {
    fn start(subscribers: Vec<Subscriber>, stop: Arc<AtomicBool>) -> Result<Self, Error> {
        let mut em = EventManager::<Subscriber>::new().map_err(|e| Error::Host {
            what: "creating the event loop",
            source: io::Error::other(format!("{e:?}")),
        })?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(Error::host("eventfd for the event loop"))?;
        let waker = wake
            .try_clone()
            .map_err(Error::host("eventfd for the event loop"))?;
        em.add_subscriber(Arc::new(Wake(waker)));
        for s in subscribers {
            em.add_subscriber(s);
        }
        let thread = thread::Builder::new()
            .name("event-loop".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    if let Err(e) = em.run() {
                        eprintln!("perimeter: event loop failed: {e:?}");
                        return;
                    }
                }
            })
            .map_err(Error::host("spawning the event loop thread"))?;
        Ok(EventLoop {
            wake,
            thread: Some(thread),
        })
    }

    fn stop(mut self, deadline: Instant) {
        let _ = self.wake.write(1);
        let Some(t) = self.thread.take() else { return };
        while !t.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        if !t.is_finished() {
            log::error!("the event loop did not stop; leaving it behind");
        } else if t.join().is_err() {
            log::error!("the event loop thread panicked");
        }
    }
}

/// The run's phases, logged at debug level, and printed to stderr with their timings when
/// `PERIMETER_TIMING` is set (for boot-time work).
struct Phases {
    start: Instant,
    last: Instant,
    print: bool,
}

impl Phases {
    fn from_env() -> Self {
        let now = Instant::now();
        let print = std::env::var_os("PERIMETER_TIMING").is_some();
        Phases {
            start: now,
            last: now,
            print,
        }
    }

    fn mark(&mut self, what: &str) {
        let now = Instant::now();
        let (total, step) = (now - self.start, now - self.last);
        log::debug!("{what} ({:.3} ms)", total.as_secs_f64() * 1e3);
        if self.print {
            eprintln!(
                "perimeter: {:8.3} ms  (+{:7.3})  {what}",
                total.as_secs_f64() * 1e3,
                step.as_secs_f64() * 1e3
            );
        }
        self.last = now;
    }
}
