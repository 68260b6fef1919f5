//! `sync-cli conformance`: checks a running server of a model against the protocol's
//! rules (`PROTOCOL.md` at the repository's root), citing each rule's identifier.
//!
//! Each check prints one line, `PASS`, `FAIL` (with the expected and the actual value) or
//! `SKIP` (with why), tagged with the rule it checks (`[LWW-1]`), and the command exits
//! non-zero if any check failed. Every response is also validated against the schemas of
//! the OpenAPI document generated from the same model ([`crate::openapi::openapi`]);
//! the `WIRE-5` check reports what did not match.
//!
//! The checker behaves as a real client does: it sends the model's fingerprint, clocks
//! for every `lww` field, stamps from a hybrid logical clock at the current time, and
//! treats change tokens and snapshot cursors as opaque (it only sends back what the server
//! gave). **Run it with a test account**: it creates records with fresh ids in the
//! token's account (about 70) and deletes them at the end, which leaves their tombstones.
//! With [`Options::trace`] every request and response is printed to standard error.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::{Map, Value as Json, json};
use sync_model::{Entity, Field, MergeStrategy, Model, ScalarType, TypeKind};
use sync_runtime::hlc::{Hlc, HlcClock, NodeId};
use sync_runtime::protocol::{MAX_IDEMPOTENCY_KEY_CHARS, MAX_PUSH_MUTATIONS};
use sync_runtime::protocol::{changes_target, entity_snapshot_target, snapshot_target};
use uuid::Uuid;

/// What to check, and where.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub base_url: String,
    /// A bearer token of account A: a test account (see the module docs).
    pub token: String,
    /// A bearer token of another account, for the isolation check (`AUTH-2`).
    pub token_b: Option<String>,
    /// A change token the server has expired, for the 410 check (`FEED-2`).
    pub expired_token: Option<String>,
    /// Print every request and response to standard error.
    pub trace: bool,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It held.
    Pass,
    /// It did not: what was expected and what came.
    Fail(String),
    /// It could not run here, and why.
    Skip(String),
}

/// One check: the rule of `PROTOCOL.md` it checks, what it checks, and how it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The rule's identifier in `PROTOCOL.md` (`LWW-1`).
    pub rule: String,
    /// What the check sends and expects, in a few words.
    pub name: String,
    /// How it went.
    pub outcome: Outcome,
}

/// Every check's outcome, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks
            .iter()
            .any(|c| matches!(c.outcome, Outcome::Fail(_)))
    }

    /// The rules of the checks that failed, each once, sorted.
    pub fn failed_rules(&self) -> Vec<String> {
        let rules: BTreeSet<&String> = self
            .checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Fail(_)))
            .map(|c| &c.rule)
            .collect();
        rules.into_iter().cloned().collect()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            match &c.outcome {
                Outcome::Pass => writeln!(f, "PASS [{}] {}", c.rule, c.name)?,
                Outcome::Fail(why) => writeln!(f, "FAIL [{}] {}: {why}", c.rule, c.name)?,
                Outcome::Skip(why) => writeln!(f, "SKIP [{}] {}: {why}", c.rule, c.name)?,
            }
        }
        let count = |p: fn(&Outcome) -> bool| self.checks.iter().filter(|c| p(&c.outcome)).count();
        write!(
            f,
            "{} passed, {} failed, {} skipped (rules: PROTOCOL.md)",
            count(|o| *o == Outcome::Pass),
            count(|o| matches!(o, Outcome::Fail(_))),
            count(|o| matches!(o, Outcome::Skip(_)))
        )
    }
}

/// A response: status, content type, body as JSON (`Null` if not JSON) and headers.
struct Response {
    status: u16,
    ctype: String,
    body: Json,
    www_authenticate: Option<String>,
}

/// The schemas a response must match, from the document of the model.
struct Schemas {
    push: jsonschema::Validator,
    changes: jsonschema::Validator,
    snapshot: jsonschema::Validator,
    health: jsonschema::Validator,
    problem: jsonschema::Validator,
}

impl Schemas {
    fn new(model: &Model) -> Self {
        let doc = crate::openapi::openapi(model, crate::api_info::DEFAULT_TITLE);
        let validator = |schema: Json| {
            let root = json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "components": doc["components"],
                "allOf": [schema]
            });
            jsonschema::validator_for(&root).expect("the generated schemas compile")
        };
        let named =
            |name: &str| validator(json!({ "$ref": format!("#/components/schemas/{name}") }));
        Schemas {
            push: named("PushResponse"),
            changes: named("ChangesResponse"),
            snapshot: named("SnapshotResponse"),
            health: validator(
                doc["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]
                    ["schema"]
                    .clone(),
            ),
            problem: named("Problem"),
        }
    }
}

struct Client {
    http: reqwest::blocking::Client,
    base: String,
    fingerprint: String,
    trace: bool,
    schemas: Schemas,
    /// Responses that did not match the document (`WIRE-5`), with how many there were.
    violations: RefCell<(usize, Vec<String>)>,
}

/// A request body: JSON, or text sent as is (for bodies JSON values cannot hold).
enum Body<'a> {
    Json(&'a Json),
    Raw(&'a str),
}

impl Client {
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Body>,
    ) -> Result<Response, String> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("sync-model-fingerprint", &self.fingerprint)
            // As a client of this protocol: responses carry what it added (dots, a
            // snapshot's estimate), and their members are checked against the document.
            .header(
                sync_runtime::protocol::PROTOCOL_HEADER,
                sync_runtime::protocol::PROTOCOL_VERSION,
            );
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        let sent = match body {
            Some(Body::Json(b)) => b.to_string(),
            Some(Body::Raw(b)) => b.to_string(),
            None => String::new(),
        };
        if !sent.is_empty() {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(sent.clone());
        }
        let res = req
            .send()
            .map_err(|e| format!("{method} {path}: request failed: {e}"))?;
        let status = res.status().as_u16();
        let header = |name: reqwest::header::HeaderName| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let ctype = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
        let www_authenticate = header(reqwest::header::WWW_AUTHENTICATE);
        let text = res.text().unwrap_or_default();
        if self.trace {
            eprintln!("> {method} {path}");
            if !sent.is_empty() {
                eprintln!("> {sent}");
            }
            eprintln!("< {status} {ctype}\n< {text}\n");
        }
        let body: Json = serde_json::from_str(&text).unwrap_or(Json::Null);
        self.validate(&method, path, status, &ctype, &body, &text);
        Ok(Response {
            status,
            ctype,
            body,
            www_authenticate,
        })
    }

    /// Checks a response against the document (`WIRE-5`), noting what does not match.
    fn validate(
        &self,
        method: &reqwest::Method,
        path: &str,
        status: u16,
        ctype: &str,
        body: &Json,
        text: &str,
    ) {
        let route = path.split('?').next().unwrap_or(path);
        let validator = match (status, route) {
            (200, "/push") if *method == reqwest::Method::POST => &self.schemas.push,
            (200, "/changes") => &self.schemas.changes,
            (200, "/snapshot") => &self.schemas.snapshot,
            (200, "/health") => &self.schemas.health,
            (s, _) if s >= 400 => {
                if !ctype.starts_with("application/problem+json") {
                    self.violation(format!(
                        "{method} {route} answered {status} with content type `{ctype}`, expected application/problem+json"
                    ));
                }
                &self.schemas.problem
            }
            _ => return,
        };
        if body.is_null() && !text.trim().eq("null") {
            self.violation(format!(
                "{method} {route} answered {status} with a body that is not JSON: {}",
                excerpt(text)
            ));
            return;
        }
        if let Some(e) = validator.iter_errors(body).next() {
            self.violation(format!(
                "{method} {route} answered {status}: at `{}`: {}",
                e.instance_path(),
                excerpt(&e.to_string())
            ));
        }
    }

    fn violation(&self, what: String) {
        let mut v = self.violations.borrow_mut();
        v.0 += 1;
        if v.1.len() < 5 {
            v.1.push(what);
        }
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    /// `POST /push`; its results, or why the push was not answered 200.
    fn push(&self, token: &str, mutations: Vec<Json>) -> Result<Vec<Json>, String> {
        let body = json!({ "mutations": mutations });
        let r = self.call(
            reqwest::Method::POST,
            "/push",
            Some(&Self::bearer(token)),
            Some(Body::Json(&body)),
        )?;
        if r.status != 200 {
            return Err(format!("POST /push answered {}: {}", r.status, r.body));
        }
        r.body["results"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("POST /push: no `results` in {}", r.body))
    }

    /// One mutation's result.
    fn push_one(&self, token: &str, mutation: Json) -> Result<Json, String> {
        let mut r = self.push(token, vec![mutation])?;
        if r.len() != 1 {
            return Err(format!("one mutation, {} results", r.len()));
        }
        Ok(r.remove(0))
    }

    fn get(&self, token: &str, path: &str) -> Result<Json, String> {
        let r = self.call(reqwest::Method::GET, path, Some(&Self::bearer(token)), None)?;
        if r.status != 200 {
            return Err(format!("GET {path} answered {}: {}", r.status, r.body));
        }
        Ok(r.body)
    }

    /// Every change after `since`, page by page, and the token after the last page.
    fn pull(&self, token: &str, since: &str, limit: u32) -> Result<(Vec<Json>, String), String> {
        let mut since = since.to_string();
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let body = self.get(token, &changes_target(Some(&since), limit))?;
            all.extend(body["changes"].as_array().cloned().unwrap_or_default());
            since = body["next_token"]
                .as_str()
                .ok_or("GET /changes: no `next_token`")?
                .to_string();
            if body["has_more"] != true {
                return Ok((all, since));
            }
        }
        Err("GET /changes: `has_more` never became false".into())
    }

    /// Every record of the token's account, from all pages of `GET /snapshot`.
    fn records(&self, token: &str) -> Result<Vec<Json>, String> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let page = self.get(token, &snapshot_target(cursor.as_deref(), 500))?;
            out.extend(page["records"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
        Err("GET /snapshot: `next_cursor` never ended".into())
    }

    /// The server's record of `id` now, from a snapshot.
    fn record_of(&self, token: &str, id: Uuid) -> Result<Json, String> {
        self.records(token)?
            .into_iter()
            .find(|r| r["entity_id"] == json!(id))
            .ok_or_else(|| format!("record {id} is not in GET /snapshot"))
    }

    /// The current end of the change feed: a snapshot's token, then every change after
    /// it (tokens stay opaque: only what the server gave is sent back).
    fn head(&self, token: &str) -> Result<String, String> {
        let body = self.get(token, &snapshot_target(None, 1))?;
        let (_, end) = self.pull(
            token,
            body["token"].as_str().ok_or("GET /snapshot: no `token`")?,
            1000,
        )?;
        Ok(end)
    }
}

