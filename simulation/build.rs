//! Generates the migrations of the upgrade simulation's three model versions
//! (`models/v1.rs`, `v2.rs`, `v3.rs`) into `OUT_DIR/upgrades`, one version after the
//! other, as `sync-cli generate` would over an app's releases.

fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("upgrades");
    // From scratch every time: each version is a diff against the one before.
    let _ = std::fs::remove_dir_all(&out);
    for version in ["v1", "v2", "v3"] {
        let model = format!("models/{version}.rs");
        println!("cargo::rerun-if-changed={model}");
        if let Err(e) = sync_cli::generate(&sync_cli::Options {
            inputs: vec![model.into()],
            out_dir: out.clone(),
            // Version 3 drops a field.
            allow_destructive: true,
            ..Default::default()
        }) {
            println!("cargo::error=model {version}: {e}");
            std::process::exit(1);
        }
    }
}
