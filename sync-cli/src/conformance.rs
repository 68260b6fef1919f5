//! `sync-cli conformance`: the protocol's checks, run against any server of a model.
//!
//! Each check prints one line, `PASS`, `FAIL` (with the reason) or `SKIP` (with why),
//! and the command exits non-zero if any check failed. The checks create their own
//! records (fresh UUIDs) in the token's account and never delete anything else.

use std::collections::BTreeSet;

use serde_json::{Map, Value as Json, json};
use sync_model::{Entity, Field, MergeStrategy, Model, ScalarType, TypeKind};
use sync_runtime::protocol::{changes_target, snapshot_target};
use uuid::Uuid;

/// What to check, and where.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server's base URL (`http://127.0.0.1:8080`).
    pub base_url: String,
    /// A bearer token of account A.
    pub token: String,
    /// A bearer token of another account, for the isolation check.
    pub token_b: Option<String>,
    /// A change token the server has expired, for the 410 check.
    pub expired_token: Option<String>,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It held.
    Pass,
    /// It did not, and why.
    Fail(String),
    /// It could not run here, and why.
    Skip(String),
}

/// Every check's outcome, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `(check name, outcome)`.
    pub checks: Vec<(String, Outcome)>,
}

impl Report {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Fail(_)))
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (name, outcome) in &self.checks {
            match outcome {
                Outcome::Pass => writeln!(f, "PASS {name}")?,
                Outcome::Fail(why) => writeln!(f, "FAIL {name}: {why}")?,
                Outcome::Skip(why) => writeln!(f, "SKIP {name}: {why}")?,
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Fail(_)))
            .count();
        let passed = self
            .checks
            .iter()
            .filter(|(_, o)| *o == Outcome::Pass)
            .count();
        write!(f, "{passed} passed, {failed} failed")
    }
}

struct Client {
    http: reqwest::blocking::Client,
    base: String,
}

impl Client {
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Json>,
    ) -> Result<(u16, String, Json), String> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().map_err(|e| format!("request failed: {e}"))?;
        let status = res.status().as_u16();
        let ctype = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = res.json::<Json>().unwrap_or(Json::Null);
        Ok((status, ctype, body))
    }

    fn push(&self, token: &str, mutations: Vec<Json>) -> Result<Vec<Json>, String> {
        let (status, _, body) = self.call(
            reqwest::Method::POST,
            "/push",
            Some(token),
            Some(&json!({ "mutations": mutations })),
        )?;
        if status != 200 {
            return Err(format!("POST /push answered {status}: {body}"));
        }
        body["results"]
            .as_array()
            .cloned()
            .ok_or_else(|| format!("no `results` in {body}"))
    }

    fn get(&self, token: &str, path: &str) -> Result<Json, String> {
        let (status, _, body) = self.call(reqwest::Method::GET, path, Some(token), None)?;
        if status != 200 {
            return Err(format!("GET {path} answered {status}: {body}"));
        }
        Ok(body)
    }

    /// Every change after `since`, page by page.
    fn pull(&self, token: &str, since: &str, limit: u32) -> Result<(Vec<Json>, String), String> {
        let mut since = since.to_string();
        let mut all = Vec::new();
        for _ in 0..10_000 {
            let body = self.get(token, &changes_target(Some(&since), limit))?;
            all.extend(body["changes"].as_array().cloned().unwrap_or_default());
            since = body["next_token"]
                .as_str()
                .ok_or("no `next_token`")?
                .to_string();
            if body["has_more"] != true {
                return Ok((all, since));
            }
        }
        Err("`has_more` never became false".into())
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
        Err("`next_cursor` never ended".into())
    }

    /// The current end of the change stream.
    fn head(&self, token: &str) -> Result<String, String> {
        let body = self.get(token, &snapshot_target(None, 1))?;
        let (_, end) = self.pull(
            token,
            body["token"].as_str().ok_or("no snapshot `token`")?,
            1000,
        )?;
        Ok(end)
    }
}

