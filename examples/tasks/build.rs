//! Regenerates `generated/` from `src/model.rs`, the way an app's build script would.

use sync_cli::api_info::{ApiContact, ApiInfo, ApiLicense, ApiServer};

fn main() {
    sync_cli::Builder::new()
        .input("src/model.rs")
        .out_dir("generated")
        .api(ApiInfo {
            title: Some("Tasks sync API".into()),
            servers: vec![ApiServer {
                url: "http://127.0.0.1:8080".into(),
                description: Some("tasks-server on its default address".into()),
            }],
            license: Some(ApiLicense {
                name: "MIT OR Apache-2.0".into(),
                identifier: Some("MIT OR Apache-2.0".into()),
                url: None,
            }),
            contact: Some(ApiContact {
                name: Some("The syncgen team".into()),
                url: Some("https://example.invalid/syncgen".into()),
                email: None,
            }),
        })
        .run();
}
