//! Compile-time behaviour of `#[derive(Syncable)]`: every misuse is an error at the
//! offending token that says what to do; every supported form compiles.
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p sync-tests --test ui`
//! and read the diff before committing.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui/fail/*.rs");
    t.pass("ui/pass/*.rs");
}
