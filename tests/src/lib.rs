//! Workspace-level tests for syncgen. The tests live in `tests/`; `ui/` holds the
//! `trybuild` cases of `#[derive(Syncable)]` (one file per compile error, with the
//! expected `.stderr`), and `fixtures/` the model sources shared by several tests.
