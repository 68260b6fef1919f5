//! `sync-cli conformance` passes against the reference server on SQLite and PostgreSQL,
//! and a deliberately broken server (one that ignores idempotency keys) fails exactly
//! the idempotency checks.
#![allow(missing_docs)]

mod support;

use axum::body::Body;
use serde_json::{Value as Json, json};
use support::{Backend, Client, TestServer, project_create};
use sync_cli::conformance::{Options, Outcome, Report, run};
use uuid::Uuid;

fn model() -> sync_model::Model {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    sync_cli::load(&[root.join("examples/tasks/src/model.rs")])
        .unwrap()
        .model
}

async fn conformance(url: String, expired: Option<String>) -> Report {
    tokio::task::spawn_blocking(move || {
        run(
            &model(),
            &Options {
                base_url: url,
                token: "token-a".into(),
                token_b: Some("token-b".into()),
                expired_token: expired,
            },
        )
    })
    .await
    .unwrap()
}

/// Makes `t1.0` an expired token of account A: a tombstone is collected.
async fn expire_early_tokens(s: &TestServer) -> String {
    let c = Client::new(&s.url, "token-a");
    let p = Uuid::now_v7();
    c.push(vec![project_create(p, "gone")]).await;
    c.push(vec![json!({ "idempotency_key": Uuid::new_v4().to_string(), "entity_type": "project", "entity_id": p,
                        "op": "delete", "base_version": 1, "hlc": "000000000009-00000000-0000000000000001" })])
        .await;
    s.server
        .collect_garbage(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    "t1.0".into()
}

async fn passes_against(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let expired = expire_early_tokens(&s).await;
    let report = conformance(s.url.clone(), Some(expired)).await;
    println!("{report}");
    assert!(!report.failed(), "{report}");
    assert!(
        report.checks.iter().all(|(_, o)| *o == Outcome::Pass),
        "nothing skipped: {report}"
    );
    assert!(report.checks.len() >= 13);
    s.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_on_sqlite_conforms() {
    passes_against(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_on_postgres_conforms() {
    passes_against(Backend::Postgres).await;
}

/// Rewrites every mutation's idempotency key before the server sees it.
async fn forget_keys(req: axum::http::Request<Body>) -> axum::http::Request<Body> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let mut v: Json = serde_json::from_slice(&bytes).unwrap_or(Json::Null);
    if let Some(ms) = v.get_mut("mutations").and_then(Json::as_array_mut) {
        for m in ms {
            m["idempotency_key"] = json!(Uuid::new_v4().to_string());
        }
    }
    let body = if v.is_null() {
        Body::from(bytes)
    } else {
        Body::from(serde_json::to_vec(&v).unwrap())
    };
    axum::http::Request::from_parts(parts, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_idempotency_keys_fails_the_right_checks() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let broken = s
        .server
        .router()
        .layer(axum::middleware::map_request(forget_keys));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, broken).await.unwrap() });
    let report = conformance(url, None).await;
    println!("{report}");
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Fail(_)))
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "idempotency: the same key and body replays the stored result",
            "idempotency: the same key with another body is rejected with 422"
        ],
        "{report}"
    );
}