fn excerpt(text: &str) -> String {
    let mut s: String = text.chars().take(200).collect();
    if s.len() < text.len() {
        s.push('…');
    }
    s
}

/// Candidate values for a field, tried in order until the server accepts a record.
fn sample(f: &Field, variant: usize) -> Json {
    if f.ty.nullable && matches!(f.ty.kind, TypeKind::Json { .. }) {
        return Json::Null;
    }
    if let Some(d) = crate::vectors::default_value(f) {
        return d;
    }
    let scalar = |s: ScalarType| match s {
        ScalarType::Bool => json!(true),
        ScalarType::F32 | ScalarType::F64 => json!(1.5),
        s if s.is_integer() => json!(1),
        ScalarType::Uuid => json!(Uuid::now_v7()),
        ScalarType::Timestamp => json!("2026-01-01T00:00:00.000000Z"),
        ScalarType::Bytes => json!([1, 2, 3]),
        _ => json!("conformance"),
    };
    match &f.ty.kind {
        TypeKind::Scalar { scalar: s } => scalar(*s),
        TypeKind::Set { item, .. } => json!([scalar(*item)]),
        TypeKind::Json { .. } => [
            json!({}),
            json!([]),
            json!(""),
            json!(0),
            json!(false),
            json!(null),
        ][variant.min(5)]
        .clone(),
    }
}

fn new_key() -> String {
    Uuid::new_v4().to_string()
}

/// The mutations a real client sends, stamped by one hybrid logical clock.
struct Writer {
    clock: HlcClock,
}

impl Writer {
    fn new() -> Self {
        Writer {
            clock: HlcClock::new(NodeId::random()),
        }
    }

    fn now(&self) -> Hlc {
        self.clock.now()
    }

    /// A stamp `ms` milliseconds before now, on this clock's node.
    fn earlier(&self, ms: u64) -> Hlc {
        let now = self.clock.now();
        Hlc::new(now.millis.saturating_sub(ms), 0, now.node)
    }

    fn record(e: &Entity, id: Uuid, variant: usize) -> Map<String, Json> {
        e.synced_fields()
            .map(|f| {
                let v = if f.id { json!(id) } else { sample(f, variant) };
                (f.name.clone(), v)
            })
            .collect()
    }

    /// A create with a clock for every `lww` field, as the client's store sends it.
    fn create(&self, e: &Entity, id: Uuid, variant: usize) -> Json {
        let stamp = self.now().to_string();
        let clocks: Map<String, Json> = e
            .synced_fields()
            .filter(|f| f.merge == MergeStrategy::Lww && !f.id && !f.immutable)
            .map(|f| (f.name.clone(), json!(stamp)))
            .collect();
        json!({
            "idempotency_key": new_key(),
            "entity_type": e.name,
            "entity_id": id,
            "op": "create",
            "record": Self::record(e, id, variant),
            "clocks": clocks
        })
    }

    fn update(e: &Entity, id: Uuid, base_version: i64, patch: Json) -> Json {
        json!({
            "idempotency_key": new_key(),
            "entity_type": e.name,
            "entity_id": id,
            "op": "update",
            "base_version": base_version,
            "patch": patch
        })
    }

    fn delete(&self, e: &Entity, id: Uuid, base_version: i64) -> Json {
        json!({
            "idempotency_key": new_key(),
            "entity_type": e.name,
            "entity_id": id,
            "op": "delete",
            "base_version": base_version,
            "hlc": self.now().to_string()
        })
    }
}

/// A value of `f`'s type other than `current` (`n` picks among several), for scalar
/// types whose values a check can compare; `None` for others.
fn other_value(f: &Field, current: &Json, n: i64) -> Option<Json> {
    Some(match &f.ty.kind {
        TypeKind::Scalar {
            scalar: ScalarType::String,
        } => json!(format!("conformance edit {n}")),
        TypeKind::Scalar {
            scalar: ScalarType::Bool,
        } if n % 2 == 1 => json!(!current.as_bool().unwrap_or(false)),
        TypeKind::Scalar { scalar } if scalar.is_integer() => {
            json!(current.as_i64().unwrap_or(0).wrapping_add(1 + n) % 100)
        }
        TypeKind::Scalar {
            scalar: ScalarType::F32 | ScalarType::F64,
        } => json!(current.as_f64().unwrap_or(0.0) + 1.0 + n as f64),
        _ => return None,
    })
}

/// Whether `f` has `n` values other than `current`, all different (for checks that set
/// several).
fn has_values(f: &Field, current: &Json, n: i64) -> bool {
    let mut seen = vec![current.clone()];
    for k in 1..=n {
        match other_value(f, current, k) {
            Some(v) if !seen.contains(&v) => seen.push(v),
            _ => return false,
        }
    }
    true
}

fn is_string(f: &Field) -> bool {
    matches!(
        f.ty.kind,
        TypeKind::Scalar {
            scalar: ScalarType::String
        }
    )
}

/// A record a check created: its entity, id, the sample variant the server accepted and
/// the server's answer.
struct Created<'m> {
    entity: &'m Entity,
    id: Uuid,
    variant: usize,
    server: Json,
}

/// What the checks share.
struct Ctx<'m> {
    c: Client,
    w: Writer,
    opts: &'m Options,
    model: &'m Model,
    /// One record of each entity, made by the first check.
    created: Vec<Created<'m>>,
    /// Every record any check created, for the clean-up: (entity, id).
    made: RefCell<Vec<(&'m Entity, Uuid)>>,
}

/// A check's outcome, or why it could not talk to the server (a failure).
type Checked = Result<Outcome, String>;

fn pass_if(ok: bool, why: impl FnOnce() -> String) -> Outcome {
    if ok {
        Outcome::Pass
    } else {
        Outcome::Fail(why())
    }
}

fn expect_eq(what: &str, expected: &Json, actual: &Json) -> Outcome {
    pass_if(expected == actual, || {
        format!("{what}: expected {expected}, got {actual}")
    })
}

const NOTHING_CREATED: &str = "no record could be created (see CREATE-1)";

impl<'m> Ctx<'m> {
    fn token(&self) -> &str {
        &self.opts.token
    }

    /// Creates a fresh record of the first entity that could be created, for a check
    /// that needs one of its own: its entity, id and server record.
    fn fresh(&self) -> Result<Option<(&'m Entity, Uuid, Json)>, String> {
        let Some(first) = self.created.first() else {
            return Ok(None);
        };
        self.fresh_of(first.entity, first.variant).map(Some)
    }

    fn fresh_of(&self, e: &'m Entity, variant: usize) -> Result<(&'m Entity, Uuid, Json), String> {
        let id = Uuid::now_v7();
        let r = self
            .c
            .push_one(self.token(), self.w.create(e, id, variant))?;
        self.made.borrow_mut().push((e, id));
        if r["status"] != "applied" {
            return Err(format!(
                "creating a `{}`: expected applied, got {r}",
                e.name
            ));
        }
        Ok((e, id, r["server"].clone()))
    }

    /// A created record with a field of `strategy` a check can edit: a fresh record of
    /// its entity, and the field.
    fn target(
        &self,
        strategy: MergeStrategy,
        usable: impl Fn(&Field, &Json) -> bool,
    ) -> Result<Option<(&'m Entity, Uuid, Json, &'m Field)>, String> {
        for cr in &self.created {
            let field = cr.entity.synced_fields().find(|f| {
                !f.id
                    && !f.immutable
                    && f.merge == strategy
                    && usable(f, &cr.server["record"][&f.name])
            });
            if let Some(f) = field {
                let (e, id, server) = self.fresh_of(cr.entity, cr.variant)?;
                return Ok(Some((e, id, server, f)));
            }
        }
        Ok(None)
    }
}

