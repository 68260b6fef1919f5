//! Workspace-level tests for syncgen. The tests live in `tests/` and `fixtures/` holds
//! the model sources shared by several of them. The `trybuild` cases of
//! `#[derive(Syncable)]` live in the `ui-tests` crate.
