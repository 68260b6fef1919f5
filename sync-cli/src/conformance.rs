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

type Check = Result<(), String>;

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

    /// The current end of the change stream.
    fn head(&self, token: &str) -> Result<String, String> {
        let body = self.get(token, "/snapshot?limit=1")?;
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

/// Runs every check.
pub fn run(model: &Model, opts: &Options) -> Report {
    let c = Client {
        http: reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("an HTTP client"),
        base: opts.base_url.trim_end_matches('/').to_string(),
    };
    let mut report = Report::default();
    let mut check = |name: &str, result: Result<Check, String>| {
        let outcome = match result {
            Ok(Ok(())) => Outcome::Pass,
            Ok(Err(why)) | Err(why) => {
                if let Some(skip) = why.strip_prefix("SKIP: ") {
                    Outcome::Skip(skip.to_string())
                } else {
                    Outcome::Fail(why)
                }
            }
        };
        report.checks.push((name.to_string(), outcome));
    };
    let t = opts.token.as_str();

    check(
        "health: GET /health answers 200",
        (|| {
            let (status, _, _) = c.call(reqwest::Method::GET, "/health", None, None)?;
            Ok(if status == 200 {
                Ok(())
            } else {
                Err(format!("status {status}"))
            })
        })(),
    );

    check(
        "auth: a request without a token is 401 problem+json",
        (|| {
            let (status, ctype, body) = c.call(reqwest::Method::GET, "/changes", None, None)?;
            Ok(if status != 401 {
                Err(format!("status {status}"))
            } else if !ctype.starts_with("application/problem+json") {
                Err(format!("content type `{ctype}`"))
            } else if body["status"] != 401 || !body["title"].is_string() {
                Err(format!("not a problem body: {body}"))
            } else {
                Ok(())
            })
        })(),
    );

    // A record of each entity the server accepts, for the checks below.
    let mut created: Vec<(&Entity, Uuid, usize, Json)> = Vec::new();
    let mut create_failures = Vec::new();
    for e in &model.entities {
        let mut done = false;
        for variant in 0..6 {
            let id = Uuid::now_v7();
            match c.push(t, vec![create(e, id, variant)]) {
                Ok(r) if r.first().is_some_and(|x| x["status"] == "applied") => {
                    created.push((e, id, variant, r[0]["server"].clone()));
                    done = true;
                    break;
                }
                Ok(r) => create_failures.push(format!(
                    "{}: {}",
                    e.name,
                    r.first()
                        .map(|x| x["problem"].to_string())
                        .unwrap_or_default()
                )),
                Err(why) => create_failures.push(why),
            }
        }
        if !done && create_failures.is_empty() {
            create_failures.push(format!("{}: never applied", e.name));
        }
    }
    check(
        "create: a record of every entity is applied",
        Ok(if created.len() == model.entities.len() {
            Ok(())
        } else {
            Err(create_failures.join("; "))
        }),
    );

    for strategy in MergeStrategy::ALL {
        let name = format!("round trip: a `{strategy}` operation is applied and pulled back");
        let target = created.iter().find_map(|(e, id, _, server)| {
            e.synced_fields()
                .filter(|f| !f.id && !f.immutable && f.merge == strategy)
                .find_map(|f| {
                    op_for(f, &server["record"][&f.name]).map(|op| (*e, *id, server.clone(), f, op))
                })
                .or_else(|| {
                    (strategy == MergeStrategy::Union)
                        .then(|| {
                            e.synced_fields()
                                .find(|f| f.merge == MergeStrategy::Union && !f.immutable)
                        })
                        .flatten()
                        .map(|f| {
                            (
                                *e,
                                *id,
                                server.clone(),
                                f,
                                (json!({ "add": [sample_item(f)], "remove": [] }), Json::Null),
                            )
                        })
                })
        });
        let Some((e, id, server, f, (op, expect))) = target else {
            check(
                &name,
                Ok(Err(format!(
                    "SKIP: no field merged with `{strategy}` in the model"
                ))),
            );
            continue;
        };
        check(
            &name,
            (|| {
                let before = c.head(t)?;
                let version = server["version"].as_i64().unwrap_or(1);
                let r = c.push(
                    t,
                    vec![update(e, id, version, json!({ f.name.clone(): op }))],
                )?;
                if r[0]["status"] != "applied" {
                    return Ok(Err(format!("result {}", r[0])));
                }
                let (changes, _) = c.pull(t, &before, 100)?;
                let Some(ch) = changes.iter().find(|ch| ch["entity_id"] == json!(id)) else {
                    return Ok(Err("the change is not in GET /changes".into()));
                };
                let got = &ch["record"][&f.name];
                Ok(if expect.is_null() {
                    if got.as_array().is_some_and(|a| a.contains(&sample_item(f))) {
                        Ok(())
                    } else {
                        Err(format!("`{}` is {got}", f.name))
                    }
                } else if *got == expect {
                    Ok(())
                } else {
                    Err(format!("`{}` is {got}, expected {expect}", f.name))
                })
            })(),
        );
    }

    let first = created.first().map(|(e, _, v, _)| (*e, *v));
    check(
        "idempotency: the same key and body replays the stored result",
        (|| {
            let Some((e, variant)) = first else {
                return Ok(Err("SKIP: nothing could be created".into()));
            };
            let m = create(e, Uuid::now_v7(), variant);
            let a = c.push(t, vec![m.clone()])?;
            let b = c.push(t, vec![m])?;
            Ok(if a == b {
                Ok(())
            } else {
                Err(format!("first {} then {}", a[0], b[0]))
            })
        })(),
    );

    check(
        "idempotency: the same key with another body is rejected with 422",
        (|| {
            let Some((e, variant)) = first else {
                return Ok(Err("SKIP: nothing could be created".into()));
            };
            let m = create(e, Uuid::now_v7(), variant);
            c.push(t, vec![m.clone()])?;
            let mut other = create(e, Uuid::now_v7(), variant);
            other["idempotency_key"] = m["idempotency_key"].clone();
            let r = c.push(t, vec![other])?;
            Ok(
                if r[0]["status"] == "rejected" && r[0]["problem"]["status"] == 422 {
                    Ok(())
                } else {
                    Err(format!("result {}", r[0]))
                },
            )
        })(),
    );

    check(
        "occ: concurrent edits of a manual field give a conflict with the server record",
        (|| {
            let Some((e, id, server, f)) = created.iter().find_map(|(e, id, _, s)| {
                e.synced_fields()
                    .find(|f| {
                        f.merge == MergeStrategy::Manual
                            && !f.immutable
                            && op_for(f, &s["record"][&f.name]).is_some()
                    })
                    .map(|f| (*e, *id, s.clone(), f))
            }) else {
                return Ok(Err("SKIP: no manual field in the model".into()));
            };
            let current = server["version"].as_i64().unwrap_or(1);
            let latest = c
                .pull(t, "t1.0", 1000)
                .ok()
                .and_then(|(ch, _)| ch.into_iter().rfind(|x| x["entity_id"] == json!(id)));
            let (version, value) = latest
                .map(|l| {
                    (
                        l["version"].as_i64().unwrap_or(current),
                        l["record"][&f.name].clone(),
                    )
                })
                .unwrap_or((current, server["record"][&f.name].clone()));
            let (op1, _) = op_for(f, &value).ok_or("no op")?;
            let mut op2 = op1.clone();
            op2["set"] = json!(match &op1["set"] {
                Json::String(_) => json!("another edit"),
                Json::Number(n) => json!(n.as_f64().unwrap_or(0.0) as i64 + 5),
                Json::Bool(b) => json!(!b),
                other => other.clone(),
            });
            let r1 = c.push(
                t,
                vec![update(e, id, version, json!({ f.name.clone(): op1 }))],
            )?;
            let r2 = c.push(
                t,
                vec![update(e, id, version, json!({ f.name.clone(): op2 }))],
            )?;
            Ok(if r1[0]["status"] != "applied" {
                Err(format!("first edit: {}", r1[0]))
            } else if r2[0]["status"] != "conflict" {
                Err(format!("second edit from the same base: {}", r2[0]))
            } else if !r2[0]["fields"]
                .as_array()
                .is_some_and(|a| a.contains(&json!(f.name)))
            {
                Err(format!("`fields` does not name `{}`: {}", f.name, r2[0]))
            } else if r2[0]["server"]["version"].as_i64() <= Some(version) {
                Err("the conflict does not carry the server's newer record".into())
            } else {
                Ok(())
            })
        })(),
    );

    check(
        "pagination: paging through changes loses and repeats nothing",
        (|| {
            let Some((e, variant)) = first else {
                return Ok(Err("SKIP: nothing could be created".into()));
            };
            let before = c.head(t)?;
            let ids: Vec<Uuid> = (0..25).map(|_| Uuid::now_v7()).collect();
            c.push(t, ids.iter().map(|id| create(e, *id, variant)).collect())?;
            let (changes, _) = c.pull(t, &before, 7)?;
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
                Err("a record came twice".into())
            } else if missing > 0 {
                Err(format!("{missing} of 25 records missing"))
            } else {
                Ok(())
            })
        })(),
    );

    check(
        "snapshot: pages then changes since the snapshot token miss nothing",
        (|| {
            let Some((e, variant)) = first else {
                return Ok(Err("SKIP: nothing could be created".into()));
            };
            let first_page = c.get(t, "/snapshot?limit=5")?;
            let token = first_page["token"]
                .as_str()
                .ok_or("no `token`")?
                .to_string();
            let mut cursor = first_page["next_cursor"].as_str().map(str::to_string);
            let mut seen: BTreeSet<String> = first_page["records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["entity_id"].as_str().map(str::to_string))
                .collect();
            let during = Uuid::now_v7();
            c.push(t, vec![create(e, during, variant)])?;
            while let Some(cur) = cursor {
                let page = c.get(t, &snapshot_target(Some(&cur), 5))?;
                if page["token"] != json!(token) {
                    return Ok(Err("a later page is pinned to another token".into()));
                }
                seen.extend(
                    page["records"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r["entity_id"].as_str().map(str::to_string)),
                );
                cursor = page["next_cursor"].as_str().map(str::to_string);
            }
            let (changes, _) = c.pull(t, &token, 100)?;
            seen.extend(
                changes
                    .iter()
                    .filter_map(|r| r["entity_id"].as_str().map(str::to_string)),
            );
            let all_created = created
                .iter()
                .all(|(_, id, _, _)| seen.contains(&id.to_string()));
            Ok(if !seen.contains(&during.to_string()) {
                Err(
                    "a record created during the snapshot is in neither the pages nor the changes"
                        .into(),
                )
            } else if !all_created {
                Err("a record created before the snapshot is missing".into())
            } else {
                Ok(())
            })
        })(),
    );

    check(
        "expiry: an expired change token is 410",
        (|| {
            let Some(expired) = &opts.expired_token else {
                return Ok(Err(
                    "SKIP: pass --expired-token with a token this server has expired".into(),
                ));
            };
            let (status, ctype, _) = c.call(
                reqwest::Method::GET,
                &changes_target(Some(expired), 100),
                Some(t),
                None,
            )?;
            Ok(
                if status == 410 && ctype.starts_with("application/problem+json") {
                    Ok(())
                } else {
                    Err(format!("status {status}"))
                },
            )
        })(),
    );

    check(
        "isolation: another account sees and changes nothing of this one",
        (|| {
            let Some(tb) = &opts.token_b else {
                return Ok(Err(
                    "SKIP: pass --token-b with a token of another account".into()
                ));
            };
            let Some((e, id, _, server)) = created.first() else {
                return Ok(Err("SKIP: nothing could be created".into()));
            };
            let (changes, _) = c.pull(tb, "t1.0", 1000).or_else(|_| {
                let s = c.get(tb, "/snapshot?limit=1000")?;
                Ok::<_, String>((
                    s["records"].as_array().cloned().unwrap_or_default(),
                    String::new(),
                ))
            })?;
            if changes.iter().any(|x| x["entity_id"] == json!(id)) {
                return Ok(Err("account B can read account A's record".into()));
            }
            let field = e
                .synced_fields()
                .find(|f| !f.id && !f.immutable && op_for(f, &server["record"][&f.name]).is_some());
            if let Some(f) = field {
                let (op, _) = op_for(f, &server["record"][&f.name]).expect("checked");
                let r = c.push(
                    tb,
                    vec![update(
                        e,
                        *id,
                        server["version"].as_i64().unwrap_or(1),
                        json!({ f.name.clone(): op }),
                    )],
                )?;
                if r[0]["status"] == "applied" {
                    return Ok(Err("account B could update account A's record".into()));
                }
            }
            Ok(Ok(()))
        })(),
    );

    report
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
