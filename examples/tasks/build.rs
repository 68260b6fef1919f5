//! Regenerates `generated/` from `src/model.rs`, the way an app's build script would.

fn main() {
    if let Err(e) = sync_cli::Builder::new()
        .input("src/model.rs")
        .out_dir("generated")
        .generate()
    {
        panic!("\n{e}\n");
    }
}
