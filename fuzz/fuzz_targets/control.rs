//! Control-queue messages from the guest, with host-side port events.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| device_model::fuzzing::control(data));
