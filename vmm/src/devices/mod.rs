//! Devices of the VM that are not virtio devices: the debug page, COM1 (`serial/`), the stage
//! registers.

pub mod debug;
pub mod serial;
pub mod stages;
pub mod virtio_mmio;

/// A `Write` that collects into a shared buffer, for device tests.
#[cfg(test)]
pub(crate) mod test_sink {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    /// Everything written, shared with the test.
    #[derive(Clone, Default)]
    pub(crate) struct Sink(pub(crate) Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