/// Runs every check against the server, then deletes the records it created.
///
/// Blocking: it talks to the server with `reqwest`'s blocking client, so from async code
/// call it on a blocking thread (`tokio::task::spawn_blocking`), never inside a runtime's
/// worker. A server's answers never make it panic: what cannot be read is a failed check.
pub fn run(model: &Model, opts: &Options) -> Report {
    let mut cx = Ctx {
        c: Client {
            http: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            base: opts.base_url.trim_end_matches('/').to_string(),
            fingerprint: sync_model::fingerprint(model).0,
            trace: opts.trace,
            schemas: Schemas::new(model),
            violations: RefCell::new((0, Vec::new())),
        },
        w: Writer::new(),
        opts,
        model,
        created: Vec::new(),
        made: RefCell::new(Vec::new()),
    };
    let mut report = Report::default();
    let mut record = |rule: &str, name: &str, checked: Checked| {
        report.checks.push(Check {
            rule: rule.to_string(),
            name: name.to_string(),
            outcome: checked.unwrap_or_else(Outcome::Fail),
        });
    };
    record(
        "HEALTH-1",
        "GET /health answers ok without a token",
        health(&cx),
    );
    record(
        "AUTH-1",
        "a request without a token is 401 problem+json with WWW-Authenticate",
        no_token(&cx),
    );
    record(
        "AUTH-1",
        "the bearer scheme is case-insensitive",
        scheme_case(&cx),
    );
    let created = create_one_of_each(&mut cx);
    record(
        "CREATE-1",
        "a create of a new id of every entity is applied as sent",
        created,
    );
    type CheckFn = for<'a, 'm> fn(&'a Ctx<'m>) -> Checked;
    let checks: &[(&str, &str, CheckFn)] = &[
        (
            "CREATE-2",
            "a create of a live record is a conflict carrying the stored record",
            create_over_live,
        ),
        (
            "LWW-1",
            "an lww edit based on the current version sets the value",
            lww_current,
        ),
        (
            "LWW-1",
            "of two lww edits from one base, the later stamp wins whatever the arrival order",
            lww_later_stamp_wins,
        ),
        (
            "LWW-2",
            "an lww tie (equal stamps) goes to the greater value",
            lww_tie,
        ),
        ("SUM-1", "two sum deltas from one base both count", sum_adds),
        (
            "SUM-2",
            "a sum delta whose dot the record holds is not added again",
            sum_dots,
        ),
        (
            "SUM-3",
            "a dot whose `prev` is above what the record holds leaves a gap; a delta inside it counts once",
            sum_gaps,
        ),
        (
            "SUM-4",
            "a create over a tombstone begins a life: the record carries `life_since`, its version",
            recreate_life,
        ),
        (
            "UNION-1",
            "union edits add and remove items and never replace the set",
            union_items,
        ),
        (
            "MANUAL-1",
            "two manual edits from one base: the second is a conflict naming the field",
            manual_conflict,
        ),
        (
            "PUSH-3",
            "an empty patch is a check: applied, no new version",
            empty_patch,
        ),
        (
            "DELETE-1",
            "a delete applies as a tombstone, and the feed carries it",
            delete_tombstone,
        ),
        (
            "UPDATE-2",
            "an update of a tombstone is a conflict carrying it",
            update_tombstone,
        ),
        (
            "DELETE-2",
            "a delete of a tombstone is applied without a new version",
            delete_again,
        ),
        (
            "UPDATE-2",
            "an update of an id never created is rejected unknown-record",
            update_unknown,
        ),
        (
            "IDEM-1",
            "the same key and body replays the stored result",
            idempotent_replay,
        ),
        (
            "IDEM-2",
            "the same key with another body is rejected 422 alone",
            key_reused_with_another_body,
        ),
        (
            "WIRE-1",
            "a member name repeated in the body refuses the push (422 pointer), nothing applied",
            repeated_member,
        ),
        (
            "WIRE-1",
            "idempotency keys outside 1 to 255 characters refuse the push",
            key_lengths,
        ),
        (
            "WIRE-2",
            "a record with an unknown field is rejected alone; the rest of the push applies",
            unknown_field,
        ),
        (
            "TXN-1",
            "the mutations of one transaction apply all or none",
            transactions,
        ),
        (
            "WIRE-3",
            "a string holding U+0000 is rejected alone",
            nul_string,
        ),
        (
            "PUSH-1",
            "results come one per mutation, in order, each mutation on its own",
            results_in_order,
        ),
        (
            "WIRE-4",
            "limit outside 1 to 1000 and unknown query parameters are 400",
            query_bounds,
        ),
        (
            "WIRE-4",
            "more than 500 mutations in a push is 413, nothing applied",
            too_many,
        ),
        (
            "WIRE-6",
            "a record reads the same in a push result and in the feed",
            same_spelling,
        ),
        (
            "MODEL-1",
            "an unknown model fingerprint is 426",
            unknown_fingerprint,
        ),
        (
            "FEED-1",
            "paging through changes loses and repeats nothing",
            pagination,
        ),
        (
            "SNAP-1",
            "snapshot pages then changes since the last page's token miss nothing",
            snapshot_then_changes,
        ),
        (
            "SNAP-2",
            "a snapshot of one entity holds its records and no other",
            entity_snapshot,
        ),
        (
            "SNAP-3",
            "a snapshot's first page estimates its size; later pages do not",
            snapshot_estimate,
        ),
        ("FEED-2", "an expired change token is 410", expired_token),
        (
            "AUTH-2",
            "another account sees and changes nothing of this one",
            isolation,
        ),
    ];
    for (rule, name, check) in checks {
        record(rule, name, check(&cx));
    }
    let vectors = crate::vectors::vectors(model);
    for case in vectors["cases"].as_array().into_iter().flatten() {
        record(
            case["rule"].as_str().unwrap_or_default(),
            &format!("vector: {}", case["id"].as_str().unwrap_or_default()),
            run_case(&cx, case),
        );
    }
    clean_up(&cx);
    let (count, examples) = cx.c.violations.borrow().clone();
    record(
        "WIRE-5",
        "every response matches the document's schemas",
        Ok(pass_if(count == 0, || {
            format!("{count} response(s) did not: {}", examples.join("; "))
        })),
    );
    report
}

/// Deletes every record the checks created (their tombstones stay).
fn clean_up(cx: &Ctx) {
    let made = cx.made.borrow().clone();
    for chunk in made.chunks(100) {
        let deletes = chunk.iter().map(|(e, id)| cx.w.delete(e, *id, 0)).collect();
        // Best effort: a failure here was reported by the checks.
        let _ = cx.c.push(cx.token(), deletes);
    }
}

fn health(cx: &Ctx) -> Checked {
    let r = cx.c.call(reqwest::Method::GET, "/health", None, None)?;
    Ok(if r.status != 200 {
        Outcome::Fail(format!("expected 200, got {}", r.status))
    } else {
        expect_eq("`status`", &json!("ok"), &r.body["status"])
    })
}

fn no_token(cx: &Ctx) -> Checked {
    let r = cx.c.call(reqwest::Method::GET, "/changes", None, None)?;
    Ok(if r.status != 401 {
        Outcome::Fail(format!("expected 401, got {}", r.status))
    } else if !r.ctype.starts_with("application/problem+json") {
        Outcome::Fail(format!(
            "expected application/problem+json, got `{}`",
            r.ctype
        ))
    } else if !r
        .www_authenticate
        .as_deref()
        .is_some_and(|h| h.to_ascii_lowercase().starts_with("bearer"))
    {
        Outcome::Fail(format!(
            "expected a `WWW-Authenticate: Bearer` header, got {:?}",
            r.www_authenticate
        ))
    } else {
        Outcome::Pass
    })
}

fn scheme_case(cx: &Ctx) -> Checked {
    for scheme in ["bearer", "BEARER"] {
        let r = cx.c.call(
            reqwest::Method::GET,
            &snapshot_target(None, 1),
            Some(&format!("{scheme} {}", cx.token())),
            None,
        )?;
        if r.status != 200 {
            return Ok(Outcome::Fail(format!(
                "`Authorization: {scheme} <token>`: expected 200, got {}",
                r.status
            )));
        }
    }
    Ok(Outcome::Pass)
}

/// Creates a record of each entity the server accepts (trying the sample variants in
/// turn), for the checks after it.
fn create_one_of_each(cx: &mut Ctx) -> Checked {
    let mut failures = Vec::new();
    let model = cx.model;
    for e in &model.entities {
        let mut last = None;
        for variant in 0..6 {
            let id = Uuid::now_v7();
            let m = cx.w.create(e, id, variant);
            let r = cx.c.push_one(cx.token(), m.clone())?;
            cx.made.borrow_mut().push((e, id));
            if r["status"] == "applied" {
                let server = &r["server"];
                let same = m["record"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| !is_timestamp(e, k) && !is_set(e, k))
                    .find(|(k, v)| server["record"][k.as_str()] != **v);
                if let Some((k, v)) = same {
                    failures.push(format!(
                        "{}: field `{k}`: expected {v}, got {}",
                        e.name,
                        server["record"][k.as_str()]
                    ));
                }
                if server["version"].as_i64().is_none_or(|v| v < 1) {
                    failures.push(format!(
                        "{}: expected a version of 1 or more, got {}",
                        e.name, server["version"]
                    ));
                }
                cx.created.push(Created {
                    entity: e,
                    id,
                    variant,
                    server: server.clone(),
                });
                last = None;
                break;
            }
            last = Some(format!("{}: expected applied, got {r}", e.name));
        }
        failures.extend(last);
    }
    Ok(pass_if(failures.is_empty(), || failures.join("; ")))
}

