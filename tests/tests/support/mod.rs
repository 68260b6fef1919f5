//! Helpers for tests that run the reference server over real HTTP on 127.0.0.1.
#![allow(dead_code)]

pub use sync_tests::{fresh_schema, postgres_url};
pub use tasks::model;

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};
use sync_runtime::store::Migrations;
use sync_server::{Server, StaticTokens};

/// One test per backend: `both_backends!(a, b)` makes `sqlite::a`, `postgres::a`, ...,
/// each calling the `async fn a(&TestServer)` of the including file (a PostgreSQL test
/// skips with a message when `SYNC_TEST_POSTGRES_URL` is unset).
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(s) = super::support::TestServer::start(super::support::Backend::Sqlite).await {
                    super::$name(&s).await;
                    s.cleanup().await;
                }
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(s) = super::support::TestServer::start(super::support::Backend::Postgres).await {
                    super::$name(&s).await;
                    s.cleanup().await;
                }
            })*
        }
    };
}

/// Which database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server on 127.0.0.1 with its database.
pub struct TestServer {
    pub url: String,
    pub server: Server,
    pub backend: Backend,
    /// SQLite: the database file; PostgreSQL: the connection URL with the test schema.
    pub db: String,
    _dir: tempfile::TempDir,
    schema: Option<(String, String)>,
}

/// Serves `server` on a free port of 127.0.0.1 and returns its base URL.
pub async fn serve(server: &Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = server.router();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}")
}

pub fn tokens() -> StaticTokens {
    StaticTokens::new([("token-a", "account-a"), ("token-b", "account-b")])
}

pub fn sqlite_migrations() -> Migrations {
    Migrations::embedded(include!(
        "../../../examples/tasks/generated/server_sqlite_migrations.rs"
    ))
    .unwrap()
}

pub fn postgres_migrations() -> Migrations {
    Migrations::embedded(include!(
        "../../../examples/tasks/generated/server_postgres_migrations.rs"
    ))
    .unwrap()
}

pub fn builder() -> sync_server::ServerBuilder {
    Server::builder()
        .entity::<model::Project>()
        .entity::<model::Task>()
        .entity::<model::Comment>()
        .token_verifier(tokens())
}

impl TestServer {
    /// Starts a server on `backend`, or `None` (with a message) when PostgreSQL is not configured.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => {
                let path = dir.path().join("server.db");
                let server = builder()
                    .open_sqlite(&path, sqlite_migrations())
                    .await
                    .unwrap();
                let url = serve(&server).await;
                Some(TestServer {
                    url,
                    server,
                    backend,
                    db: path.display().to_string(),
                    _dir: dir,
                    schema: None,
                })
            }
            Backend::Postgres => {
                let Some(base) = postgres_url() else {
                    eprintln!("skipped: SYNC_TEST_POSTGRES_URL is not set");
                    return None;
                };
                let (url_with_schema, schema) = fresh_schema(&base).await;
                let server = builder()
                    .connect_postgres(&url_with_schema, postgres_migrations())
                    .await
                    .unwrap();
                let url = serve(&server).await;
                Some(TestServer {
                    url,
                    server,
                    backend,
                    db: url_with_schema,
                    _dir: dir,
                    schema: Some((base, schema)),
                })
            }
        }
    }

    /// A second server on the same database (another process behind a load balancer).
    pub async fn another_instance(&self) -> (Server, String) {
        let server = match self.backend {
            Backend::Sqlite => builder()
                .open_sqlite(&self.db, sqlite_migrations())
                .await
                .unwrap(),
            Backend::Postgres => builder()
                .connect_postgres(&self.db, postgres_migrations())
                .await
                .unwrap(),
        };
        let url = serve(&server).await;
        (server, url)
    }

    /// Runs SQL on the server's database (for setting up states HTTP cannot reach).
    pub async fn sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => {
                let c = rusqlite::Connection::open(&self.db).unwrap();
                c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
                c.execute_batch(sql).unwrap();
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&self.db).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
    }

    pub async fn cleanup(self) {
        if let Some((base, schema)) = &self.schema {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::PgConnection::connect(base).await {
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA \"{schema}\" CASCADE"
                )))
                .execute(&mut c)
                .await;
            }
        }
    }
}

