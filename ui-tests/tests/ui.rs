//! Compile-time behaviour of `#[derive(Syncable)]`: every misuse is an error at the
//! offending token that says what to do; every supported form compiles.
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p sync-ui-tests --test ui`
//! and read the diff before committing. The fixtures see `sync-runtime` without its
//! default features (no SQLite store, no engine): what the derive needs, and a tenth of
//! the build trybuild makes for them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/fail/*.rs");
    t.pass("tests/pass/*.rs");
}