/// Candidate values for a field, tried in order until the server accepts a record.
fn sample(f: &Field, variant: usize) -> Json {
    if f.ty.nullable && matches!(f.ty.kind, TypeKind::Json { .. }) {
        return Json::Null;
    }
    if let Some(d) = &f.default {
        if matches!(f.ty.kind, TypeKind::Json { .. })
            && let Some(s) = d.as_str()
            && let Ok(v) = serde_json::from_str(s)
        {
            return v;
        }
        return d.clone();
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

fn record(e: &Entity, id: Uuid, variant: usize) -> Map<String, Json> {
    e.synced_fields()
        .map(|f| {
            let v = if f.id { json!(id) } else { sample(f, variant) };
            (f.name.clone(), v)
        })
        .collect()
}

fn create(e: &Entity, id: Uuid, variant: usize) -> Json {
    json!({
        "idempotency_key": Uuid::new_v4(),
        "entity_type": e.name,
        "entity_id": id,
        "op": "create",
        "record": record(e, id, variant),
        "clocks": {}
    })
}

fn update(e: &Entity, id: Uuid, base_version: i64, patch: Json) -> Json {
    json!({
        "idempotency_key": Uuid::new_v4(),
        "entity_type": e.name,
        "entity_id": id,
        "op": "update",
        "base_version": base_version,
        "patch": patch
    })
}

const HLC: &str = "7fffffffffff-00000000-00000000000000c1";

/// The operation a check sends for a field, and the value the field must then hold
/// (`None`: not comparable, e.g. a set's order).
fn op_for(f: &Field, current: &Json) -> Option<(Json, Json)> {
    let changed = match &f.ty.kind {
        TypeKind::Scalar {
            scalar: ScalarType::String,
        } => json!("changed by conformance"),
        TypeKind::Scalar {
            scalar: ScalarType::Bool,
        } => json!(!current.as_bool().unwrap_or(false)),
        TypeKind::Scalar { scalar } if scalar.is_integer() => {
            json!(current.as_i64().unwrap_or(0) + 2)
        }
        TypeKind::Scalar {
            scalar: ScalarType::F32 | ScalarType::F64,
        } => json!(current.as_f64().unwrap_or(0.0) + 2.0),
        _ => return None,
    };
    Some(match f.merge {
        MergeStrategy::Lww => (json!({ "set": changed, "hlc": HLC }), changed),
        MergeStrategy::Manual => (json!({ "set": changed, "base": current }), changed),
        MergeStrategy::Sum => (json!({ "add": 2 }), changed),
        MergeStrategy::Union => return None,
    })
}

/// A record a check created: its entity, id, the sample variant the server accepted and
/// the server's answer (`{version, record, ...}`).
struct Created<'m> {
    entity: &'m Entity,
    id: Uuid,
    variant: usize,
    server: Json,
}

/// What the checks share: the client, the options and the records created at the start.
struct Ctx<'m> {
    c: Client,
    opts: &'m Options,
    model: &'m Model,
    created: Vec<Created<'m>>,
}

/// A check's outcome, or why it could not talk to the server (a failure).
type Checked = Result<Outcome, String>;

/// A check that needs nothing but the context.
type CheckFn = fn(&Ctx) -> Checked;

fn pass_if(ok: bool, why: impl FnOnce() -> String) -> Outcome {
    if ok {
        Outcome::Pass
    } else {
        Outcome::Fail(why())
    }
}

impl Ctx<'_> {
    fn token(&self) -> &str {
        &self.opts.token
    }

    /// The first record created, for checks that need any entity.
    fn any_entity(&self) -> Option<(&Entity, usize)> {
        self.created.first().map(|c| (c.entity, c.variant))
    }
}

const NOTHING_CREATED: &str = "nothing could be created";

/// Runs every check.
pub fn run(model: &Model, opts: &Options) -> Report {
    let mut cx = Ctx {
        c: Client {
            http: reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .expect("an HTTP client"),
            base: opts.base_url.trim_end_matches('/').to_string(),
        },
        opts,
        model,
        created: Vec::new(),
    };
    let mut report = Report::default();
    let mut record = |name: String, checked: Checked| {
        report
            .checks
            .push((name, checked.unwrap_or_else(Outcome::Fail)));
    };
    record("health: GET /health answers 200".into(), health(&cx));
    record(
        "auth: a request without a token is 401 problem+json".into(),
        auth(&cx),
    );
    let created = create_one_of_each(&mut cx);
    record(
        "create: a record of every entity is applied".into(),
        created,
    );
    for strategy in MergeStrategy::ALL {
        record(
            format!("round trip: a `{strategy}` operation is applied and pulled back"),
            round_trip(&cx, strategy),
        );
    }
    let checks: [(&str, CheckFn); 7] = [
        (
            "idempotency: the same key and body replays the stored result",
            idempotent_replay,
        ),
        (
            "idempotency: the same key with another body is rejected with 422",
            key_reused_with_another_body,
        ),
        (
            "occ: concurrent edits of a manual field give a conflict with the server record",
            manual_conflict,
        ),
        (
            "pagination: paging through changes loses and repeats nothing",
            pagination,
        ),
        (
            "snapshot: pages then changes since the snapshot token miss nothing",
            snapshot_then_changes,
        ),
        ("expiry: an expired change token is 410", expired_token),
        (
            "isolation: another account sees and changes nothing of this one",
            isolation,
        ),
    ];
    for (name, check) in checks {
        record(name.into(), check(&cx));
    }
    report
}

