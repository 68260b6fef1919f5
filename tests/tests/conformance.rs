//! `sync-cli conformance` passes against the reference server on SQLite and PostgreSQL,
//! and each server broken on purpose (the reference server behind a proxy that breaks
//! one rule of `PROTOCOL.md`) fails exactly the checks citing that rule, while servers
//! that are strict in ways the protocol allows still pass every check.
#![allow(missing_docs)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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
                trace: false,
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
        report.checks.iter().all(|c| c.outcome == Outcome::Pass),
        "nothing skipped: {report}"
    );
    assert!(report.checks.len() >= 40);
    spec_and_checks_agree(&report);
    s.cleanup().await;
}

/// Every rule a check cites is in `PROTOCOL.md`, and the rules no check covers are
/// exactly those listed here (with why), so a new rule needs a check or a reason.
fn spec_and_checks_agree(report: &Report) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = std::fs::read_to_string(root.join("PROTOCOL.md")).unwrap();
    let rules: std::collections::BTreeSet<String> = spec
        .lines()
        .filter_map(|l| l.strip_prefix("- **"))
        .filter_map(|l| l.split_once("**").map(|(id, _)| id.to_string()))
        .filter(|id| {
            id.split_once('-').is_some_and(|(a, n)| {
                a.chars().all(|c| c.is_ascii_uppercase()) && n.chars().all(|c| c.is_ascii_digit())
            })
        })
        .collect();
    let cited: std::collections::BTreeSet<String> =
        report.checks.iter().map(|c| c.rule.clone()).collect();
    let unknown: Vec<&String> = cited.difference(&rules).collect();
    assert!(
        unknown.is_empty(),
        "checks cite rules PROTOCOL.md lacks: {unknown:?}"
    );
    let unchecked: Vec<&str> = rules.difference(&cited).map(String::as_str).collect();
    assert_eq!(
        unchecked,
        [
            // The order of results and independence of mutations run through every check.
            "CREATE-4", // needs garbage collection, which only the operator can run
            "DELETE-3", // collected tombstones need garbage collection too
            "GC-1",     // the same
            "IDEM-3",   // needs two requests racing for one key
            "IDEM-4",   // needs the retention window to pass
            "IDEM-5",   // needs a server upgrade between a push and its retry
            "IDEM-6",   // not yet in the checker: tests/tests/server.rs checks the reference server
            "MODEL-2",  // needs a server with an earlier model: tests/tests/server_compat.rs
            "MODEL-3",  // the same
            "PUSH-4",   // needs a stamp the server bounds: the checker sends plausible ones
            "UPDATE-1", // covered through LWW, SUM, UNION and MANUAL cases on stale bases
        ],
        "rules with no check; add a check or the reason here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_on_sqlite_conforms() {
    passes_against(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_server_on_postgres_conforms() {
    passes_against(Backend::Postgres).await;
}

/// How a proxy breaks the reference server (or, for the two `Strict…` ones, narrows
/// what it accepts in ways the protocol allows).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Broken {
    /// New idempotency keys on every mutation (and bodies re-serialised, which merges
    /// repeated members).
    ForgetsKeys,
    /// Every `lww` operation stamped with the proxy's clock: the last arrival wins.
    LastArrivalWins,
    /// A `union` update replaces the set with its additions.
    UnionReplaces,
    /// Deleted records vanish from the feed and snapshots.
    NoTombstones,
    /// Snapshot records lack their `clocks`.
    MissingMembers,
    /// Change pages carry a member the document does not list.
    ExtraMembers,
    /// Record fields the model does not have are dropped instead of refused.
    DropsUnknownFields,
    /// Only `Bearer` with a capital B is taken.
    SchemeCaseSensitive,
    /// Every update is taken as based on the current version.
    IgnoresBaseVersion,
    /// A page of changes that has more loses its last change.
    LosesPageEnds,
    /// Push results spell `server_updated_at` without the fraction.
    TwoSpellings,
    /// The model fingerprint is never looked at.
    IgnoresFingerprint,
    /// Account B's token reads and writes account A.
    SharedAccounts,
    /// An expired token reads as an empty page.
    NeverExpires,
    /// Dots are dropped from pushes (a server that counts every delivery of a key it
    /// does not know).
    IgnoresDots,
    /// A dot's `prev` is dropped from pushes (a server of 1.3.1 that says it speaks
    /// 1.3.2: a lost contribution sent again after a later one is taken for counted).
    IgnoresGaps,
    /// Records never carry `life_since` (a server of 1.3.2 that says it speaks 1.3.3: a
    /// device takes a recreate for a restore and sends the earlier life's changes again).
    ForgetsLives,
    /// `transaction` is dropped from pushes (a server of 1.3.3 that says it speaks
    /// 1.4.0: a transaction is applied in part).
    IgnoresTransactions,
    /// Allowed: a create must carry a clock for every `lww` field.
    StrictClocksOnCreate,
    /// Allowed: stamps more than one second in the future are refused.
    StrictFutureBound,
}

struct Proxy {
    broken: Broken,
    clock: sync_runtime::hlc::HlcClock,
    /// The last server record seen of each id.
    seen: Mutex<HashMap<String, Json>>,
}

fn problem(status: u16, slug: &str) -> Response {
    let body = json!({ "type": format!("https://example.invalid/{slug}"), "title": slug, "status": status });
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/problem+json")],
        body.to_string(),
    )
        .into_response()
}

