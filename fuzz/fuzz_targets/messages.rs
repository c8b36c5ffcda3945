//! The STREAMS message API, checked against a model of the bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| device_model::fuzzing::messages(data));