fn health(cx: &Ctx) -> Checked {
    let (status, _, _) = cx.c.call(reqwest::Method::GET, "/health", None, None)?;
    Ok(pass_if(status == 200, || format!("status {status}")))
}

fn auth(cx: &Ctx) -> Checked {
    let (status, ctype, body) = cx.c.call(reqwest::Method::GET, "/changes", None, None)?;
    Ok(if status != 401 {
        Outcome::Fail(format!("status {status}"))
    } else if !ctype.starts_with("application/problem+json") {
        Outcome::Fail(format!("content type `{ctype}`"))
    } else if body["status"] != 401 || !body["title"].is_string() {
        Outcome::Fail(format!("not a problem body: {body}"))
    } else {
        Outcome::Pass
    })
}

/// Creates a record of each entity the server accepts (trying the sample variants in
/// turn), for the checks after it.
fn create_one_of_each(cx: &mut Ctx) -> Checked {
    let mut failures = Vec::new();
    for e in &cx.model.entities {
        let mut done = false;
        for variant in 0..6 {
            let id = Uuid::now_v7();
            match cx.c.push(&cx.opts.token, vec![create(e, id, variant)]) {
                Ok(r) if r.first().is_some_and(|x| x["status"] == "applied") => {
                    cx.created.push(Created {
                        entity: e,
                        id,
                        variant,
                        server: r[0]["server"].clone(),
                    });
                    done = true;
                    break;
                }
                Ok(r) => failures.push(format!(
                    "{}: {}",
                    e.name,
                    r.first()
                        .map(|x| x["problem"].to_string())
                        .unwrap_or_default()
                )),
                Err(why) => failures.push(why),
            }
        }
        if !done && failures.is_empty() {
            failures.push(format!("{}: never applied", e.name));
        }
    }
    Ok(pass_if(cx.created.len() == cx.model.entities.len(), || {
        failures.join("; ")
    }))
}

/// An operation of `strategy` on a created record: `(record, field, op, expected value)`
/// (`Null`: the field must contain [`sample_item`], for sets).
fn round_trip_target<'a>(
    cx: &'a Ctx,
    strategy: MergeStrategy,
) -> Option<(&'a Created<'a>, &'a Field, Json, Json)> {
    cx.created.iter().find_map(|cr| {
        let e = cr.entity;
        e.synced_fields()
            .filter(|f| !f.id && !f.immutable && f.merge == strategy)
            .find_map(|f| op_for(f, &cr.server["record"][&f.name]).map(|(op, v)| (cr, f, op, v)))
            .or_else(|| {
                (strategy == MergeStrategy::Union)
                    .then(|| {
                        e.synced_fields()
                            .find(|f| f.merge == MergeStrategy::Union && !f.immutable)
                    })
                    .flatten()
                    .map(|f| {
                        let op = json!({ "add": [sample_item(f)], "remove": [] });
                        (cr, f, op, Json::Null)
                    })
            })
    })
}

