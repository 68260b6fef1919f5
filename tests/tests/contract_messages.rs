//! Real messages produced by the runtime and the reference server validate against the
//! published schemas of the generated OpenAPI document, including the typed per-entity
//! envelopes (records, patches, clocks).
#![allow(missing_docs)]

mod support;

use std::sync::{Arc, Mutex};

use serde_json::{Value as Json, json};
use support::model::{Comment, Project, Task};
use support::{Backend, TestServer};
use sync_runtime::engine::{EngineConfig, HttpTransport, SyncEngine, Transport, TransportError};
use sync_runtime::prelude::*;
use sync_runtime::protocol::{ChangesResponse, PushRequest, PushResponse, SnapshotResponse};

/// Records every message as JSON: (schema name, message).
struct Recording {
    inner: HttpTransport,
    log: Arc<Mutex<Vec<(&'static str, Json)>>>,
}

impl Recording {
    fn keep(&self, schema: &'static str, v: Json) {
        self.log.lock().unwrap().push((schema, v));
    }
}

impl Transport for Recording {
    async fn push(
        &self,
        token: &str,
        request: &PushRequest,
    ) -> Result<PushResponse, TransportError> {
        self.keep("PushRequest", serde_json::to_value(request).unwrap());
        let r = self.inner.push(token, request).await?;
        self.keep("PushResponse", serde_json::to_value(&r).unwrap());
        Ok(r)
    }
    async fn changes(
        &self,
        token: &str,
        since: Option<&str>,
        limit: u32,
    ) -> Result<ChangesResponse, TransportError> {
        let r = self.inner.changes(token, since, limit).await?;
        self.keep("ChangesResponse", serde_json::to_value(&r).unwrap());
        Ok(r)
    }
    async fn snapshot(
        &self,
        token: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<SnapshotResponse, TransportError> {
        let r = self.inner.snapshot(token, cursor, limit).await?;
        self.keep("SnapshotResponse", serde_json::to_value(&r).unwrap());
        Ok(r)
    }
    async fn health(&self) -> Result<(), TransportError> {
        self.inner.health().await
    }
    fn server_protocol(&self) -> Option<String> {
        self.inner.server_protocol()
    }
}

fn device(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    log: Arc<Mutex<Vec<(&'static str, Json)>>>,
) -> SyncEngine<Recording> {
    let store = tasks::store_builder(dir.join(format!("{name}.db")))
        .unwrap()
        .open()
        .unwrap();
    let inner = HttpTransport::new(url)
        .unwrap()
        .fingerprint(store.fingerprint());
    SyncEngine::new(
        store,
        Recording { inner, log },
        EngineConfig::new("account-a", "token-a"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_and_server_messages_match_the_published_schemas() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let a = device(dir.path(), "a", &s.url, log.clone());
    let b = device(dir.path(), "b", &s.url, log.clone());
    let p = Project {
        id: Uuid::now_v7(),
        name: "P".into(),
        created_at: Utc::now(),
    };
    let mut t = Task {
        id: Uuid::now_v7(),
        project_id: p.id,
        title: "t".into(),
        status: "open".into(),
        tags: ["x".to_string()].into(),
        likes: 0,
        price_cents: 1,
        due: Some(Utc::now()),
        meta: [("k".to_string(), "v".to_string())].into(),
        r#type: Some("bug".into()),
        draft: None,
    };
    a.store().create(&p).unwrap();
    a.store().create(&t).unwrap();
    a.store()
        .create(&Comment {
            id: Uuid::now_v7(),
            task_id: t.id,
            body: "hi".into(),
        })
        .unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();
    t.likes = 3;
    t.tags.insert("y".into());
    t.price_cents = 5;
    t.title = "renamed".into();
    a.store().update(&t).unwrap();
    let mut bt = b.store().get::<Task>(t.id).unwrap().unwrap();
    bt.price_cents = 7;
    b.store().update(&bt).unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap(); // a conflict result
    a.store().delete::<Task>(t.id).unwrap();
    a.sync_now().await.unwrap();
    b.sync_now().await.unwrap();

    let model = sync_cli::load(&[
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tasks/src/model.rs")
    ])
    .unwrap()
    .model;
    let doc = sync_cli::openapi::openapi(&model, "t");
    let validator = |name: &str| {
        jsonschema::validator_for(&json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": doc["components"],
            "$ref": format!("#/components/schemas/{name}")
        }))
        .unwrap()
    };
    let log = log.lock().unwrap().clone();
    let mut kinds = std::collections::BTreeSet::new();
    let mut records = 0;
    for (schema, message) in &log {
        let errors: Vec<String> = validator(schema)
            .iter_errors(message)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{schema}: {errors:?}\n{message:#}");
        kinds.insert(*schema);
        // Server records inside responses against the typed envelopes.
        let nested: Vec<&Json> = match *schema {
            "PushResponse" => message["results"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r.get("server"))
                .collect(),
            "ChangesResponse" => message["changes"].as_array().unwrap().iter().collect(),
            "SnapshotResponse" => message["records"].as_array().unwrap().iter().collect(),
            _ => Vec::new(),
        };
        for r in nested {
            let errors: Vec<String> = validator("AnyServerRecord")
                .iter_errors(r)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}\n{r:#}");
            records += 1;
        }
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(records >= 5, "{records}");
    let statuses: std::collections::BTreeSet<&str> = log
        .iter()
        .filter(|(s, _)| *s == "PushResponse")
        .flat_map(|(_, m)| {
            m["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["status"].as_str().unwrap())
        })
        .collect();
    assert!(
        statuses.contains("applied") && statuses.contains("conflict"),
        "{statuses:?}"
    );
    s.cleanup().await;
}

/// A tombstone garbage collection removed still reads as a typed server record: an empty
/// `record` (`CollectedRecord`) and an empty `server_updated_at`, as the document says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collected_tombstone_matches_the_typed_schemas() {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let c = support::Client::new(&s.url, "token-a");
    let id = Uuid::now_v7();
    c.push(vec![support::project_create(id, "p")]).await;
    let deleted = c
        .push(vec![
            json!({ "idempotency_key": "d", "entity_type": "project", "entity_id": id,
            "op": "delete", "base_version": 1 }),
        ])
        .await;
    assert_eq!(deleted[0]["status"], "applied", "{deleted:#?}");
    s.server
        .collect_garbage(Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    // An update made before the delete, arriving after the collection: the delete wins.
    let (status, response) = c
        .post(
            "/push",
            &json!({ "mutations": [{ "idempotency_key": "u", "entity_type": "project", "entity_id": id,
                "op": "update", "base_version": 1,
                "patch": { "name": { "set": "late", "hlc": "000000000001-00000000-0000000000000001" } } }] }),
        )
        .await;
    assert_eq!(status, 200);
    let server = &response["results"][0]["server"];
    assert_eq!(response["results"][0]["status"], "conflict", "{response:#}");
    assert_eq!(server["record"], json!({}));
    assert_eq!(server["server_updated_at"], "");
    let model = sync_cli::load(&[
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tasks/src/model.rs")
    ])
    .unwrap()
    .model;
    let doc = sync_cli::openapi::openapi(&model, "t");
    let validator = jsonschema::validator_for(&json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "$ref": "#/components/schemas/PushResponse"
    }))
    .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&response)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{response:#}");
    s.cleanup().await;
}