fn field_kind<'e>(e: &'e Entity, name: &str) -> Option<&'e TypeKind> {
    e.synced_fields()
        .find(|f| f.name == name)
        .map(|f| &f.ty.kind)
}

fn is_timestamp(e: &Entity, name: &str) -> bool {
    matches!(
        field_kind(e, name),
        Some(TypeKind::Scalar {
            scalar: ScalarType::Timestamp
        })
    )
}

fn is_set(e: &Entity, name: &str) -> bool {
    matches!(field_kind(e, name), Some(TypeKind::Set { .. }))
}

fn create_over_live(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let (e, id, server) = cx.fresh_of(first.entity, first.variant)?;
    let again = cx.w.create(e, id, first.variant);
    let r = cx.c.push_one(cx.token(), again)?;
    Ok(if r["status"] != "conflict" {
        Outcome::Fail(format!("expected status conflict, got {r}"))
    } else {
        expect_eq(
            "the conflict's `server.version`",
            &server["version"],
            &r["server"]["version"],
        )
    })
}

fn lww_current(cx: &Ctx) -> Checked {
    let Some((e, id, server, f)) = cx.target(MergeStrategy::Lww, |f, v| has_values(f, v, 1))?
    else {
        return Ok(Outcome::Skip(
            "no editable lww field of a comparable type in the model".into(),
        ));
    };
    let value = other_value(f, &server["record"][&f.name], 1).ok_or(
        "the server's record of the fresh record holds a value of another type than the field's",
    )?;
    // An older stamp than the record's: the edit saw the current version, so it is
    // later whatever its clock says (a device whose clock runs behind).
    let stamp = cx.w.earlier(60_000).to_string();
    let version = server["version"].as_i64().unwrap_or(1);
    let r = cx.c.push_one(
        cx.token(),
        Writer::update(
            e,
            id,
            version,
            json!({ f.name.clone(): { "set": value, "hlc": stamp } }),
        ),
    )?;
    Ok(if r["status"] != "applied" {
        Outcome::Fail(format!("expected applied, got {r}"))
    } else {
        expect_eq(
            &format!("`{}`", f.name),
            &value,
            &r["server"]["record"][&f.name],
        )
    })
}