fn lww_fields(entity: &str) -> Vec<String> {
    model()
        .entities
        .iter()
        .filter(|e| e.name == entity)
        .flat_map(|e| e.synced_fields())
        .filter(|f| f.merge == sync_model::MergeStrategy::Lww && !f.id && !f.immutable)
        .map(|f| f.name.clone())
        .collect()
}

fn field_names(entity: &str) -> Vec<String> {
    model()
        .entities
        .iter()
        .filter(|e| e.name == entity)
        .flat_map(|e| e.synced_fields())
        .map(|f| f.name.clone())
        .collect()
}

impl Proxy {
    /// Rewrites a push body; whether it changed. `Err` refuses the push with 422 and
    /// that problem slug.
    fn push_request(&self, v: &mut Json) -> Result<bool, &'static str> {
        let Some(ms) = v.get_mut("mutations").and_then(Json::as_array_mut) else {
            return Ok(false);
        };
        let mut changed = false;
        let seen = self.seen.lock().unwrap();
        for m in ms {
            let id = m["entity_id"].as_str().unwrap_or_default().to_string();
            let entity = m["entity_type"].as_str().unwrap_or_default().to_string();
            match self.broken {
                Broken::ForgetsKeys => {
                    m["idempotency_key"] = json!(Uuid::new_v4().to_string());
                    changed = true;
                }
                Broken::IgnoresDots => {
                    changed |= m.as_object_mut().and_then(|o| o.remove("dot")).is_some();
                }
                Broken::IgnoresTransactions => {
                    changed |= m
                        .as_object_mut()
                        .and_then(|o| o.remove("transaction"))
                        .is_some();
                }
                Broken::IgnoresGaps => {
                    changed |= m
                        .get_mut("dot")
                        .and_then(Json::as_object_mut)
                        .and_then(|o| o.remove("prev"))
                        .is_some();
                }
                Broken::LastArrivalWins => {
                    for op in m["patch"]
                        .as_object_mut()
                        .into_iter()
                        .flatten()
                        .map(|(_, op)| op)
                    {
                        if op.get("hlc").is_some() {
                            op["hlc"] = json!(self.clock.now().to_string());
                            changed = true;
                        }
                    }
                }
                Broken::UnionReplaces => {
                    for (field, op) in m["patch"].as_object_mut().into_iter().flatten() {
                        let Some(add) = op.get("add").and_then(Json::as_array).cloned() else {
                            continue;
                        };
                        let held = seen
                            .get(&id)
                            .and_then(|r| r["record"][field.as_str()].as_array().cloned())
                            .unwrap_or_default();
                        let remove: Vec<Json> =
                            held.into_iter().filter(|x| !add.contains(x)).collect();
                        op["remove"] = json!(remove);
                        changed = true;
                    }
                }
                Broken::DropsUnknownFields if m["op"] == "create" => {
                    let known = field_names(&entity);
                    if let Some(r) = m["record"].as_object_mut() {
                        let before = r.len();
                        r.retain(|k, _| known.contains(k));
                        changed |= r.len() != before;
                    }
                }
                Broken::IgnoresBaseVersion if m["op"] == "update" => {
                    if let Some(v) = seen.get(&id).map(|r| r["version"].clone()) {
                        m["base_version"] = v;
                        changed = true;
                    }
                }
                Broken::StrictClocksOnCreate
                    if m["op"] == "create"
                        && lww_fields(&entity)
                            .iter()
                            .any(|f| m["clocks"].get(f).is_none()) =>
                {
                    return Err("clock-missing");
                }
                Broken::StrictFutureBound => {
                    let limit = chrono::Utc::now().timestamp_millis() as u64 + 1_000;
                    let mut stamps: Vec<&Json> = vec![&m["hlc"]];
                    stamps.extend(
                        m["clocks"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(_, s)| s),
                    );
                    stamps.extend(
                        m["patch"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(_, op)| &op["hlc"]),
                    );
                    let future = stamps.iter().filter_map(|s| s.as_str()).any(|s| {
                        s.parse::<sync_runtime::hlc::Hlc>()
                            .is_ok_and(|h| h.millis > limit)
                    });
                    if future {
                        return Err("stamp-from-the-future");
                    }
                }
                _ => {}
            }
        }
        Ok(changed)
    }

    /// Rewrites a response body; whether it changed.
    fn response(&self, path: &str, v: &mut Json) -> bool {
        {
            let mut seen = self.seen.lock().unwrap();
            let records = v["results"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| &r["server"])
                .chain(v["changes"].as_array().into_iter().flatten())
                .chain(v["records"].as_array().into_iter().flatten());
            for r in records {
                if let Some(id) = r["entity_id"].as_str() {
                    seen.insert(id.to_string(), r.clone());
                }
            }
        }
        match (self.broken, path) {
            (Broken::NoTombstones, "/changes" | "/snapshot") => {
                for list in ["changes", "records"] {
                    if let Some(a) = v.get_mut(list).and_then(Json::as_array_mut) {
                        a.retain(|r| r["deleted"] != true);
                    }
                }
                true
            }
            (Broken::ForgetsLives, _) => {
                let mut changed = false;
                let mut forget = |r: &mut Json| {
                    changed |= r
                        .as_object_mut()
                        .and_then(|o| o.remove("life_since"))
                        .is_some();
                };
                let results = v.get_mut("results").and_then(Json::as_array_mut);
                for r in results.into_iter().flatten() {
                    if let Some(server) = r.get_mut("server") {
                        forget(server);
                    }
                }
                for list in ["changes", "records"] {
                    for r in v
                        .get_mut(list)
                        .and_then(Json::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        forget(r);
                    }
                }
                changed
            }
            (Broken::MissingMembers, "/snapshot") => {
                for r in v["records"].as_array_mut().into_iter().flatten() {
                    r.as_object_mut().unwrap().remove("clocks");
                }
                true
            }
            (Broken::ExtraMembers, "/changes") => {
                v["server_time"] = json!("now");
                true
            }
            (Broken::LosesPageEnds, "/changes") if v["has_more"] == true => {
                v["changes"].as_array_mut().unwrap().pop();
                true
            }
            (Broken::TwoSpellings, "/push") => {
                for r in v["results"].as_array_mut().into_iter().flatten() {
                    if let Some(t) = r["server"]["server_updated_at"].as_str()
                        && let Some((whole, _)) = t.split_once('.')
                    {
                        r["server"]["server_updated_at"] = json!(format!("{whole}Z"));
                    }
                }
                true
            }
            _ => false,
        }
    }
}

