//! The packed virtqueue (device side) under a hostile driver.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| device_model::fuzzing::packed(data));
