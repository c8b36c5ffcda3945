//! The CPL0 stub: the only code that runs at ring 0.
//!
//! On PVM hosts every ring-0 instruction is emulated (~0.6 µs each, no SSE), so this is a few
//! hundred SSE-free instructions and no loops: the IDT and the GDT are built at link time, `.bss`
//! is not cleared (the VMM hands over zeroed memory) and the stacks are static. It
//!
//! * enters on every vCPU at `_start` in 64-bit mode (`rdi` = boot parameters, `rsi` = CPU index;
//!   under QEMU the PVH entry in [`crate::cpu::pvh`] gets there first, with `rdi` = its start info),
//!   fills in that CPU's TSS and TSS descriptor, loads GDT/TSS/IDT, turns on the x2APIC with every
//!   LVT masked, points GS at the CPU's [`PerCpu`](crate::cpu::percpu::PerCpu) and `iretq`s into
//!   [`rust_entry`](crate::rust_entry) at ring 3 on the CPU's own user stack;
//! * for an interrupt (vector ≥ 32): marks the vector pending in the CPU's `PerCpu`, sends the
//!   EOI, and when ring 3 was interrupted and no upcall is running, rewrites the return frame so
//!   ring 3 resumes in `irq_upcall_entry`, which calls [`crate::cpu::irq::upcall`] and then returns to
//!   the interrupted instruction (its return address sits below the 128-byte red zone);
//! * for `ud2` executed at ring 3: runs the privileged service numbered by `rax` (see
//!   [`crate::cpu::svc`]), returns its result in `rax` and skips the `ud2`;
//! * for any other exception: saves a [`FaultFrame`](guest_abi::debug::FaultFrame) and writes
//!   its address to the debug page's FAULT register, which stops the VM.
//!
//! Stacks per CPU (`cpu_stacks`, 112 KiB each): user 64 KiB, then RSP0, IST1 (interrupts) and
//! IST2 (exceptions) at 16 KiB each. Every entry to ring 0 switches stacks, so ring 3's red zone
//! is never overwritten.

use crate::cpu::percpu::{PERCPU, PERCPU_IN_UPCALL, PERCPU_INDEX, PERCPU_PENDING, PERCPU_SIZE};
use guest_abi::{MAX_VCPUS, debug, layout};

/// Bytes of stack per CPU, and where each stack tops out within that area.
const STACK_AREA: usize = 0x1c000;
const USTACK_TOP: usize = 0x10000;
const RSP0_TOP: usize = 0x14000;
const IST1_TOP: usize = 0x18000;
const IST2_TOP: usize = 0x1c000;

/// GDT selectors. The user segments are ordered for `sysret` conventions (data, then code).
const KERNEL_CS: u16 = 0x08;
const USER_DS: u16 = 0x18 | 3;
const USER_CS: u16 = 0x20 | 3;
/// Byte offset of CPU 0's 16-byte TSS descriptor in the GDT.
const TSS_DESC0: usize = 0x28;

/// Service numbers (`rax` at `ud2`); see [`crate::cpu::svc`].
pub const SVC_WRMSR: u64 = 0;
pub const SVC_RDMSR: u64 = 1;
pub const SVC_OUTB: u64 = 2;
pub const SVC_OUTL: u64 = 3;
pub const SVC_INB: u64 = 4;
pub const SVC_WAIT: u64 = 5;
pub const SVC_NOP: u64 = 6;
pub const SVC_WAIT2: u64 = 7;
pub const SVC_OUTSB: u64 = 8;
const SVC_COUNT: u64 = 9;
/// The eight bytes at a service call: `ud2` then `nop dword ptr [rax + 0x5653]` ("SV"). A bare
/// `ud2` (say, from `core::intrinsics::abort`) is reported as a #UD fault instead.
pub const SVC_SIGNATURE: u64 = 0x0056_5380_1f0f_0b0f;