fn lww_later_stamp_wins(cx: &Ctx) -> Checked {
    let Some((e, id, server, f)) = cx.target(MergeStrategy::Lww, |f, v| has_values(f, v, 2))?
    else {
        return Ok(Outcome::Skip(
            "no editable lww field of a comparable type in the model".into(),
        ));
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let later = other_value(f, &server["record"][&f.name], 1).ok_or(
        "the server's record of the fresh record holds a value of another type than the field's",
    )?;
    let earlier = other_value(f, &server["record"][&f.name], 2).ok_or(
        "the server's record of the fresh record holds a value of another type than the field's",
    )?;
    if later == earlier {
        return Ok(Outcome::Skip(format!("`{}` has too few values", f.name)));
    }
    // Two devices edit from the same version; the later-stamped edit arrives first.
    let old_stamp = cx.w.earlier(1_000).to_string();
    let new_stamp = cx.w.now().to_string();
    let edit = |v: &Json, stamp: &str| {
        Writer::update(
            e,
            id,
            version,
            json!({ f.name.clone(): { "set": v, "hlc": stamp } }),
        )
    };
    let r1 = cx.c.push_one(cx.token(), edit(&later, &new_stamp))?;
    if r1["status"] != "applied" {
        return Ok(Outcome::Fail(format!(
            "first edit: expected applied, got {r1}"
        )));
    }
    let r2 = cx.c.push_one(cx.token(), edit(&earlier, &old_stamp))?;
    let now = cx.c.record_of(cx.token(), id)?;
    Ok(if r2["status"] != "applied" {
        Outcome::Fail(format!(
            "second edit: expected applied (its value losing), got {r2}"
        ))
    } else {
        expect_eq(
            &format!(
                "`{}` after an edit stamped {new_stamp} then one stamped {old_stamp}",
                f.name
            ),
            &later,
            &now["record"][&f.name],
        )
    })
}

fn lww_tie(cx: &Ctx) -> Checked {
    let Some((e, id, server, f)) = cx.target(MergeStrategy::Lww, |f, _| is_string(f))? else {
        return Ok(Outcome::Skip(
            "no editable lww string field in the model".into(),
        ));
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let stamp = cx.w.now().to_string();
    let edit = |v: &str| {
        Writer::update(
            e,
            id,
            version,
            json!({ f.name.clone(): { "set": v, "hlc": stamp } }),
        )
    };
    // The greater value first, then the smaller with the same stamp: it stays.
    cx.c.push_one(cx.token(), edit("conformance tie b"))?;
    cx.c.push_one(cx.token(), edit("conformance tie a"))?;
    let after_smaller = cx.c.record_of(cx.token(), id)?["record"][&f.name].clone();
    if after_smaller != json!("conformance tie b") {
        return Ok(expect_eq(
            "after `b` then `a` with equal stamps",
            &json!("conformance tie b"),
            &after_smaller,
        ));
    }
    cx.c.push_one(cx.token(), edit("conformance tie c"))?;
    let after_greater = cx.c.record_of(cx.token(), id)?["record"][&f.name].clone();
    Ok(expect_eq(
        "after `b`, `a` then `c` with equal stamps",
        &json!("conformance tie c"),
        &after_greater,
    ))
}

fn sum_adds(cx: &Ctx) -> Checked {
    let Some((e, id, server, f)) = cx.target(MergeStrategy::Sum, |_, v| v.is_number())? else {
        return Ok(Outcome::Skip("no sum field in the model".into()));
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let start = &server["record"][&f.name];
    let add = |n: i64| Writer::update(e, id, version, json!({ f.name.clone(): { "add": n } }));
    cx.c.push_one(cx.token(), add(2))?;
    cx.c.push_one(cx.token(), add(3))?;
    let now = cx.c.record_of(cx.token(), id)?;
    let expected = plus(start, 5);
    Ok(expect_eq(
        &format!("`{}` after +2 and +3 from {start}", f.name),
        &expected,
        &now["record"][&f.name],
    ))
}

/// `Some(skip)` if the server (its `GET /health`) speaks a protocol before 1.3.0, which
/// did not have `what`.
fn before_1_3(cx: &Ctx, what: &str) -> Result<Option<Outcome>, String> {
    let r = cx.c.call(reqwest::Method::GET, "/health", None, None)?;
    let protocol = r.body["protocol"].as_str().unwrap_or_default();
    Ok(
        (!sync_runtime::protocol::speaks_at_least(protocol, sync_runtime::protocol::DOTS_SINCE))
            .then(|| {
                Outcome::Skip(format!(
                    "the server speaks protocol `{protocol}`; {what} came with 1.3.0"
                ))
            }),
    )
}

/// SUM-2: an update whose dot the record's dots include applies without its `sum`
/// operations (as a device's retry does after a restore lost its first delivery and
/// another device sent the record again).
fn sum_dots(cx: &Ctx) -> Checked {
    if let Some(skip) = before_1_3(cx, "dots")? {
        return Ok(skip);
    }
    let Some((e, id, server, f)) = cx.target(MergeStrategy::Sum, |_, v| v.is_number())? else {
        return Ok(Outcome::Skip("no sum field in the model".into()));
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let start = &server["record"][&f.name];
    let session = format!("{:016x}", Uuid::new_v4().as_u64_pair().0);
    let add = |n: i64, seq: u64| {
        let mut m = Writer::update(e, id, version, json!({ f.name.clone(): { "add": n } }));
        m["dot"] = json!({ "session": session, "seq": seq });
        m
    };
    // +2 as dot 1; the same dot under another key (a retry whose key the server no
    // longer knows); then +3 as dot 2.
    for (n, seq) in [(2, 1), (2, 1), (3, 2)] {
        let r = cx.c.push_one(cx.token(), add(n, seq))?;
        if r["status"] != "applied" {
            return Ok(Outcome::Fail(format!(
                "+{n} with dot {seq}: expected applied, got {r}"
            )));
        }
    }
    let now = cx.c.record_of(cx.token(), id)?;
    let expected = plus(start, 5);
    Ok(expect_eq(
        &format!(
            "`{}` after +2 (dot 1), +2 again with dot 1 and +3 (dot 2), from {start}",
            f.name
        ),
        &expected,
        &now["record"][&f.name],
    ))
}

/// SUM-3: a dot whose `prev` is above what the record holds of its session leaves a gap
/// (`dot_gaps`); a delta whose dot lies in the gap counts when it comes, once.
fn sum_gaps(cx: &Ctx) -> Checked {
    let r = cx.c.call(reqwest::Method::GET, "/health", None, None)?;
    let protocol = r.body["protocol"].as_str().unwrap_or_default();
    if !sync_runtime::protocol::speaks_at_least(protocol, sync_runtime::protocol::GAPS_SINCE) {
        return Ok(Outcome::Skip(format!(
            "the server speaks protocol `{protocol}`; gaps came with 1.3.2"
        )));
    }
    let Some((e, id, server, f)) = cx.target(MergeStrategy::Sum, |_, v| v.is_number())? else {
        return Ok(Outcome::Skip("no sum field in the model".into()));
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let start = &server["record"][&f.name];
    let session = format!("{:016x}", Uuid::new_v4().as_u64_pair().0);
    let add = |n: i64, prev: u64, seq: u64| {
        let mut m = Writer::update(e, id, version, json!({ f.name.clone(): { "add": n } }));
        m["dot"] = json!({ "session": session, "seq": seq, "prev": prev });
        m
    };
    // +3 as dot 4 (previous: 2) first: 1 and 2 are lacking. Then +2 as dot 2 (previous:
    // 0), twice under two keys (a retry whose key the server no longer knows).
    for (n, prev, seq) in [(3, 2, 4), (2, 0, 2), (2, 0, 2)] {
        let r = cx.c.push_one(cx.token(), add(n, prev, seq))?;
        if r["status"] != "applied" {
            return Ok(Outcome::Fail(format!(
                "+{n} with dot {seq} (prev {prev}): expected applied, got {r}"
            )));
        }
        if seq == 4 {
            let gaps = &r["server"]["dot_gaps"][&session];
            if gaps != &json!([[1, 2]]) {
                return Ok(Outcome::Fail(format!(
                    "after dot 4 with prev 2 on a record without the session: expected `dot_gaps` {{\"{session}\": [[1, 2]]}}, got {}",
                    r["server"]["dot_gaps"]
                )));
            }
        }
    }
    let now = cx.c.record_of(cx.token(), id)?;
    let expected = plus(start, 5);
    Ok(expect_eq(
        &format!(
            "`{}` after +3 (dot 4, prev 2), then +2 (dot 2, prev 0) twice, from {start}",
            f.name
        ),
        &expected,
        &now["record"][&f.name],
    ))
}

/// SUM-4: a create naming a tombstone's version recreates the record, whose answer and
/// snapshot carry `life_since`, the version the recreate gave it.
fn recreate_life(cx: &Ctx) -> Checked {
    let r = cx.c.call(reqwest::Method::GET, "/health", None, None)?;
    let protocol = r.body["protocol"].as_str().unwrap_or_default();
    if !sync_runtime::protocol::speaks_at_least(protocol, sync_runtime::protocol::LIVES_SINCE) {
        return Ok(Outcome::Skip(format!(
            "the server speaks protocol `{protocol}`; lives came with 1.3.3"
        )));
    }
    let Some((e, id, _, r)) = deleted(cx)? else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let tomb = r["server"]["version"].as_i64().unwrap_or(1);
    let mut create = cx.w.create(e, id, 1);
    create["base_version"] = json!(tomb);
    let c = cx.c.push_one(cx.token(), create)?;
    if c["status"] != "applied" {
        return Ok(Outcome::Fail(format!(
            "a create naming the tombstone's version {tomb}: expected applied, got {c}"
        )));
    }
    let version = &c["server"]["version"];
    if &c["server"]["life_since"] != version {
        return Ok(Outcome::Fail(format!(
            "the recreate's answer: expected `life_since` {version}, got {}",
            c["server"]
        )));
    }
    let now = cx.c.record_of(cx.token(), id)?;
    Ok(expect_eq(
        "the recreated record's `life_since` in GET /snapshot",
        version,
        &now["life_since"],
    ))
}

/// A `sum` field's value `start` plus `n` (integers wrap, as SUM-1 says).
fn plus(start: &Json, n: i64) -> Json {
    match start.as_i64() {
        Some(i) => json!(i.wrapping_add(n)),
        None => json!(start.as_f64().unwrap_or(0.0) + n as f64),
    }
}

fn as_set(v: &Json) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(Json::to_string)
        .collect()
}

/// A set of JSON texts as a JSON array, for messages.
fn show(set: &BTreeSet<String>) -> String {
    format!("[{}]", set.iter().cloned().collect::<Vec<_>>().join(", "))
}

fn union_items(cx: &Ctx) -> Checked {
    let Some((e, id, server, f)) =
        cx.target(MergeStrategy::Union, |f, _| sample_item(f).is_some())?
    else {
        return Ok(Outcome::Skip(
            "no union field of strings, integers or UUIDs in the model".into(),
        ));
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let start = server["record"][&f.name].clone();
    let (x, y) = (sample_item(f).expect("checked"), other_item(f));
    let edit = |op: Json| Writer::update(e, id, version, json!({ f.name.clone(): op }));
    // Two devices add an item each, from the same version; then one removes the first.
    cx.c.push_one(cx.token(), edit(json!({ "add": [x] })))?;
    cx.c.push_one(cx.token(), edit(json!({ "add": [y] })))?;
    let mut expected = as_set(&start);
    expected.insert(x.to_string());
    expected.insert(y.to_string());
    let now = as_set(&cx.c.record_of(cx.token(), id)?["record"][&f.name]);
    if now != expected {
        return Ok(Outcome::Fail(format!(
            "`{}` from {start}, after adding {x} and (from the same version) {y}: expected {}, got {}",
            f.name,
            show(&expected),
            show(&now)
        )));
    }
    let current = cx.c.record_of(cx.token(), id)?["version"]
        .as_i64()
        .unwrap_or(1);
    cx.c.push_one(
        cx.token(),
        Writer::update(e, id, current, json!({ f.name.clone(): { "remove": [x] } })),
    )?;
    expected.remove(&x.to_string());
    let now = as_set(&cx.c.record_of(cx.token(), id)?["record"][&f.name]);
    Ok(pass_if(now == expected, || {
        format!(
            "`{}` after removing {x}: expected {expected:?}, got {now:?}",
            f.name
        )
    }))
}

fn manual_conflict(cx: &Ctx) -> Checked {
    let Some((e, id, server, f)) = cx.target(MergeStrategy::Manual, |f, v| has_values(f, v, 2))?
    else {
        return Ok(Outcome::Skip(
            "no editable manual field of a comparable type in the model".into(),
        ));
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let base = server["record"][&f.name].clone();
    let first = other_value(f, &base, 1).ok_or(
        "the server's record of the fresh record holds a value of another type than the field's",
    )?;
    let second = other_value(f, &base, 2).ok_or(
        "the server's record of the fresh record holds a value of another type than the field's",
    )?;
    let edit = |v: &Json| {
        Writer::update(
            e,
            id,
            version,
            json!({ f.name.clone(): { "set": v, "base": base } }),
        )
    };
    let r1 = cx.c.push_one(cx.token(), edit(&first))?;
    let r2 = cx.c.push_one(cx.token(), edit(&second))?;
    Ok(if r1["status"] != "applied" {
        Outcome::Fail(format!("first edit: expected applied, got {r1}"))
    } else if r2["status"] != "conflict" {
        Outcome::Fail(format!(
            "second edit from the same version {version}: expected status conflict, got {r2}"
        ))
    } else if !r2["fields"]
        .as_array()
        .is_some_and(|a| a.contains(&json!(f.name)))
    {
        Outcome::Fail(format!(
            "`fields`: expected to contain \"{}\", got {}",
            f.name, r2["fields"]
        ))
    } else if r2["server"]["record"][&f.name] != first {
        Outcome::Fail(format!(
            "the conflict's server record: expected `{}` = {first} (the first edit), got {}",
            f.name, r2["server"]["record"][&f.name]
        ))
    } else {
        pass_if(r2["server"]["version"].as_i64() > Some(version), || {
            format!(
                "the conflict's server version: expected above {version}, got {}",
                r2["server"]["version"]
            )
        })
    })
}

fn empty_patch(cx: &Ctx) -> Checked {
    let Some((e, id, server)) = cx.fresh()? else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let r =
        cx.c.push_one(cx.token(), Writer::update(e, id, version, json!({})))?;
    Ok(if r["status"] != "applied" {
        Outcome::Fail(format!("expected applied, got {r}"))
    } else {
        expect_eq("`server.version`", &json!(version), &r["server"]["version"])
    })
}

/// A fresh record deleted: (entity, id, version before, the delete's result).
fn deleted<'m>(cx: &Ctx<'m>) -> Result<Option<(&'m Entity, Uuid, i64, Json)>, String> {
    let Some((e, id, server)) = cx.fresh()? else {
        return Ok(None);
    };
    let version = server["version"].as_i64().unwrap_or(1);
    let r = cx.c.push_one(cx.token(), cx.w.delete(e, id, version))?;
    Ok(Some((e, id, version, r)))
}

fn delete_tombstone(cx: &Ctx) -> Checked {
    let before = cx.c.head(cx.token())?;
    let Some((_, id, version, r)) = deleted(cx)? else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    if r["status"] != "applied" || r["server"]["deleted"] != true {
        return Ok(Outcome::Fail(format!(
            "expected applied with `deleted: true`, got {r}"
        )));
    }
    if r["server"]["version"].as_i64() <= Some(version) {
        return Ok(Outcome::Fail(format!(
            "the delete's version: expected above {version}, got {}",
            r["server"]["version"]
        )));
    }
    let (changes, _) = cx.c.pull(cx.token(), &before, 100)?;
    let mine: Vec<&Json> = changes
        .iter()
        .filter(|c| c["entity_id"] == json!(id))
        .collect();
    Ok(match mine.as_slice() {
        [one] => expect_eq("the feed's record `deleted`", &json!(true), &one["deleted"]),
        other => Outcome::Fail(format!(
            "GET /changes after the delete: expected the record once as a tombstone, got it {} time(s)",
            other.len()
        )),
    })
}

fn update_tombstone(cx: &Ctx) -> Checked {
    let Some((e, id, _, r)) = deleted(cx)? else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let tomb = r["server"]["version"].as_i64().unwrap_or(1);
    let u = cx.c.push_one(
        cx.token(),
        Writer::update(e, id, tomb.saturating_sub(1), json!({})),
    )?;
    Ok(if u["status"] != "conflict" {
        Outcome::Fail(format!("expected status conflict, got {u}"))
    } else {
        expect_eq(
            "the conflict's `server.deleted`",
            &json!(true),
            &u["server"]["deleted"],
        )
    })
}

fn delete_again(cx: &Ctx) -> Checked {
    let Some((e, id, _, r)) = deleted(cx)? else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let tomb = &r["server"]["version"];
    let again =
        cx.c.push_one(cx.token(), cx.w.delete(e, id, tomb.as_i64().unwrap_or(1)))?;
    Ok(if again["status"] != "applied" {
        Outcome::Fail(format!("expected applied, got {again}"))
    } else {
        expect_eq("`server.version`", tomb, &again["server"]["version"])
    })
}

fn update_unknown(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let r = cx.c.push_one(
        cx.token(),
        Writer::update(first.entity, Uuid::now_v7(), 1, json!({})),
    )?;
    Ok(if r["status"] != "rejected" {
        Outcome::Fail(format!("expected status rejected, got {r}"))
    } else if r["problem"]["status"] != 422 {
        Outcome::Fail(format!("expected problem status 422, got {}", r["problem"]))
    } else {
        pass_if(
            r["problem"]["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/unknown-record")),
            || {
                format!(
                    "problem `type`: expected one ending in /unknown-record (the client acts on it), got {}",
                    r["problem"]["type"]
                )
            },
        )
    })
}

fn idempotent_replay(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let id = Uuid::now_v7();
    let m = cx.w.create(first.entity, id, first.variant);
    cx.made.borrow_mut().push((first.entity, id));
    let a = cx.c.push_one(cx.token(), m.clone())?;
    let b = cx.c.push_one(cx.token(), m)?;
    Ok(expect_eq("the second answer to the same mutation", &a, &b))
}

fn key_reused_with_another_body(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let (id, other_id) = (Uuid::now_v7(), Uuid::now_v7());
    let m = cx.w.create(first.entity, id, first.variant);
    cx.made.borrow_mut().push((first.entity, id));
    cx.c.push_one(cx.token(), m.clone())?;
    let mut other = cx.w.create(first.entity, other_id, first.variant);
    other["idempotency_key"] = m["idempotency_key"].clone();
    let r = cx.c.push_one(cx.token(), other)?;
    Ok(pass_if(
        r["status"] == "rejected" && r["problem"]["status"] == 422,
        || format!("expected status rejected with a 422 problem, got {r}"),
    ))
}

/// Sends `body` as is and expects the whole push refused with 422 and `pointer`.
fn refused(cx: &Ctx, body: &str, pointer: &str) -> Result<Option<String>, String> {
    let r = cx.c.call(
        reqwest::Method::POST,
        "/push",
        Some(&Client::bearer(cx.token())),
        Some(Body::Raw(body)),
    )?;
    Ok(if r.status != 422 {
        Some(format!("expected 422, got {} {}", r.status, r.body))
    } else if r.body["pointer"] != json!(pointer) {
        Some(format!(
            "`pointer`: expected \"{pointer}\", got {}",
            r.body["pointer"]
        ))
    } else {
        None
    })
}

fn repeated_member(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let e = first.entity;
    let id = Uuid::now_v7();
    let m = cx.w.create(e, id, first.variant);
    // The entity id member twice: the first one wins in some parsers, the last in others.
    let text = m.to_string();
    let dup = text.replacen(
        "\"entity_type\":",
        &format!("\"entity_id\":\"{}\",\"entity_type\":", Uuid::now_v7()),
        1,
    );
    let body = format!("{{\"mutations\":[{dup}]}}");
    if let Some(why) = refused(cx, &body, "/mutations/0/entity_id")? {
        return Ok(Outcome::Fail(why));
    }
    let stored =
        cx.c.records(cx.token())?
            .into_iter()
            .any(|r| r["entity_id"] == json!(id));
    Ok(pass_if(!stored, || {
        "the refused mutation was stored".into()
    }))
}

fn key_lengths(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    for key in [String::new(), "k".repeat(MAX_IDEMPOTENCY_KEY_CHARS + 1)] {
        let mut m = cx.w.create(first.entity, Uuid::now_v7(), first.variant);
        m["idempotency_key"] = json!(key);
        let body = json!({ "mutations": [m] }).to_string();
        if let Some(why) = refused(cx, &body, "/mutations/0/idempotency_key")? {
            return Ok(Outcome::Fail(format!(
                "a key of {} characters: {why}",
                key.len()
            )));
        }
    }
    Ok(Outcome::Pass)
}

/// Pushes a create of `entity` spoiled by `spoil` followed by a good one: the first must
/// be rejected alone (422) and the second applied (WIRE-2, WIRE-3).
fn rejected_alone(
    cx: &Ctx,
    entity: &Entity,
    variant: usize,
    what: &str,
    spoil: impl FnOnce(&mut Json),
) -> Checked {
    let (bad_id, good_id) = (Uuid::now_v7(), Uuid::now_v7());
    let mut bad = cx.w.create(entity, bad_id, variant);
    spoil(&mut bad);
    let good = cx.w.create(entity, good_id, variant);
    let r = cx.c.push(cx.token(), vec![bad, good])?;
    let ids = [bad_id, good_id];
    // Only what was applied needs deleting at the end.
    if let Some(e) = cx.model.entities.iter().find(|e| e.name == entity.name) {
        cx.made.borrow_mut().extend(ids.map(|id| (e, id)));
    }
    Ok(match r.as_slice() {
        [first, second] => {
            if first["status"] != "rejected" || first["problem"]["status"] != 422 {
                Outcome::Fail(format!("{what}: expected rejected 422, got {first}"))
            } else {
                pass_if(second["status"] == "applied", || {
                    format!("the good mutation after it: expected applied, got {second}")
                })
            }
        }
        other => Outcome::Fail(format!(
            "two mutations: expected two results, got {}",
            other.len()
        )),
    })
}

/// TXN-1: the mutations of one transaction apply all or none. Three creates, the first
/// two of one transaction, the second of a live record (a `conflict`, CREATE-2), the
/// third of no transaction: the first is rejected `transaction-aborted` and stored
/// nowhere, the third applies; the first sent again alone applies (its key was not
/// spent).
fn transactions(cx: &Ctx) -> Checked {
    let r = cx.c.call(reqwest::Method::GET, "/health", None, None)?;
    let protocol = r.body["protocol"].as_str().unwrap_or_default();
    if !sync_runtime::protocol::speaks_at_least(
        protocol,
        sync_runtime::protocol::TRANSACTIONS_SINCE,
    ) {
        return Ok(Outcome::Skip(format!(
            "the server speaks protocol `{protocol}`; transactions came with 1.4.0"
        )));
    }
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let ids = [Uuid::now_v7(), first.id, Uuid::now_v7()];
    let transaction = format!("conformance-{}", Uuid::new_v4());
    let mut ms: Vec<Json> = ids
        .iter()
        .map(|id| cx.w.create(first.entity, *id, first.variant))
        .collect();
    ms[0]["transaction"] = json!(transaction);
    ms[1]["transaction"] = json!(transaction);
    let aborted = ms[0].clone();
    if let Some(e) = cx
        .model
        .entities
        .iter()
        .find(|e| e.name == first.entity.name)
    {
        cx.made
            .borrow_mut()
            .extend([ids[0], ids[2]].map(|id| (e, id)));
    }
    let r = cx.c.push(cx.token(), ms)?;
    let status = |x: &Json| match x["status"].as_str() {
        Some("rejected") => format!(
            "rejected {}",
            x["problem"]["type"]
                .as_str()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
        ),
        other => other.unwrap_or("?").to_string(),
    };
    let got: Vec<String> = r.iter().map(status).collect();
    if got != ["rejected transaction-aborted", "conflict", "applied"] {
        return Ok(Outcome::Fail(format!(
            "a transaction whose second mutation is a conflict, then a mutation of no transaction: expected [rejected transaction-aborted, conflict, applied], got {got:?}"
        )));
    }
    if cx
        .c
        .records(cx.token())?
        .iter()
        .any(|c| c["entity_id"] == json!(ids[0]))
    {
        return Ok(Outcome::Fail(
            "the aborted create is in GET /snapshot: part of the transaction was kept".into(),
        ));
    }
    let again = cx.c.push_one(cx.token(), aborted)?;
    Ok(pass_if(again["status"] == "applied", || {
        format!(
            "the aborted create sent again: expected applied (its key was not spent), got {again}"
        )
    }))
}

fn unknown_field(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    rejected_alone(
        cx,
        first.entity,
        first.variant,
        "the record with an unknown field",
        |m| m["record"]["conformance_unknown_field"] = json!(9),
    )
}

fn query_bounds(cx: &Ctx) -> Checked {
    for path in [
        "/changes?limit=0".to_string(),
        format!(
            "/changes?limit={}",
            sync_runtime::protocol::MAX_PAGE_LIMIT + 1
        ),
        "/snapshot?limit=0".to_string(),
        "/snapshot?conformance=1".to_string(),
    ] {
        let r = cx.c.call(
            reqwest::Method::GET,
            &path,
            Some(&Client::bearer(cx.token())),
            None,
        )?;
        if r.status != 400 {
            return Ok(Outcome::Fail(format!(
                "GET {path}: expected 400, got {}",
                r.status
            )));
        }
    }
    Ok(Outcome::Pass)
}

fn too_many(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let ids: Vec<Uuid> = (0..=MAX_PUSH_MUTATIONS).map(|_| Uuid::now_v7()).collect();
    let body = json!({ "mutations": ids.iter().map(|id| cx.w.create(first.entity, *id, first.variant)).collect::<Vec<_>>() });
    let r = cx.c.call(
        reqwest::Method::POST,
        "/push",
        Some(&Client::bearer(cx.token())),
        Some(Body::Json(&body)),
    )?;
    if r.status != 413 {
        cx.made
            .borrow_mut()
            .extend(ids.iter().map(|id| (first.entity, *id)));
        return Ok(Outcome::Fail(format!(
            "{} mutations: expected 413, got {}",
            ids.len(),
            r.status
        )));
    }
    let held: BTreeSet<String> =
        cx.c.records(cx.token())?
            .iter()
            .filter_map(|r| r["entity_id"].as_str().map(str::to_string))
            .collect();
    let stored = ids
        .iter()
        .filter(|id| held.contains(&id.to_string()))
        .count();
    Ok(pass_if(stored == 0, || {
        format!("{stored} of the refused mutations were stored")
    }))
}

fn same_spelling(cx: &Ctx) -> Checked {
    let before = cx.c.head(cx.token())?;
    let Some((_, id, server)) = cx.fresh()? else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let (changes, _) = cx.c.pull(cx.token(), &before, 100)?;
    let Some(fed) = changes.iter().find(|c| c["entity_id"] == json!(id)) else {
        return Ok(Outcome::Fail(
            "the created record is not in GET /changes".into(),
        ));
    };
    Ok(expect_eq(
        "the record in GET /changes (the push result's expected)",
        &server,
        fed,
    ))
}

fn unknown_fingerprint(cx: &Ctx) -> Checked {
    let r =
        cx.c.http
            .get(format!("{}{}", cx.c.base, snapshot_target(None, 1)))
            .bearer_auth(cx.token())
            .header(
                "sync-model-fingerprint",
                "sha256:00000000000000000000000000000000",
            )
            .send()
            .map_err(|e| format!("GET /snapshot: request failed: {e}"))?;
    let status = r.status().as_u16();
    Ok(pass_if(status == 426, || {
        format!("expected 426, got {status}")
    }))
}

fn pagination(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let t = cx.token();
    let before = cx.c.head(t)?;
    let ids: Vec<Uuid> = (0..25).map(|_| Uuid::now_v7()).collect();
    cx.made
        .borrow_mut()
        .extend(ids.iter().map(|id| (first.entity, *id)));
    cx.c.push(
        t,
        ids.iter()
            .map(|id| cx.w.create(first.entity, *id, first.variant))
            .collect(),
    )?;
    let (changes, _) = cx.c.pull(t, &before, 7)?;
    let seen: Vec<String> = changes
        .iter()
        .filter_map(|x| x["entity_id"].as_str().map(str::to_string))
        .collect();
    let unique: BTreeSet<&String> = seen.iter().collect();
    let missing: Vec<String> = ids
        .iter()
        .map(Uuid::to_string)
        .filter(|id| !unique.contains(id))
        .collect();
    Ok(if unique.len() != seen.len() {
        Outcome::Fail(format!(
            "expected each record once, got {} changes for {} records",
            seen.len(),
            unique.len()
        ))
    } else {
        pass_if(missing.is_empty(), || {
            format!(
                "expected all 25 records created in pages of 7, missing {}: {}",
                missing.len(),
                missing.join(", ")
            )
        })
    })
}

fn entity_snapshot(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let (t, entity) = (cx.token(), first.entity.name.as_str());
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page =
            cx.c.get(t, &entity_snapshot_target(entity, cursor.as_deref(), 5))?;
        for r in page["records"].as_array().into_iter().flatten() {
            if r["entity_type"] != json!(entity) {
                return Ok(Outcome::Fail(format!(
                    "GET /snapshot?entity={entity} sent a record of {}",
                    r["entity_type"]
                )));
            }
            seen.extend(r["entity_id"].as_str().map(str::to_string));
        }
        if page["has_more"] != json!(true) {
            break;
        }
        cursor = page["next_cursor"].as_str().map(str::to_string);
    }
    let missing: Vec<String> = cx
        .created
        .iter()
        .filter(|c| c.entity.name == entity)
        .map(|c| c.id.to_string())
        .filter(|id| !seen.contains(id))
        .collect();
    Ok(pass_if(missing.is_empty(), || {
        format!("GET /snapshot?entity={entity} lacks {}", missing.join(", "))
    }))
}

/// SNAP-3: the first page of a snapshot carries `estimated_total` (at least the records
/// this run created, all live), a later page does not.
fn snapshot_estimate(cx: &Ctx) -> Checked {
    if let Some(skip) = before_1_3(cx, "the estimate")? {
        return Ok(skip);
    }
    if cx.created.len() < 2 {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    }
    let first = cx.c.get(cx.token(), &snapshot_target(None, 1))?;
    let Some(total) = first["estimated_total"].as_u64() else {
        return Ok(Outcome::Fail(format!(
            "the first page has no `estimated_total`: {first}"
        )));
    };
    if total < cx.created.len() as u64 {
        return Ok(Outcome::Fail(format!(
            "`estimated_total` is {total}, but this run created {} records",
            cx.created.len()
        )));
    }
    let Some(cursor) = first["next_cursor"].as_str() else {
        return Ok(Outcome::Fail(format!(
            "a page of 1 of {total} records has no `next_cursor`"
        )));
    };
    let second = cx.c.get(cx.token(), &snapshot_target(Some(cursor), 1))?;
    Ok(pass_if(second.get("estimated_total").is_none(), || {
        format!("a later page carries `estimated_total`: {second}")
    }))
}

fn snapshot_then_changes(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let t = cx.token();
    let ids = |page: &Json| -> Vec<String> {
        page["records"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["entity_id"].as_str().map(str::to_string))
            .collect()
    };
    let first_page = cx.c.get(t, &snapshot_target(None, 5))?;
    let mut token = first_page["token"]
        .as_str()
        .ok_or("GET /snapshot: no `token`")?
        .to_string();
    let mut cursor = first_page["next_cursor"].as_str().map(str::to_string);
    let mut seen: BTreeSet<String> = ids(&first_page).into_iter().collect();
    let during = Uuid::now_v7();
    cx.made.borrow_mut().push((first.entity, during));
    cx.c.push(t, vec![cx.w.create(first.entity, during, first.variant)])?;
    while let Some(cur) = cursor {
        let page = cx.c.get(t, &snapshot_target(Some(&cur), 5))?;
        // Each page's token continues at the first's (the reference server's may name
        // more it saw), and the client continues with the last page's.
        token = page["token"]
            .as_str()
            .ok_or("GET /snapshot: a page without `token`")?
            .to_string();
        seen.extend(ids(&page));
        cursor = page["next_cursor"].as_str().map(str::to_string);
    }
    let (changes, _) = cx.c.pull(t, &token, 100)?;
    seen.extend(
        changes
            .iter()
            .filter_map(|r| r["entity_id"].as_str().map(str::to_string)),
    );
    let missing: Vec<String> = cx
        .created
        .iter()
        .map(|cr| cr.id.to_string())
        .filter(|id| !seen.contains(id))
        .collect();
    Ok(if !seen.contains(&during.to_string()) {
        Outcome::Fail(format!(
            "record {during}, created during the paging: expected in the pages or the changes after, found in neither"
        ))
    } else {
        pass_if(missing.is_empty(), || {
            format!(
                "records created before the snapshot missing: {}",
                missing.join(", ")
            )
        })
    })
}

fn expired_token(cx: &Ctx) -> Checked {
    let Some(expired) = &cx.opts.expired_token else {
        return Ok(Outcome::Skip(
            "pass --expired-token with a token this server has expired".into(),
        ));
    };
    let r = cx.c.call(
        reqwest::Method::GET,
        &changes_target(Some(expired), 100),
        Some(&Client::bearer(cx.token())),
        None,
    )?;
    Ok(pass_if(r.status == 410, || {
        format!("expected 410, got {}", r.status)
    }))
}

fn isolation(cx: &Ctx) -> Checked {
    let Some(tb) = &cx.opts.token_b else {
        return Ok(Outcome::Skip(
            "pass --token-b with a token of another (test) account".into(),
        ));
    };
    let Some(cr) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    if cx
        .c
        .records(tb)?
        .iter()
        .any(|x| x["entity_id"] == json!(cr.id))
    {
        return Ok(Outcome::Fail(format!(
            "account B's snapshot: expected no record {}, found account A's",
            cr.id
        )));
    }
    let field = cr.entity.synced_fields().find(|f| {
        !f.id
            && !f.immutable
            && f.merge != MergeStrategy::Union
            && other_value(f, &cr.server["record"][&f.name], 3).is_some()
    });
    if let Some(f) = field {
        let v = other_value(f, &cr.server["record"][&f.name], 3).expect("checked");
        let op = match f.merge {
            MergeStrategy::Lww => json!({ "set": v, "hlc": cx.w.now().to_string() }),
            MergeStrategy::Manual => json!({ "set": v, "base": cr.server["record"][&f.name] }),
            _ => json!({ "add": 1 }),
        };
        let r = cx.c.push_one(
            tb,
            Writer::update(
                cr.entity,
                cr.id,
                cr.server["version"].as_i64().unwrap_or(1),
                json!({ f.name.clone(): op }),
            ),
        )?;
        if r["status"] != "rejected" {
            return Ok(Outcome::Fail(format!(
                "account B's update of account A's record: expected rejected (unknown-record: B never held it), got {r}"
            )));
        }
    }
    Ok(Outcome::Pass)
}

/// An item for a union field's set, if its item type is one a check can make.
fn sample_item(f: &Field) -> Option<Json> {
    match &f.ty.kind {
        TypeKind::Set {
            item: ScalarType::String,
            ..
        } => Some(json!("conformance-item")),
        TypeKind::Set { item, .. } if item.is_integer() => Some(json!(7)),
        TypeKind::Set {
            item: ScalarType::Uuid,
            ..
        } => Some(json!("01900000-0000-7000-8000-0000000000c1")),
        _ => None,
    }
}

/// A second item, different from [`sample_item`].
fn other_item(f: &Field) -> Json {
    match &f.ty.kind {
        TypeKind::Set { item, .. } if item.is_integer() => json!(8),
        TypeKind::Set {
            item: ScalarType::Uuid,
            ..
        } => json!("01900000-0000-7000-8000-0000000000c2"),
        _ => json!("conformance-other-item"),
    }
}

/// Replaces, consistently, every placeholder id (strings starting with
/// [`crate::vectors::PLACEHOLDER_ID_PREFIX`]) and every idempotency key in `v` with
/// fresh ones.
fn fresh_ids(v: &mut Json, ids: &mut std::collections::HashMap<String, String>) {
    match v {
        Json::String(s)
            if s.starts_with(crate::vectors::PLACEHOLDER_ID_PREFIX) || s.starts_with("key-") =>
        {
            let fresh = ids
                .entry(s.clone())
                .or_insert_with(|| Uuid::now_v7().to_string())
                .clone();
            *s = fresh;
        }
        Json::Array(a) => a.iter_mut().for_each(|x| fresh_ids(x, ids)),
        Json::Object(m) => m.values_mut().for_each(|x| fresh_ids(x, ids)),
        _ => {}
    }
}

/// Sorts the arrays of set fields, so that sets compare as sets.
fn sets_sorted(e: Option<&Entity>, record: &Json) -> Json {
    let mut r = record.clone();
    if let (Some(e), Some(m)) = (e, r.as_object_mut()) {
        for (k, v) in m.iter_mut() {
            if is_set(e, k)
                && let Some(a) = v.as_array_mut()
            {
                a.sort_by_key(Json::to_string);
            }
        }
    }
    r
}

/// Runs one case of the vectors (see [`crate::vectors`]).
fn run_case(cx: &Ctx, case: &Json) -> Checked {
    let entity = cx
        .model
        .entities
        .iter()
        .find(|e| e.name == case["entity"].as_str().unwrap_or_default());
    // The vectors send `{}` for JSON fields; where the server took another sample value
    // for this entity (CREATE-1), use that one.
    let variant = cx
        .created
        .iter()
        .find(|c| Some(c.entity.name.as_str()) == entity.map(|e| e.name.as_str()))
        .map_or(0, |c| c.variant);
    let json_fields: Vec<&Field> = entity
        .into_iter()
        .flat_map(|e| e.synced_fields())
        .filter(|f| {
            matches!(f.ty.kind, TypeKind::Json { .. }) && !f.ty.nullable && f.default.is_none()
        })
        .collect();
    let with_variant = |v: &mut Json| {
        if variant == 0 {
            return;
        }
        for f in &json_fields {
            if let Some(x) = v.get_mut("record").and_then(|r| r.get_mut(&f.name)) {
                *x = sample(f, variant);
            }
        }
    };
    let mut ids = std::collections::HashMap::new();
    let mut offset: Option<i64> = None;
    for (i, step) in case["steps"].as_array().into_iter().flatten().enumerate() {
        let mut push = step["push"].clone();
        fresh_ids(&mut push, &mut ids);
        // Versions count from the case's first one (see `offset`), base versions too.
        if let (Some(shift), Some(b)) = (offset, push["base_version"].as_i64()) {
            push["base_version"] = json!(b.saturating_add(shift));
        }
        let mut expect = step["expect"].clone();
        fresh_ids(&mut expect, &mut ids);
        with_variant(&mut push);
        with_variant(&mut expect);
        if let (Some(e), Some(id)) = (entity, push["entity_id"].as_str())
            && let Ok(id) = id.parse::<Uuid>()
            && !cx.made.borrow().contains(&(e, id))
        {
            cx.made.borrow_mut().push((e, id));
        }
        let r = cx.c.push_one(cx.token(), push.clone())?;
        let at = format!(
            "step {} ({} {})",
            i + 1,
            push["op"].as_str().unwrap_or("?"),
            push["entity_type"].as_str().unwrap_or("?")
        );
        let fail = |what: String| Ok(Outcome::Fail(format!("{at}: {what}")));
        if r["status"] != expect["status"] {
            return fail(format!("expected status {}, got {r}", expect["status"]));
        }
        if r["status"] == "rejected" {
            if r["problem"]["status"] != expect["problem_status"] {
                return fail(format!(
                    "expected problem status {}, got {}",
                    expect["problem_status"], r["problem"]
                ));
            }
            let slug = expect["problem_type"].as_str().unwrap_or_default();
            if !r["problem"]["type"]
                .as_str()
                .is_some_and(|t| t.ends_with(&format!("/{slug}")))
            {
                return fail(format!(
                    "expected a problem type ending in /{slug}, got {}",
                    r["problem"]["type"]
                ));
            }
            continue;
        }
        let server = &r["server"];
        if let Some(v) = expect["version"].as_i64() {
            let Some(got) = server["version"].as_i64() else {
                return fail(format!("expected a version, got {}", server["version"]));
            };
            let shift = *offset.get_or_insert(got.saturating_sub(v));
            if got != v.saturating_add(shift) {
                return fail(format!(
                    "expected version {}, got {got}",
                    v.saturating_add(shift)
                ));
            }
        }
        if let Some(d) = expect.get("deleted")
            && server["deleted"] != *d
        {
            return fail(format!("expected deleted {d}, got {}", server["deleted"]));
        }
        if let Some(fields) = expect.get("fields") {
            let want = as_set(fields);
            let got = as_set(&r["fields"]);
            if want != got {
                return fail(format!(
                    "expected fields {}, got {}",
                    show(&want),
                    show(&got)
                ));
            }
        }
        for (member, sort) in [("record", true), ("clocks", false)] {
            for (k, want) in expect[member].as_object().into_iter().flatten() {
                let got = &server[member][k];
                let (w, g) = if sort {
                    (
                        sets_sorted(entity, &json!({ k: want })),
                        sets_sorted(entity, &json!({ k: got })),
                    )
                } else {
                    (want.clone(), got.clone())
                };
                if w != g {
                    return fail(format!("expected {member} `{k}` {want}, got {got}"));
                }
            }
        }
    }
    Ok(Outcome::Pass)
}

fn nul_string(cx: &Ctx) -> Checked {
    let Some((cr, f)) = cx.created.iter().find_map(|cr| {
        cr.entity
            .synced_fields()
            .find(|f| {
                !f.id
                    && matches!(
                        f.ty.kind,
                        TypeKind::Scalar {
                            scalar: ScalarType::String
                        }
                    )
            })
            .map(|f| (cr, f))
    }) else {
        return Ok(Outcome::Skip("no string field in the model".into()));
    };
    let name = f.name.clone();
    rejected_alone(
        cx,
        cr.entity,
        cr.variant,
        &format!("`{name}` holding U+0000"),
        |m| m["record"][&name] = json!("nul \u{0} inside"),
    )
}

fn results_in_order(cx: &Ctx) -> Checked {
    let Some(first) = cx.created.first() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let e = first.entity;
    let id = Uuid::now_v7();
    cx.made.borrow_mut().push((e, id));
    let create = cx.w.create(e, id, first.variant);
    let unknown = Writer::update(e, Uuid::now_v7(), 1, json!({}));
    let check = Writer::update(e, id, 1, json!({}));
    let sent = [create, unknown, check];
    let keys: Vec<Json> = sent.iter().map(|m| m["idempotency_key"].clone()).collect();
    let r = cx.c.push(cx.token(), sent.to_vec())?;
    let got_keys: Vec<Json> = r.iter().map(|x| x["idempotency_key"].clone()).collect();
    let statuses: Vec<Json> = r.iter().map(|x| x["status"].clone()).collect();
    Ok(if got_keys != keys {
        Outcome::Fail(format!(
            "result keys: expected {}, got {}",
            json!(keys),
            json!(got_keys)
        ))
    } else {
        expect_eq(
            "statuses of [create, update of an unknown id, check of the created record]",
            &json!(["applied", "rejected", "applied"]),
            &json!(statuses),
        )
    })
}
