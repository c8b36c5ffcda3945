//! MMIO register sequences against the transport and the console device.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| device_model::fuzzing::mmio(data));