/// A minimal protocol client for tests.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Client {
    pub fn new(url: &str, token: &str) -> Self {
        Client {
            http: reqwest::Client::new(),
            url: url.to_string(),
            token: token.to_string(),
        }
    }

    pub async fn post(&self, path: &str, body: &Json) -> (u16, Json) {
        let res = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Json::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Json) {
        let res = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Json::Null))
    }

    /// Every change of the account as a client of protocol 1.3.0 sees them (records with
    /// their dots), by record id; and the server's `sync-protocol` response header.
    pub async fn changes_as_1_3(&self) -> (BTreeMap<String, Json>, Option<String>) {
        self.changes_as("1.3.0").await
    }

    /// [`Client::changes_as_1_3`] for a client of protocol `version`.
    pub async fn changes_as(&self, version: &str) -> (BTreeMap<String, Json>, Option<String>) {
        let res = self
            .http
            .get(format!("{}/changes?limit=1000", self.url))
            .bearer_auth(&self.token)
            .header(sync_runtime::protocol::PROTOCOL_HEADER, version)
            .send()
            .await
            .unwrap();
        let protocol = res
            .headers()
            .get(sync_runtime::protocol::PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body: Json = res.json().await.unwrap();
        assert!(body["has_more"] == false, "one page: {body:#}");
        (latest(body["changes"].as_array().unwrap()), protocol)
    }

    /// The account's records by id, from one page of `GET /snapshot` as a client of
    /// protocol `version` (after garbage collection, when changes from the start are 410).
    pub async fn snapshot_as(&self, version: &str) -> BTreeMap<String, Json> {
        let body: Json = self
            .http
            .get(format!("{}/snapshot?limit=1000", self.url))
            .bearer_auth(&self.token)
            .header(sync_runtime::protocol::PROTOCOL_HEADER, version)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(body["next_cursor"].is_null(), "one page: {body:#}");
        latest(body["records"].as_array().unwrap())
    }

    /// Pushes mutations and returns the results (asserting a 200).
    pub async fn push(&self, mutations: Vec<Json>) -> Vec<Json> {
        let (status, body) = self.post("/push", &json!({ "mutations": mutations })).await;
        assert_eq!(status, 200, "{body:#}");
        body["results"].as_array().unwrap().clone()
    }

    /// Pulls every change after `since`, page by page; returns the changes and the last token.
    pub async fn pull_all(&self, since: Option<&str>, limit: u32) -> (Vec<Json>, String) {
        let mut token = since.map(str::to_string);
        let mut all = Vec::new();
        loop {
            let path = match &token {
                Some(t) => format!("/changes?since={t}&limit={limit}"),
                None => format!("/changes?limit={limit}"),
            };
            let (status, body) = self.get(&path).await;
            assert_eq!(status, 200, "{body:#}");
            all.extend(body["changes"].as_array().unwrap().iter().cloned());
            token = Some(body["next_token"].as_str().unwrap().to_string());
            if !body["has_more"].as_bool().unwrap() {
                return (all, token.unwrap());
            }
        }
    }
}

pub fn project_create(id: uuid::Uuid, name: &str) -> Json {
    json!({
        "idempotency_key": uuid::Uuid::new_v4().to_string(),
        "entity_type": "project",
        "entity_id": id,
        "op": "create",
        "base_version": null,
        "record": { "id": id, "name": name, "created_at": "2026-01-01T00:00:00Z" },
        "clocks": { "name": "000000000001-00000000-0000000000000001" }
    })
}

pub fn task_record(id: uuid::Uuid, project: uuid::Uuid) -> Json {
    json!({
        "id": id, "project_id": project, "title": "write tests", "status": "open",
        "tags": ["a"], "likes": 0, "price_cents": 100, "due": null, "meta": {}, "type": null
    })
}

pub fn task_create(id: uuid::Uuid, project: uuid::Uuid) -> Json {
    json!({
        "idempotency_key": uuid::Uuid::new_v4().to_string(),
        "entity_type": "task",
        "entity_id": id,
        "op": "create",
        "record": task_record(id, project),
        "clocks": {}
    })
}

pub fn task_update(id: uuid::Uuid, base_version: i64, patch: Json) -> Json {
    json!({
        "idempotency_key": uuid::Uuid::new_v4().to_string(),
        "entity_type": "task",
        "entity_id": id,
        "op": "update",
        "base_version": base_version,
        "patch": patch
    })
}

/// Latest record per id from a list of changes.
pub fn latest(changes: &[Json]) -> BTreeMap<String, Json> {
    changes
        .iter()
        .map(|c| (c["entity_id"].as_str().unwrap().to_string(), c.clone()))
        .collect()
}
