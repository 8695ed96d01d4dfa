//! No code: this crate's dependencies turn on, in the Python bindings'
//! own build, the features `cargo test --workspace` turns on, so that
//! maturin reuses the workspace's compiled dependencies (docs/design.md).
//! Generated and kept by `cargo hakari generate`.
