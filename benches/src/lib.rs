//! Criterion benchmarks of perimeter live in `benches/benches/`; this library is empty.
#![deny(missing_docs)]
