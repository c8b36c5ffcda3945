//! The `vd-echo` workload: the crates.io `virtio-drivers` console driver (single port, written
//! by others) echoes bytes through port 0, to prove that perimeter's device interoperates with a
//! driver we did not write. Our own STREAMS driver replaces it for everything else.
//!
//! The driver polls its rings: it sends one buffer at a time and waits for the device to use it,
//! and keeps one page-sized receive buffer posted.

use crate::cpu::bootinfo;
use crate::platform::clock;
use crate::println;
use alloc::alloc::{Layout, alloc_zeroed, dealloc};
use alloc::vec;
use core::ptr::NonNull;
use guest_abi::MmioKind;
use virtio_drivers::device::console::VirtIOConsole;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// virtio-drivers' view of guest memory: identity-mapped, so physical = virtual, and DMA
/// buffers are ordinary heap pages.
struct IdentityHal;

fn pages(n: usize) -> Layout {
    Layout::from_size_align(n.max(1) * PAGE_SIZE, PAGE_SIZE).expect("a page-aligned layout")
}

// SAFETY: memory is identity-mapped at ring 3 and coherent with the VMM's view of it, so the
// address of a live allocation is its physical address; `dma_alloc` returns zeroed pages that
// stay allocated until `dma_dealloc`.
unsafe impl Hal for IdentityHal {
    fn dma_alloc(n: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(pages(n)) };
        let p = NonNull::new(p).expect("out of memory for virtqueue DMA");
        (p.as_ptr() as PhysAddr, p)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, n: usize) -> i32 {
        // SAFETY: `vaddr` came from `dma_alloc(n)`, whose layout `pages(n)` is.
        unsafe { dealloc(vaddr.as_ptr(), pages(n)) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO is not at address 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Echoes `total` bytes received on port 0 back to the host, then reports and exits 0.
pub fn echo(total: u64) -> ! {
    let dev = bootinfo::params()
        .devices()
        .iter()
        .find(|d| {
            d.kind == MmioKind::VirtioMmio as u32 && crate::cpu::mmio::read_u32(d.base + 8) == 3
        })
        .unwrap_or_else(|| panic!("vd-echo: no virtio-console device"));
    let header = NonNull::new(dev.base as *mut VirtIOHeader).expect("a non-zero MMIO base");
    // SAFETY: `dev` is a virtio-mmio transport the VMM described: `size` bytes of registers
    // at `base`, identity-mapped, used by nothing else in this guest.
    let transport = unsafe { MmioTransport::new(header, dev.size as usize) }
        .unwrap_or_else(|e| panic!("vd-echo: virtio-mmio transport: {e}"));
    let mut con = VirtIOConsole::<IdentityHal, _>::new(transport)
        .unwrap_or_else(|e| panic!("vd-echo: virtio-drivers console: {e}"));
    let size = con.size().ok().flatten();
    println!(
        "vd-echo: virtio-drivers console ready ({}), echoing {total} bytes",
        size.map_or(alloc::string::String::from("no size"), |s| alloc::format!(
            "{s}"
        ))
    );
    let t0 = clock::now_ns();
    let mut buf = vec![0u8; PAGE_SIZE];
    let (mut moved, mut sends) = (0u64, 0u64);
    while moved < total {
        let mut n = 0;
        while n < buf.len() && moved + (n as u64) < total {
            match con.recv(true) {
                Ok(Some(b)) => {
                    buf[n] = b;
                    n += 1;
                }
                Ok(None) => break,
                Err(e) => panic!("vd-echo: receive: {e}"),
            }
        }
        if n == 0 {
            core::hint::spin_loop();
            continue;
        }
        con.send_bytes(&buf[..n])
            .unwrap_or_else(|e| panic!("vd-echo: send: {e}"));
        moved += n as u64;
        sends += 1;
    }
    let ms = (clock::now_ns() - t0) / 1_000_000;
    println!("vd-echo: {moved} bytes echoed in {sends} sends, {ms} ms");
    crate::exit(0)
}