fn round_trip(cx: &Ctx, strategy: MergeStrategy) -> Checked {
    let Some((cr, f, op, expect)) = round_trip_target(cx, strategy) else {
        return Ok(Outcome::Skip(format!(
            "no field merged with `{strategy}` in the model"
        )));
    };
    let t = cx.token();
    let before = cx.c.head(t)?;
    let version = cr.server["version"].as_i64().unwrap_or(1);
    let r = cx.c.push(
        t,
        vec![update(
            cr.entity,
            cr.id,
            version,
            json!({ f.name.clone(): op }),
        )],
    )?;
    if r[0]["status"] != "applied" {
        return Ok(Outcome::Fail(format!("result {}", r[0])));
    }
    let (changes, _) = cx.c.pull(t, &before, 100)?;
    let Some(ch) = changes.iter().find(|ch| ch["entity_id"] == json!(cr.id)) else {
        return Ok(Outcome::Fail("the change is not in GET /changes".into()));
    };
    let got = &ch["record"][&f.name];
    Ok(if expect.is_null() {
        pass_if(
            got.as_array().is_some_and(|a| a.contains(&sample_item(f))),
            || format!("`{}` is {got}", f.name),
        )
    } else {
        pass_if(*got == expect, || {
            format!("`{}` is {got}, expected {expect}", f.name)
        })
    })
}

fn idempotent_replay(cx: &Ctx) -> Checked {
    let Some((e, variant)) = cx.any_entity() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let m = create(e, Uuid::now_v7(), variant);
    let a = cx.c.push(cx.token(), vec![m.clone()])?;
    let b = cx.c.push(cx.token(), vec![m])?;
    Ok(pass_if(a == b, || format!("first {} then {}", a[0], b[0])))
}

fn key_reused_with_another_body(cx: &Ctx) -> Checked {
    let Some((e, variant)) = cx.any_entity() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let m = create(e, Uuid::now_v7(), variant);
    cx.c.push(cx.token(), vec![m.clone()])?;
    let mut other = create(e, Uuid::now_v7(), variant);
    other["idempotency_key"] = m["idempotency_key"].clone();
    let r = cx.c.push(cx.token(), vec![other])?;
    Ok(pass_if(
        r[0]["status"] == "rejected" && r[0]["problem"]["status"] == 422,
        || format!("result {}", r[0]),
    ))
}

fn manual_conflict(cx: &Ctx) -> Checked {
    let t = cx.token();
    let Some((cr, f)) = cx.created.iter().find_map(|cr| {
        cr.entity
            .synced_fields()
            .find(|f| {
                f.merge == MergeStrategy::Manual
                    && !f.immutable
                    && op_for(f, &cr.server["record"][&f.name]).is_some()
            })
            .map(|f| (cr, f))
    }) else {
        return Ok(Outcome::Skip("no manual field in the model".into()));
    };
    // The record as the server holds it now (earlier checks may have changed it).
    let latest =
        cx.c.records(t)?
            .into_iter()
            .find(|r| r["entity_id"] == json!(cr.id))
            .ok_or("the created record is not in GET /snapshot")?;
    let version = latest["version"].as_i64().unwrap_or(1);
    let (op1, _) = op_for(f, &latest["record"][&f.name]).ok_or("no op")?;
    let mut op2 = op1.clone();
    op2["set"] = json!(match &op1["set"] {
        Json::String(_) => json!("another edit"),
        Json::Number(n) => json!(n.as_f64().unwrap_or(0.0) as i64 + 5),
        Json::Bool(b) => json!(!b),
        other => other.clone(),
    });
    let edit = |op: Json| update(cr.entity, cr.id, version, json!({ f.name.clone(): op }));
    let r1 = cx.c.push(t, vec![edit(op1)])?;
    let r2 = cx.c.push(t, vec![edit(op2)])?;
    Ok(if r1[0]["status"] != "applied" {
        Outcome::Fail(format!("first edit: {}", r1[0]))
    } else if r2[0]["status"] != "conflict" {
        Outcome::Fail(format!("second edit from the same base: {}", r2[0]))
    } else if !r2[0]["fields"]
        .as_array()
        .is_some_and(|a| a.contains(&json!(f.name)))
    {
        Outcome::Fail(format!("`fields` does not name `{}`: {}", f.name, r2[0]))
    } else if r2[0]["server"]["version"].as_i64() <= Some(version) {
        Outcome::Fail("the conflict does not carry the server's newer record".into())
    } else {
        Outcome::Pass
    })
}