core::arch::global_asm!(
    r#"
.section .text.boot, "ax"
.code64
.global _start
_start:
    cli
    cld
    mov r12, rdi
    mov r13, rsi

    /* rbx = this CPU's stack area, rcx = its TSS (128 bytes apart). */
    imul rbx, r13, {stack_area}
    lea rax, [rip + cpu_stacks]
    add rbx, rax
    mov rcx, r13
    shl rcx, 7
    lea rax, [rip + tss_array]
    add rcx, rax
    lea rsp, [rbx + {rsp0_top}]
    lea rax, [rbx + {rsp0_top}]
    mov [rcx + 4], rax
    lea rax, [rbx + {ist1_top}]
    mov [rcx + 36], rax
    lea rax, [rbx + {ist2_top}]
    mov [rcx + 44], rax
    mov word ptr [rcx + 102], 104

    /* The TSS descriptor: limit 0x67, base split over four fields, type 9 (available). */
    mov rdx, r13
    shl rdx, 4
    lea rax, [rip + gdt]
    lea rdx, [rax + rdx + {tss_desc0}]
    mov word ptr [rdx], 0x67
    mov [rdx + 2], cx
    mov rax, rcx
    shr rax, 16
    mov [rdx + 4], al
    mov byte ptr [rdx + 5], 0x89
    mov [rdx + 7], ah
    shr rax, 16
    mov [rdx + 8], eax

    lgdt [rip + gdt_ptr]
    mov rax, r13
    shl rax, 4
    add eax, {tss_desc0}
    ltr ax
    lidt [rip + idt_ptr]

    /* Null data segments: GS's base is set below and must survive the iretq to ring 3. */
    xor eax, eax
    mov ds, ax
    mov es, ax
    mov fs, ax
    mov gs, ax

    /* GS base = &PERCPU[cpu]. */
    imul rax, r13, {percpu_size}
    lea rdx, [rip + {percpu}]
    add rax, rdx
    mov rdx, rax
    shr rdx, 32
    mov ecx, 0xc0000101
    wrmsr
    mov gs:[{index}], r13

    /* x2APIC on; spurious vector 0xff; timer, LINT0, LINT1 and error LVTs masked. */
    mov ecx, 0x1b
    rdmsr
    or eax, 0xc00
    wrmsr
    xor edx, edx
    mov ecx, 0x80f
    mov eax, 0x1ff
    wrmsr
    mov eax, 0x10000
    mov ecx, 0x832
    wrmsr
    mov ecx, 0x835
    wrmsr
    mov ecx, 0x836
    wrmsr
    mov ecx, 0x837
    wrmsr

    /* iretq to rust_entry(boot_params, cpu) at ring 3, RSP = 8 mod 16, IF = 1. */
    lea rax, [rbx + {ustack_top} - 8]
    push {user_ds}
    push rax
    push 0x202
    push {user_cs}
    lea rax, [rip + {rust_entry}]
    push rax
    mov rdi, r12
    mov rsi, r13
    xor ebx, ebx
    iretq

/* Interrupt and exception stubs: [rsp] = vector, [rsp+8] = error code, then the CPU's frame. */
.altmacro
.macro isr_stub n
isr_\n:
    .ifeq (\n == 8) + (\n == 10) + (\n == 11) + (\n == 12) + (\n == 13) + (\n == 14) + (\n == 17) + (\n == 21) + (\n == 29) + (\n == 30)
    push 0
    .endif
    push \n
    jmp isr_common
.endm
.set vec, 0
.rept 256
    isr_stub %vec
    .set vec, vec + 1
.endr
.noaltmacro

isr_common:
    cmp qword ptr [rsp], 32
    jb exception

    /* Interrupt: pending bit, EOI, maybe an upcall. Frame: vec +24, RIP +40, CS +48, RSP +64. */
    push rax
    push rcx
    push rdx
    mov rax, [rsp + 24]
    lock bts qword ptr gs:[{pending}], rax
    mov ecx, 0x80b
    xor eax, eax
    xor edx, edx
    wrmsr
    test byte ptr [rsp + 48], 3
    jz 2f
    cmp qword ptr gs:[{in_upcall}], 0
    jne 2f
    mov qword ptr gs:[{in_upcall}], 1
    mov rax, [rsp + 64]
    sub rax, 136
    mov rcx, [rsp + 40]
    mov [rax], rcx
    mov [rsp + 64], rax
    lea rcx, [rip + irq_upcall_entry]
    mov [rsp + 40], rcx
2:
    pop rdx
    pop rcx
    pop rax
    add rsp, 16
    iretq

exception:
    /* A ud2 + signature at ring 3 is a service call: vec +0, err +8, RIP +16, CS +24. */
    cmp qword ptr [rsp], 6
    jne fault
    test byte ptr [rsp + 24], 3
    jz fault
    push rcx
    push rdx
    mov rcx, [rsp + 32]
    mov rdx, {svc_signature}
    cmp [rcx], rdx
    pop rdx
    pop rcx
    jne fault
    add qword ptr [rsp + 16], 2
    push rcx
    push rdx
    cmp rax, {svc_count}
    jae svc_bad
    lea rcx, [rip + svc_table]
    jmp qword ptr [rcx + rax * 8]
svc_wrmsr:
    mov ecx, edi
    mov eax, esi
    mov rdx, rsi
    shr rdx, 32
    wrmsr
    xor eax, eax
    jmp svc_done
svc_rdmsr:
    mov ecx, edi
    rdmsr
    shl rdx, 32
    or rax, rdx
    jmp svc_done
svc_outb:
    mov edx, edi
    mov eax, esi
    out dx, al
    xor eax, eax
    jmp svc_done
svc_outl:
    mov edx, edi
    mov eax, esi
    out dx, eax
    xor eax, eax
    jmp svc_done
svc_inb:
    mov edx, edi
    xor eax, eax
    in al, dx
    jmp svc_done
svc_wait:
    /* Halt only while [rdi] == rsi, checked with interrupts off: no lost wake-up. */
    xor eax, eax
    cmp [rdi], rsi
    jne svc_done
    sti
    hlt
    cli
    jmp svc_done
svc_wait2:
    /* Halt only while dword [rdi] == esi and qword [rdx] == r8 (interrupts off). */
    xor eax, eax
    cmp [rdi], esi
    jne svc_done
    cmp [rdx], r8
    jne svc_done
    sti
    hlt
    cli
    jmp svc_done
svc_outsb:
    /* rep outsb: dx = port (rdi), rsi = buffer, rcx = length (rdx); rsi is restored. */
    push rsi
    mov rcx, rdx
    mov edx, edi
    rep outsb
    pop rsi
    xor eax, eax
    jmp svc_done
svc_nop:
    xor eax, eax
    jmp svc_done
svc_bad:
    mov rax, -1
svc_done:
    pop rdx
    pop rcx
    add rsp, 16
    iretq

fault:
    /* Prepend CR2: [rsp] becomes a FaultFrame; report it and stop. */
    push rax
    mov rax, cr2
    mov [rsp], rax
    mov eax, {fault_reg}
    mov [rax], rsp
3:
    hlt
    jmp 3b

.section .text
/* Ring 3. [rsp] = interrupted RIP; above it the interrupted code's 128-byte red zone. */
.global irq_upcall_entry
irq_upcall_entry:
    pushfq
    push rax
    push rcx
    push rdx
    push rsi
    push rdi
    push r8
    push r9
    push r10
    push r11
    push rbp
    mov rbp, rsp
    and rsp, -64
    sub rsp, 512
    fxsave64 [rsp]
    cld
    call {upcall}
    fxrstor64 [rsp]
    mov rsp, rbp
    pop rbp
    pop r11
    pop r10
    pop r9
    pop r8
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rax
    popfq
    ret 128

.section .rodata
.balign 8
svc_table:
    .quad svc_wrmsr, svc_rdmsr, svc_outb, svc_outl, svc_inb, svc_wait, svc_nop, svc_wait2
    .quad svc_outsb

.section .data
.balign 16
gdt:
    .quad 0
    .quad 0x00af9b000000ffff
    .quad 0x00cf93000000ffff
    .quad 0x00cff3000000ffff
    .quad 0x00affb000000ffff
    .skip 16 * {max_cpus}
gdt_end:
.balign 8
    .short 0, 0, 0
.global gdt_ptr
gdt_ptr:
    .short gdt_end - gdt - 1
    .quad gdt

/* 256 interrupt gates: offset = stub - 0x100000 (stubs lie below 0x110000), selector 0x08,
   IST 2 for exceptions and 1 for interrupts, type 0x8e. */
.macro idt_gate n
    .short isr_\n - 0x100000
    .short 0x08
    .ifge \n - 32
    .byte 1
    .else
    .byte 2
    .endif
    .byte 0x8e
    .short 0x0010
    .long 0, 0
.endm
.balign 16
idt:
.altmacro
.set vec, 0
.rept 256
    idt_gate %vec
    .set vec, vec + 1
.endr
.noaltmacro
idt_end:
.balign 8
    .short 0, 0, 0
idt_ptr:
    .short idt_end - idt - 1
    .quad idt

.section .bss
.balign 128
tss_array:
    .skip 128 * {max_cpus}
.balign 4096
cpu_stacks:
    .skip {stack_area} * {max_cpus}
"#,
    stack_area = const STACK_AREA,
    rsp0_top = const RSP0_TOP,
    ist1_top = const IST1_TOP,
    ist2_top = const IST2_TOP,
    ustack_top = const USTACK_TOP,
    tss_desc0 = const TSS_DESC0,
    percpu_size = const PERCPU_SIZE,
    percpu = sym PERCPU,
    pending = const PERCPU_PENDING,
    in_upcall = const PERCPU_IN_UPCALL,
    index = const PERCPU_INDEX,
    user_ds = const USER_DS,
    user_cs = const USER_CS,
    rust_entry = sym crate::rust_entry,
    upcall = sym crate::cpu::irq::upcall,
    svc_count = const SVC_COUNT,
    svc_signature = const SVC_SIGNATURE,
    fault_reg = const (layout::DEBUG_BASE + debug::FAULT),
    max_cpus = const MAX_VCPUS,
);

/// Keeps the selector constant in use for readers: the IDT gates name it literally (0x08).
const _: () = assert!(KERNEL_CS == 0x08);