async fn proxy(State(p): State<Arc<Proxy>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match p.broken {
        Broken::SchemeCaseSensitive if !auth.is_empty() && !auth.starts_with("Bearer ") => {
            return problem(401, "unauthorized");
        }
        Broken::SharedAccounts if auth.ends_with("token-b") => {
            parts
                .headers
                .insert("authorization", "Bearer token-a".parse().unwrap());
        }
        Broken::IgnoresFingerprint => {
            parts.headers.remove("sync-model-fingerprint");
        }
        _ => {}
    }
    let mut bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    if path == "/push"
        && let Ok(mut v) = serde_json::from_slice::<Json>(&bytes)
    {
        match p.push_request(&mut v) {
            Err(slug) => return problem(422, slug),
            Ok(true) => {
                bytes = serde_json::to_vec(&v).unwrap().into();
                parts.headers.remove("content-length");
            }
            Ok(false) => {}
        }
    }
    let since = parts.uri.query().unwrap_or_default().to_string();
    let res = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if p.broken == Broken::NeverExpires && path == "/changes" && res.status() == 410 {
        let token = url_param(&since, "since");
        return axum::Json(json!({ "changes": [], "next_token": token, "has_more": false }))
            .into_response();
    }
    let (mut rparts, rbody) = res.into_parts();
    let mut out = axum::body::to_bytes(rbody, usize::MAX).await.unwrap();
    if let Ok(mut v) = serde_json::from_slice::<Json>(&out)
        && p.response(&path, &mut v)
    {
        out = serde_json::to_vec(&v).unwrap().into();
        rparts.headers.remove("content-length");
    }
    Response::from_parts(rparts, Body::from(out))
}