fn pagination(cx: &Ctx) -> Checked {
    let Some((e, variant)) = cx.any_entity() else {
        return Ok(Outcome::Skip(NOTHING_CREATED.into()));
    };
    let t = cx.token();
    let before = cx.c.head(t)?;
    let ids: Vec<Uuid> = (0..25).map(|_| Uuid::now_v7()).collect();
    cx.c.push(t, ids.iter().map(|id| create(e, *id, variant)).collect())?;
    let (changes, _) = cx.c.pull(t, &before, 7)?;
    let seen: Vec<String> = changes
        .iter()
        .filter_map(|x| x["entity_id"].as_str().map(str::to_string))
        .collect();
    let unique: BTreeSet<&String> = seen.iter().collect();
    let missing = ids
        .iter()
        .filter(|id| !unique.contains(&id.to_string()))
        .count();
    Ok(if unique.len() != seen.len() {
        Outcome::Fail("a record came twice".into())
    } else if missing > 0 {
        Outcome::Fail(format!("{missing} of 25 records missing"))
    } else {
        Outcome::Pass
    })
}

fn snapshot_then_changes(cx: &Ctx) -> Checked {
    let Some((e, variant)) = cx.any_entity() else {
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
    let token = first_page["token"]
        .as_str()
        .ok_or("no `token`")?
        .to_string();
    let mut cursor = first_page["next_cursor"].as_str().map(str::to_string);
    let mut seen: BTreeSet<String> = ids(&first_page).into_iter().collect();
    let during = Uuid::now_v7();
    cx.c.push(t, vec![create(e, during, variant)])?;
    while let Some(cur) = cursor {
        let page = cx.c.get(t, &snapshot_target(Some(&cur), 5))?;
        if page["token"] != json!(token) {
            return Ok(Outcome::Fail(
                "a later page is pinned to another token".into(),
            ));
        }
        seen.extend(ids(&page));
        cursor = page["next_cursor"].as_str().map(str::to_string);
    }
    let (changes, _) = cx.c.pull(t, &token, 100)?;
    seen.extend(
        changes
            .iter()
            .filter_map(|r| r["entity_id"].as_str().map(str::to_string)),
    );
    let all_created = cx
        .created
        .iter()
        .all(|cr| seen.contains(&cr.id.to_string()));
    Ok(if !seen.contains(&during.to_string()) {
        Outcome::Fail(
            "a record created during the snapshot is in neither the pages nor the changes".into(),
        )
    } else if !all_created {
        Outcome::Fail("a record created before the snapshot is missing".into())
    } else {
        Outcome::Pass
    })
}

fn expired_token(cx: &Ctx) -> Checked {
    let Some(expired) = &cx.opts.expired_token else {
        return Ok(Outcome::Skip(
            "pass --expired-token with a token this server has expired".into(),
        ));
    };
    let (status, ctype, _) = cx.c.call(
        reqwest::Method::GET,
        &changes_target(Some(expired), 100),
        Some(cx.token()),
        None,
    )?;
    Ok(pass_if(
        status == 410 && ctype.starts_with("application/problem+json"),
        || format!("status {status}"),
    ))
}

fn isolation(cx: &Ctx) -> Checked {
    let Some(tb) = &cx.opts.token_b else {
        return Ok(Outcome::Skip(
            "pass --token-b with a token of another account".into(),
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
        return Ok(Outcome::Fail(
            "account B can read account A's record".into(),
        ));
    }
    let field = cr
        .entity
        .synced_fields()
        .find(|f| !f.id && !f.immutable && op_for(f, &cr.server["record"][&f.name]).is_some());
    if let Some(f) = field {
        let (op, _) = op_for(f, &cr.server["record"][&f.name]).expect("checked");
        let r = cx.c.push(
            tb,
            vec![update(
                cr.entity,
                cr.id,
                cr.server["version"].as_i64().unwrap_or(1),
                json!({ f.name.clone(): op }),
            )],
        )?;
        if r[0]["status"] == "applied" {
            return Ok(Outcome::Fail(
                "account B could update account A's record".into(),
            ));
        }
    }
    Ok(Outcome::Pass)
}

fn sample_item(f: &Field) -> Json {
    match &f.ty.kind {
        TypeKind::Set {
            item: ScalarType::String,
            ..
        } => json!("conformance-item"),
        TypeKind::Set { item, .. } if item.is_integer() => json!(7),
        TypeKind::Set {
            item: ScalarType::Uuid,
            ..
        } => json!("01900000-0000-7000-8000-0000000000c1"),
        _ => json!("conformance-item"),
    }
}
