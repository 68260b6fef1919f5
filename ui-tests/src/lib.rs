//! Compile-time tests of `#[derive(Syncable)]`; see `tests/ui.rs`.