fn url_param(query: &str, name: &str) -> String {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default()
}

/// Runs the checker against the reference server on SQLite behind `broken`.
async fn check_broken(broken: Broken) -> Report {
    let s = TestServer::start(Backend::Sqlite).await.unwrap();
    let expired = expire_early_tokens(&s).await;
    let state = Arc::new(Proxy {
        broken,
        clock: sync_runtime::hlc::HlcClock::new(sync_runtime::hlc::NodeId::random()),
        seen: Mutex::new(HashMap::new()),
    });
    let app = s
        .server
        .router()
        .layer(axum::middleware::from_fn_with_state(state, proxy));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let report = conformance(url, Some(expired)).await;
    println!("{broken:?}:\n{report}");
    report
}

/// Each broken server fails the checks of the rules it breaks (sorted), and only those;
/// the strict ones pass everything, nothing skipped.
macro_rules! broken_servers {
    ($($name:ident: $broken:ident => [$($rule:literal),*];)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let report = check_broken(Broken::$broken).await;
            let expected: Vec<&str> = vec![$($rule),*];
            assert_eq!(report.failed_rules(), expected, "{report}");
            assert!(
                report.checks.iter().all(|c| !matches!(c.outcome, Outcome::Skip(_))),
                "nothing skipped: {report}"
            );
        }
    )*};
}

broken_servers! {
    // Re-serialising the body also merges repeated members, which WIRE-1 catches, and
    // results no longer carry the keys the client sent (PUSH-1).
    forgets_idempotency_keys: ForgetsKeys => ["IDEM-1", "IDEM-2", "PUSH-1", "WIRE-1"];
    last_arrival_wins: LastArrivalWins => ["LWW-1", "LWW-2"];
    union_replaces_the_set: UnionReplaces => ["UNION-1"];
    keeps_no_tombstones: NoTombstones => ["DELETE-1"];
    responses_lack_members: MissingMembers => ["WIRE-5"];
    responses_carry_extra_members: ExtraMembers => ["WIRE-5"];
    drops_unknown_fields: DropsUnknownFields => ["WIRE-2"];
    scheme_is_case_sensitive: SchemeCaseSensitive => ["AUTH-1"];
    ignores_base_version: IgnoresBaseVersion => ["LWW-1", "LWW-2", "MANUAL-1", "PUSH-2"];
    loses_page_ends: LosesPageEnds => ["FEED-1"];
    two_timestamp_spellings: TwoSpellings => ["WIRE-6"];
    ignores_the_fingerprint: IgnoresFingerprint => ["MODEL-1"];
    shares_accounts: SharedAccounts => ["AUTH-2"];
    never_expires_tokens: NeverExpires => ["FEED-2"];
    ignores_dots: IgnoresDots => ["SUM-2", "SUM-3"];
    ignores_gaps: IgnoresGaps => ["SUM-3"];
    forgets_lives: ForgetsLives => ["SUM-4"];
    ignores_transactions: IgnoresTransactions => ["TXN-1"];
    strict_clocks_on_create_conform: StrictClocksOnCreate => [];
    strict_future_bound_conforms: StrictFutureBound => [];
}
