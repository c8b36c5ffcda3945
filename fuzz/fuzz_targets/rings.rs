//! Descriptor chains and ring indices in guest memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| device_model::fuzzing::rings(data));
