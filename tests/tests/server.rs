//! The reference server over real HTTP on 127.0.0.1, on SQLite and on PostgreSQL
//! (`SYNC_TEST_POSTGRES_URL`; skipped with a message when unset).
#![allow(missing_docs)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value as Json, json};
use support::{Backend, Client, TestServer, latest, project_create, task_create, task_update};
use uuid::Uuid;

both_backends!(
    round_trip_every_merge_strategy,
    idempotent_replay_reuse_and_in_flight,
    occ_conflict_on_manual_fields,
    pagination_loses_nothing,
    snapshot_then_changes_loses_and_repeats_nothing,
    accounts_never_see_each_other,
    bad_input_is_a_problem_and_stores_nothing,
    delete_then_recreate_leaves_nothing_stale,
    expired_tokens_are_410,
    request_ids_and_health,
    a_value_one_backend_refuses_is_that_mutations_422_on_every_backend,
    tokens_not_issued_here_are_refused,
    creates_over_a_tombstone_and_checks,
    a_snapshot_of_one_entity,
    dots_count_a_sum_once_and_reach_only_clients_that_speak_them,
    gaps_keep_what_a_record_lacks_and_count_it_when_it_comes,
    a_retry_rejected_as_unknown_record_is_evaluated_again,
    a_retry_evaluated_again_counts_as_its_first_delivery,
    a_retry_of_a_replaced_key_answers_with_the_mutation_that_carried_it,
    a_transaction_is_applied_all_or_none,
);

async fn round_trip_every_merge_strategy(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    let r = c
        .push(vec![project_create(p, "P"), task_create(t, p)])
        .await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    assert_eq!(r[1]["status"], "applied", "{r:#?}");
    assert_eq!(r[1]["server"]["version"], 1);
    // lww, sum, union and manual in one patch.
    let patch = json!({
        "title": { "set": "new title", "hlc": "000000000009-00000000-0000000000000001" },
        "likes": { "add": 5 },
        "tags": { "add": ["b"], "remove": ["a"] },
        "price_cents": { "set": 250, "base": 100 },
        "meta": { "set": { "k": "v" }, "hlc": "000000000009-00000000-0000000000000001" }
    });
    let r = c.push(vec![task_update(t, 1, patch)]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    let server = &r[0]["server"];
    assert_eq!(server["version"], 2);
    assert_eq!(server["record"]["title"], "new title");
    assert_eq!(server["record"]["likes"], 5);
    assert_eq!(server["record"]["tags"], json!(["b"]));
    assert_eq!(server["record"]["price_cents"], 250);
    assert_eq!(server["record"]["meta"], json!({ "k": "v" }));
    assert_eq!(
        server["clocks"]["title"],
        "000000000009-00000000-0000000000000001"
    );
    // A concurrent patch against version 1: sums add, unions merge, an older lww loses.
    let stale = json!({
        "title": { "set": "older title", "hlc": "000000000005-00000000-0000000000000002" },
        "likes": { "add": 2 },
        "tags": { "add": ["c"], "remove": [] }
    });
    let r = c.push(vec![task_update(t, 1, stale)]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    let rec = &r[0]["server"]["record"];
    assert_eq!(rec["title"], "new title");
    assert_eq!(rec["likes"], 7);
    assert_eq!(rec["tags"], json!(["b", "c"]));

    // Another device pulls it.
    let other = Client::new(&s.url, "token-a");
    let (changes, token) = other.pull_all(None, 100).await;
    let by_id = latest(&changes);
    assert_eq!(by_id.len(), 2);
    assert_eq!(by_id[&t.to_string()]["record"], *rec);
    assert_eq!(by_id[&t.to_string()]["version"], 3);
    // Nothing new after the token.
    let (more, _) = other.pull_all(Some(&token), 100).await;
    assert!(more.is_empty());
}

async fn idempotent_replay_reuse_and_in_flight(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    c.push(vec![project_create(p, "P"), task_create(t, p)])
        .await;
    let m = task_update(t, 1, json!({ "likes": { "add": 1 } }));
    let first = c.push(vec![m.clone()]).await;
    // The response was lost; the client retries with the same key and body.
    let replay = c.push(vec![m.clone()]).await;
    assert_eq!(first, replay, "same key, same body: the stored result");
    let (changes, _) = c.pull_all(None, 100).await;
    assert_eq!(
        latest(&changes)[&t.to_string()]["record"]["likes"],
        1,
        "counted once"
    );

    // Same key, another body.
    let mut other = m.clone();
    other["patch"] = json!({ "likes": { "add": 100 } });
    let r = c.push(vec![other]).await;
    assert_eq!(r[0]["status"], "rejected");
    assert_eq!(r[0]["problem"]["status"], 422);
    assert!(
        r[0]["problem"]["detail"]
            .as_str()
            .unwrap()
            .contains("another mutation")
    );

    // A key whose first request is still being processed.
    let busy = task_update(t, 2, json!({ "likes": { "add": 1 } }));
    let key = busy["idempotency_key"].as_str().unwrap();
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
    let ts = if s.backend == Backend::Postgres {
        format!("'{now}'::timestamptz")
    } else {
        format!("'{now}'")
    };
    s.sql(&format!(
        "INSERT INTO sync_idempotency (sync_account, idempotency_key, request_hash, state, created_at, expires_at) VALUES ('account-a', '{key}', 'x', 'in_flight:other', {ts}, {ts})"
    ))
    .await;
    let (status, body) = c.post("/push", &json!({ "mutations": [busy] })).await;
    assert_eq!(status, 409, "{body:#}");
    assert_eq!(
        body["type"],
        "https://syncgen.dev/problems/request-in-progress"
    );
}

async fn occ_conflict_on_manual_fields(s: &TestServer) {
    let a = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    a.push(vec![project_create(p, "P"), task_create(t, p)])
        .await;
    let r = a
        .push(vec![task_update(
            t,
            1,
            json!({ "price_cents": { "set": 200, "base": 100 } }),
        )])
        .await;
    assert_eq!(r[0]["status"], "applied");
    // Device B edited the price from the same base, and liked it.
    let r = a
        .push(vec![task_update(
            t,
            1,
            json!({ "price_cents": { "set": 300, "base": 100 }, "likes": { "add": 1 } }),
        )])
        .await;
    assert_eq!(r[0]["status"], "conflict", "{r:#?}");
    assert_eq!(r[0]["fields"], json!(["price_cents"]));
    assert_eq!(r[0]["server"]["record"]["price_cents"], 200);
    assert_eq!(r[0]["server"]["version"], 2);
    assert_eq!(
        r[0]["server"]["record"]["likes"], 0,
        "nothing of a conflicting patch is applied"
    );
    // The same change against the current version applies.
    let r = a
        .push(vec![task_update(
            t,
            2,
            json!({ "price_cents": { "set": 300, "base": 200 } }),
        )])
        .await;
    assert_eq!(r[0]["status"], "applied");
}

async fn pagination_loses_nothing(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let p = Uuid::now_v7();
    c.push(vec![project_create(p, "P")]).await;
    let mut ids = BTreeSet::new();
    for chunk in 0..5 {
        let batch: Vec<Json> = (0..50)
            .map(|_| {
                let t = Uuid::now_v7();
                ids.insert(t.to_string());
                task_create(t, p)
            })
            .collect();
        let r = c.push(batch).await;
        assert!(r.iter().all(|x| x["status"] == "applied"), "chunk {chunk}");
    }
    let mut token: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let path = match &token {
            Some(t) => format!("/changes?since={t}&limit=37"),
            None => "/changes?limit=37".into(),
        };
        let (status, body) = c.get(&path).await;
        assert_eq!(status, 200);
        pages += 1;
        for ch in body["changes"].as_array().unwrap() {
            seen.push(ch["entity_id"].as_str().unwrap().to_string());
        }
        let next = body["next_token"].as_str().unwrap().to_string();
        if let Some(prev) = &token {
            assert_ne!(prev, &next, "the token advances every page");
        }
        token = Some(next);
        if !body["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert!(pages >= 7, "{pages} pages");
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no record twice");
    assert!(ids.is_subset(&unique), "no record lost");
    assert_eq!(unique.len(), ids.len() + 1);
}

async fn snapshot_then_changes_loses_and_repeats_nothing(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let p = Uuid::now_v7();
    c.push(vec![project_create(p, "P")]).await;
    let tasks: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    c.push(tasks.iter().map(|t| task_create(*t, p)).collect())
        .await;

    // First page, then changes happen during the snapshot.
    let (_, first) = c.get("/snapshot?limit=15").await;
    let mut records: Vec<Json> = first["records"].as_array().unwrap().clone();
    let mut cursor = first["next_cursor"].as_str().map(str::to_string);
    let mut token = first["token"].as_str().unwrap().to_string();
    // The sequence number a token continues after (`t2.<seq>.<tag>`, `t3.<seq>.<seen>.<tag>`).
    let seq_of = |t: &str| t.split('.').nth(1).unwrap().to_string();
    let pinned = seq_of(&token);
    let read: BTreeSet<String> = records
        .iter()
        .map(|r| r["entity_id"].as_str().unwrap().to_string())
        .collect();
    let early = tasks
        .iter()
        .find(|t| read.contains(&t.to_string()))
        .copied()
        .unwrap();
    let late = *tasks.last().unwrap();
    assert!(!read.contains(&late.to_string()));
    c.push(vec![
        task_update(early, 1, json!({ "likes": { "add": 1 } })),
        task_update(late, 1, json!({ "likes": { "add": 2 } })),
        task_create(Uuid::now_v7(), p),
    ])
    .await;
    let deleted = tasks[20];
    c.push(vec![json!({
        "idempotency_key": Uuid::new_v4().to_string(), "entity_type": "task", "entity_id": deleted,
        "op": "delete", "base_version": 1, "hlc": "000000000009-00000000-0000000000000001"
    })])
    .await;
    while let Some(cur) = cursor {
        let (status, page) = c.get(&format!("/snapshot?cursor={cur}&limit=15")).await;
        assert_eq!(status, 200, "{page:#}");
        // Every page is pinned where the first was; a later page's token also names the
        // newest change the server saw (FEED-2), and the client continues with the last.
        token = page["token"].as_str().unwrap().to_string();
        assert_eq!(
            seq_of(&token),
            pinned,
            "every page is pinned at the first's"
        );
        records.extend(page["records"].as_array().unwrap().iter().cloned());
        cursor = page["next_cursor"].as_str().map(str::to_string);
    }
    assert!(
        token.starts_with("t3."),
        "names the changes made while paging: {token}"
    );
    let (changes, _) = c.pull_all(Some(&token), 100).await;
    // Every change (a record at a version) is delivered once: in a page if it happened
    // before the pinned token, by `changes` if after.
    let delivered: Vec<(String, i64)> = records
        .iter()
        .chain(&changes)
        .map(|r| {
            (
                r["entity_id"].as_str().unwrap().to_string(),
                r["version"].as_i64().unwrap(),
            )
        })
        .collect();
    let unique: BTreeSet<&(String, i64)> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "no change delivered twice");
    let in_pages: BTreeSet<String> = records
        .iter()
        .map(|r| r["entity_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        in_pages.len(),
        records.len(),
        "no record twice in the pages"
    );
    assert!(
        in_pages.contains(&early.to_string()),
        "read before its change"
    );
    assert!(
        !in_pages.contains(&late.to_string()),
        "changed after the pin: only in changes"
    );
    // Replaying gives the server's state.
    let mut state: BTreeMap<String, Json> = BTreeMap::new();
    for r in records.iter().chain(&changes) {
        state.insert(r["entity_id"].as_str().unwrap().to_string(), r.clone());
    }
    let live: BTreeMap<&String, &Json> = state
        .iter()
        .filter(|(_, r)| r["deleted"] == false)
        .collect();
    assert_eq!(
        live.len(),
        1 + 40 + 1 - 1,
        "project, 40 tasks, a new one, minus the deleted"
    );
    assert_eq!(state[&early.to_string()]["record"]["likes"], 1);
    assert_eq!(state[&late.to_string()]["record"]["likes"], 2);
    assert_eq!(state[&deleted.to_string()]["deleted"], true);
}

async fn accounts_never_see_each_other(s: &TestServer) {
    let a = Client::new(&s.url, "token-a");
    let b = Client::new(&s.url, "token-b");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    a.push(vec![project_create(p, "A's"), task_create(t, p)])
        .await;
    let (changes, _) = b.pull_all(None, 100).await;
    assert!(changes.is_empty());
    let (_, snap) = b.get("/snapshot").await;
    assert_eq!(snap["records"], json!([]));
    // B cannot touch A's record, even knowing its id.
    let r = b
        .push(vec![task_update(t, 1, json!({ "likes": { "add": 1 } }))])
        .await;
    assert_eq!(r[0]["status"], "rejected");
    assert_eq!(r[0]["problem"]["status"], 422);
    // And B's records of the same id are B's own.
    let r = b.push(vec![project_create(p, "B's")]).await;
    assert_eq!(r[0]["status"], "applied");
    let (changes, _) = a.pull_all(None, 100).await;
    assert_eq!(latest(&changes)[&p.to_string()]["record"]["name"], "A's");
    assert_eq!(latest(&changes)[&t.to_string()]["record"]["likes"], 0);
}

async fn bad_input_is_a_problem_and_stores_nothing(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let http = reqwest::Client::new();
    let send = |body: &'static str, token: Option<&'static str>| {
        let mut req = http
            .post(format!("{}/push", s.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    for (body, token, status) in [
        ("{not json", Some("token-a"), 400),
        ("{\"mutations\": 3}", Some("token-a"), 422),
        ("{\"mutations\": [], \"extra\": 1}", Some("token-a"), 422),
        ("{\"mutations\": []}", None, 401),
        ("{\"mutations\": []}", Some("wrong"), 401),
    ] {
        let res = send(body, token).await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let p: Json = res.json().await.unwrap();
        assert_eq!(p["status"], status);
        assert!(
            p["detail"].is_string() && p["title"].is_string() && p["type"].is_string(),
            "{p:#}"
        );
    }
    let p = Uuid::now_v7();
    let results = c
        .push(vec![
            json!({ "idempotency_key": "k1", "entity_type": "invoice", "entity_id": p, "op": "create", "record": {} }),
            json!({ "idempotency_key": "k2", "entity_type": "project", "entity_id": p, "op": "create",
                    "record": { "id": p, "name": 42, "created_at": "2026-01-01T00:00:00Z" } }),
            json!({ "idempotency_key": "k3", "entity_type": "project", "entity_id": p, "op": "create",
                    "record": { "id": p, "name": "ok", "created_at": "not a time" } }),
            json!({ "idempotency_key": "k4", "entity_type": "task", "entity_id": p, "op": "update", "base_version": 1,
                    "patch": { "likes": { "add": "many" } } }),
        ])
        .await;
    for r in &results {
        assert_eq!(r["status"], "rejected", "{r:#}");
        assert_eq!(r["problem"]["status"], 422);
    }
    assert!(
        results[0]["problem"]["detail"]
            .as_str()
            .unwrap()
            .contains("`invoice`")
    );
    assert!(
        results[1]["problem"]["detail"]
            .as_str()
            .unwrap()
            .contains("name"),
        "{:#}",
        results[1]
    );
    let (changes, _) = c.pull_all(None, 100).await;
    assert!(changes.is_empty(), "nothing stored");
    // Limits.
    let big: Vec<Json> = (0..501)
        .map(|_| project_create(Uuid::now_v7(), "x"))
        .collect();
    let (status, body) = c.post("/push", &json!({ "mutations": big })).await;
    assert_eq!(status, 413, "{body:#}");
    // An oversized body is answered 413 as soon as the limit is passed; the server then
    // closes the connection, so the client may also see its upload cut short. A client
    // of its own keeps that connection out of the shared pool.
    let huge = json!({ "mutations": [], "pad": "x".repeat(5 << 20) }).to_string();
    match reqwest::Client::new()
        .post(format!("{}/push", s.url))
        .bearer_auth("token-a")
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
    {
        Ok(res) => assert_eq!(res.status().as_u16(), 413),
        Err(e) => assert!(e.is_request() || e.is_body(), "{e}"),
    }
    let (status, body) = c.get("/changes?since=nonsense").await;
    assert_eq!(status, 400);
    assert_eq!(body["type"], "https://syncgen.dev/problems/invalid-token");
    let (status, _) = c.get("/changes?limit=-3").await;
    assert_eq!(status, 400);
    let (status, body) = c.get("/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["status"], 404);
}

async fn delete_then_recreate_leaves_nothing_stale(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    c.push(vec![project_create(p, "P"), task_create(t, p)])
        .await;
    c.push(vec![task_update(
        t,
        1,
        json!({ "likes": { "add": 9 }, "tags": { "add": ["stale"] } }),
    )])
    .await;
    let mut fresh = task_create(t, p);
    fresh["base_version"] = json!(3);
    fresh["record"]["title"] = json!("new");
    fresh["record"]["tags"] = json!([]);
    let r = c
        .push(vec![
            json!({ "idempotency_key": Uuid::new_v4().to_string(), "entity_type": "task", "entity_id": t,
                    "op": "delete", "base_version": 2, "hlc": "000000000009-00000000-0000000000000001" }),
            fresh,
        ])
        .await;
    assert_eq!(r[0]["server"]["deleted"], true);
    assert_eq!(r[1]["status"], "applied", "{r:#?}");
    let rec = &r[1]["server"]["record"];
    assert_eq!(rec["likes"], 0);
    assert_eq!(rec["tags"], json!([]));
    assert_eq!(rec["title"], "new");
    assert_eq!(r[1]["server"]["version"], 4);
    assert_eq!(r[1]["server"]["deleted"], false);
}

async fn expired_tokens_are_410(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    c.push(vec![project_create(p, "P"), task_create(t, p)])
        .await;
    let (_, old_token) = c.pull_all(None, 100).await;
    let early = "t1.0";
    c.push(vec![json!({ "idempotency_key": Uuid::new_v4().to_string(), "entity_type": "task", "entity_id": t,
                        "op": "delete", "base_version": 1, "hlc": "000000000009-00000000-0000000000000001" })])
        .await;
    let removed = s
        .server
        .collect_garbage(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(removed, 1, "the tombstone");
    let (status, body) = c.get(&format!("/changes?since={early}")).await;
    assert_eq!(status, 410, "{body:#}");
    assert_eq!(body["type"], "https://syncgen.dev/problems/token-expired");
    let (status, _) = c.get(&format!("/changes?since={old_token}")).await;
    assert_eq!(status, 410);
    // A new snapshot gives a token that works.
    let (_, snap) = c.get("/snapshot").await;
    assert_eq!(snap["records"].as_array().unwrap().len(), 1, "the project");
    let (status, _) = c
        .get(&format!(
            "/changes?since={}",
            snap["token"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200);
}

async fn request_ids_and_health(s: &TestServer) {
    let http = reqwest::Client::new();
    let res = http.get(format!("{}/health", s.url)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    let body: Json = res.json().await.unwrap();
    assert_eq!(body["fingerprint"], s.server.fingerprint());
    assert_eq!(body["protocol"], sync_runtime::protocol::PROTOCOL_VERSION);
    let res = http.get(format!("{}/changes", s.url)).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let p: Json = res.json().await.unwrap();
    assert_eq!(p["instance"], format!("urn:request:{id}"));
}

/// Issue "Nothing lost at the edges", class 5: five creates in one push, one task title
/// holding a NUL (PostgreSQL's text cannot store it; SQLite's can). On every backend the
/// four good ones are applied and the bad one alone is a 422 naming the field; a patch
/// carrying such a value, or a timestamp past year 9999, is refused the same way.
async fn a_value_one_backend_refuses_is_that_mutations_422_on_every_backend(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let p = Uuid::now_v7();
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut mutations = vec![project_create(p, "P")];
    for (n, id) in ids.iter().enumerate() {
        let mut m = task_create(*id, p);
        if n == 2 {
            m["record"]["title"] = json!("bad\u{0}title");
        }
        mutations.push(m);
    }
    let r = c.push(mutations).await;
    let statuses: Vec<&str> = r.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        ["applied", "applied", "applied", "rejected", "applied"],
        "{r:#?}"
    );
    let problem = &r[3]["problem"];
    assert_eq!(problem["status"], 422, "{problem:#?}");
    assert!(
        problem["detail"].as_str().unwrap().contains("`title`")
            && problem["detail"].as_str().unwrap().contains("NUL"),
        "{problem:#?}"
    );
    // A patch with a NUL in a set element, and one with a timestamp past 9999.
    let r = c
        .push(vec![
            task_update(ids[0], 1, json!({ "tags": { "add": ["x\u{0}"], "remove": [] } })),
            task_update(
                ids[1],
                1,
                json!({ "due": { "set": "+10000-01-01T00:00:00Z", "hlc": "000000000009-00000000-0000000000000001" } }),
            ),
            task_update(ids[3], 1, json!({ "likes": { "add": 1 } })),
        ])
        .await;
    let statuses: Vec<&str> = r.iter().map(|x| x["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["rejected", "rejected", "applied"], "{r:#?}");
    assert!(
        r[0]["problem"]["detail"]
            .as_str()
            .unwrap()
            .contains("`tags`"),
        "{r:#?}"
    );
    // Nothing of the refused mutations was stored.
    let (changes, _) = c.pull_all(None, 100).await;
    let latest = latest(&changes);
    assert!(!latest.contains_key(&ids[2].to_string()));
    assert_eq!(latest[&ids[0].to_string()]["record"]["tags"], json!(["a"]));
    assert_eq!(latest[&ids[1].to_string()]["record"]["due"], Json::Null);
}

/// Issue "Nothing lost at the edges", class 6: `GET /changes?since=` with a token ahead of
/// the account's counter, another account's token, or a token whose change this database
/// does not hold (restored, replaced) is 410 `token-unknown`, never 200 with nothing;
/// snapshot cursors are checked the same way. A token this server issued still works.
async fn tokens_not_issued_here_are_refused(s: &TestServer) {
    let a = Client::new(&s.url, "token-a");
    let b = Client::new(&s.url, "token-b");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    a.push(vec![project_create(p, "P"), task_create(t, p)])
        .await;
    let (_, token_a) = a.pull_all(None, 100).await;
    let seq: i64 = token_a.split('.').nth(1).unwrap().parse().unwrap();
    let tag = token_a.split('.').nth(2).unwrap();
    let unknown = "https://syncgen.dev/problems/token-unknown";
    for bad in [
        format!("t2.{}.{tag}", seq + 5),
        format!("t2.{seq}.0000000000000000"),
        format!("t1.{}", seq + 1),
    ] {
        let (status, body) = a.get(&format!("/changes?since={bad}")).await;
        assert_eq!(status, 410, "{bad}: {body:#}");
        assert_eq!(body["type"], unknown, "{bad}");
    }
    // Another account's token, even at a sequence number B has reached.
    b.push(vec![
        project_create(Uuid::now_v7(), "B1"),
        project_create(Uuid::now_v7(), "B2"),
    ])
    .await;
    let (status, body) = b.get(&format!("/changes?since={token_a}")).await;
    assert_eq!(status, 410, "{body:#}");
    assert_eq!(body["type"], unknown);
    // A snapshot cursor with a forged pin.
    let (_, page) = a.get("/snapshot?limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let parts: Vec<&str> = cursor.splitn(4, '.').collect();
    let forged = format!("s2.{}.ffffffffffffffff.{}", parts[1], parts[3]);
    let (status, body) = a.get(&format!("/snapshot?cursor={forged}")).await;
    assert_eq!(status, 410, "{body:#}");
    assert_eq!(body["type"], unknown);
    // The real ones work, and the snapshot's token continues it.
    let (status, _) = a.get(&format!("/snapshot?cursor={cursor}")).await;
    assert_eq!(status, 200);
    let (status, body) = a.get(&format!("/changes?since={token_a}")).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["next_token"], token_a.as_str());
}

/// Issue "Nothing lost at the edges" (restores): a create over a tombstone is a recreate
/// only when made after the delete (it names the tombstone's version, or is stamped
/// later than the delete, whose stamp the tombstone keeps); an update with an empty
/// patch (a device checking a record) changes nothing; and a create whose stamps the
/// live record already carries (its first delivery was applied) is answered as applied.
async fn creates_over_a_tombstone_and_checks(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    let stamp = |n: u8| format!("0000000000{n:02x}-00000000-0000000000000001");
    let create = |clocks_at: u8, base: Option<i64>, title: &str| {
        let mut m = task_create(t, p);
        m["record"]["title"] = json!(title);
        m["clocks"] = json!({ "title": stamp(clocks_at) });
        m["base_version"] = json!(base);
        m
    };
    let delete = |base: i64, at: u8| {
        json!({ "idempotency_key": Uuid::new_v4().to_string(), "entity_type": "task",
                "entity_id": t, "op": "delete", "base_version": base, "hlc": stamp(at) })
    };
    let r = c
        .push(vec![project_create(p, "P"), create(0x05, None, "first")])
        .await;
    assert_eq!(r[1]["status"], "applied", "{r:#?}");
    // A check: nothing changes, no new version.
    let r = c.push(vec![task_update(t, 1, json!({}))]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    assert_eq!(r[0]["server"]["version"], 1);
    // The first create again, under another key (its first delivery's key lost):
    // already in the record.
    let r = c.push(vec![create(0x05, None, "first")]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    assert_eq!(r[0]["server"]["version"], 1);
    let r = c.push(vec![delete(1, 0x09)]).await;
    assert_eq!(r[0]["server"]["deleted"], true, "{r:#?}");
    assert_eq!(r[0]["server"]["version"], 2);
    assert_eq!(
        r[0]["server"]["clocks"]["title"],
        stamp(0x09),
        "the delete's stamp"
    );
    // Made before the delete: the delete wins.
    let r = c.push(vec![create(0x07, None, "stale")]).await;
    assert_eq!(r[0]["status"], "conflict", "{r:#?}");
    assert_eq!(r[0]["server"]["deleted"], true);
    // Made after it: a recreate.
    let (changes, _) = c.changes_as("1.3.3").await;
    assert!(
        changes[&t.to_string()].get("life_since").is_none(),
        "a first life (and its tombstone) names none: {changes:#?}"
    );
    let r = c.push(vec![create(0x0b, None, "again")]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    assert_eq!(r[0]["server"]["version"], 3);
    // A recreate begins a life (PROTOCOL.md SUM-4), for clients of 1.3.3 only.
    let (changes, _) = c.changes_as("1.3.3").await;
    assert_eq!(changes[&t.to_string()]["life_since"], 3, "{changes:#?}");
    let (changes, _) = c.changes_as("1.3.2").await;
    assert!(changes[&t.to_string()].get("life_since").is_none());
    let r = c.push(vec![delete(3, 0x0c)]).await;
    assert_eq!(r[0]["server"]["version"], 4, "{r:#?}");
    // From a device that saw an older version (2), however late its stamp: it never saw
    // this delete, which wins.
    let r = c.push(vec![create(0x0f, Some(2), "never saw it")]).await;
    assert_eq!(r[0]["status"], "conflict", "{r:#?}");
    // From a device that saw this tombstone: a recreate.
    let r = c.push(vec![create(0x03, Some(4), "saw it")]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    assert_eq!(r[0]["server"]["record"]["title"], "saw it");
    let life = r[0]["server"]["version"].clone();
    // A record's versions stay above every version a device reports having seen.
    let r = c
        .push(vec![task_update(t, 9, json!({ "likes": { "add": 1 } }))])
        .await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    assert_eq!(r[0]["server"]["version"], 10);
    let (changes, _) = c.changes_as("1.3.3").await;
    assert_eq!(
        changes[&t.to_string()]["life_since"],
        life,
        "an update keeps the life: {changes:#?}"
    );
    // Deleted and collected: the slim tombstone keeps answering the same way.
    let r = c.push(vec![delete(10, 0x10)]).await;
    assert_eq!(r[0]["server"]["deleted"], true, "{r:#?}");
    let removed = s
        .server
        .collect_garbage(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(removed, 1);
    let r = c.push(vec![create(0x11, None, "stale")]).await;
    assert_eq!(r[0]["status"], "conflict", "made before the delete: {r:#?}");
    assert_eq!(r[0]["server"]["deleted"], true);
    let r = c.push(vec![task_update(t, 10, json!({}))]).await;
    assert_eq!(r[0]["status"], "conflict", "collected: {r:#?}");
    assert_eq!(r[0]["server"]["record"], json!({}));
    // A record this server never held is not taken for a collected one.
    let never = Uuid::now_v7();
    let r = c.push(vec![task_update(never, 1, json!({}))]).await;
    assert_eq!(r[0]["status"], "rejected", "{r:#?}");
    assert_eq!(
        r[0]["problem"]["type"],
        "https://syncgen.dev/problems/unknown-record"
    );
    // The slim tombstone keeps the delete's commit time, and the tombstone's clocks may
    // have lain up to the clock skew bound (60 s) past it (PUSH-4): a create stamped
    // within that bound, naming no version, is taken as made before the delete
    // (CREATE-4; simulation seed 27678).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let now = chrono::Utc::now().timestamp_millis();
    let mut m = task_create(t, p);
    m["clocks"] = json!({ "title": format!("{now:012x}-00000000-0000000000000001") });
    let r = c.push(vec![m]).await;
    assert_eq!(r[0]["status"], "conflict", "{r:#?}");
    // A recreate stamped past the bound is one (the server brings the stamp back to
    // its time plus the bound, still later than the delete's commit time plus it).
    let ahead = now + 61_000;
    let mut m = task_create(t, p);
    m["clocks"] = json!({ "title": format!("{ahead:012x}-00000000-0000000000000001") });
    let r = c.push(vec![m]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    // After its tombstone was collected too.
    let records = c.snapshot_as("1.3.3").await;
    let version = r[0]["server"]["version"].clone();
    assert_eq!(
        records[&t.to_string()]["life_since"],
        version,
        "{records:#?}"
    );
}

/// `GET /snapshot?entity=...`: one entity's records, page by page (what a device fetches
/// again after a migration gave that entity new fields); an unknown entity, or a cursor
/// of another entity's snapshot, is 400.
async fn a_snapshot_of_one_entity(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let p = Uuid::now_v7();
    let mut mutations = vec![project_create(p, "P")];
    let tasks: BTreeSet<String> = (0..5)
        .map(|_| {
            let t = Uuid::now_v7();
            mutations.push(task_create(t, p));
            t.to_string()
        })
        .collect();
    let r = c.push(mutations).await;
    assert!(r.iter().all(|r| r["status"] == "applied"), "{r:#?}");
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(k) => format!("/snapshot?entity=task&limit=2&cursor={k}"),
            None => "/snapshot?entity=task&limit=2".to_string(),
        };
        let (status, page) = c.get(&path).await;
        assert_eq!(status, 200, "{page:#}");
        for r in page["records"].as_array().unwrap() {
            assert_eq!(r["entity_type"], "task", "{page:#}");
            seen.insert(r["entity_id"].as_str().unwrap().to_string());
        }
        if page["has_more"] != true {
            break;
        }
        cursor = Some(page["next_cursor"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, tasks);
    let (status, problem) = c.get("/snapshot?entity=nothing").await;
    assert_eq!(
        (
            status,
            problem["type"].as_str().unwrap().ends_with("invalid-query")
        ),
        (400, true),
        "{problem:#}"
    );
    let (_, page) = c.get("/snapshot?entity=task&limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (status, problem) = c
        .get(&format!("/snapshot?entity=project&cursor={cursor}"))
        .await;
    assert_eq!(status, 400, "{problem:#}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("another entity"),
        "{problem:#}"
    );
}

/// PROTOCOL.md SUM-2: a `sum` delta whose dot the record holds is not added again (also
/// when its create comes again as a create of the live record); records carry their
/// dots only to a client that says it speaks protocol 1.3.0; a malformed dot is that
/// mutation's 422 alone; the response says the server's protocol.
async fn dots_count_a_sum_once_and_reach_only_clients_that_speak_them(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    let dot = |seq: u64| json!({ "session": "00000000000000ab", "seq": seq });
    let mut create = task_create(t, p);
    create["dot"] = dot(1);
    let r = c.push(vec![project_create(p, "p"), create.clone()]).await;
    assert_eq!(r[1]["status"], "applied", "{r:#?}");
    // The same create under another key (its first delivery's key lost in a restore,
    // say): in the record already.
    create["idempotency_key"] = json!(Uuid::new_v4().to_string());
    let r = c.push(vec![create]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    let add = |seq: u64, n: i64| {
        let mut m = task_update(
            t,
            1,
            json!({ "likes": { "add": n }, "title": { "set": format!("t{seq}"), "hlc": format!("0000000000{seq:02}-00000000-0000000000000001") } }),
        );
        m["dot"] = dot(seq);
        m
    };
    let r = c.push(vec![add(2, 5), add(2, 5), add(3, 1)]).await;
    assert!(r.iter().all(|r| r["status"] == "applied"), "{r:#?}");
    let server = &r[2]["server"];
    assert_eq!(server["record"]["likes"], 6, "+5 once, +1: {server:#}");
    assert!(
        server.get("dots").is_none(),
        "not for a client of 1.2: {server:#}"
    );
    // A client of 1.3.0 sees the dots, in push results and pulls alike.
    let (changes, protocol) = c.changes_as_1_3().await;
    assert_eq!(
        protocol.as_deref(),
        Some(sync_runtime::protocol::PROTOCOL_VERSION)
    );
    let task = &changes[&t.to_string()];
    assert_eq!(task["dots"], json!({ "00000000000000ab": 3 }), "{task:#}");
    let project = &changes[&p.to_string()];
    assert!(
        project.get("dots").is_none(),
        "none, none sent: {project:#}"
    );
    // A dot of another form is that mutation's 422, pointing at it.
    let mut bad = add(4, 1);
    bad["dot"]["session"] = json!("XYZ");
    let mut zero = add(5, 1);
    zero["dot"]["seq"] = json!(0);
    let r = c.push(vec![bad, zero, add(6, 1)]).await;
    assert_eq!(r[0]["problem"]["pointer"], "/dot/session", "{r:#?}");
    assert_eq!(r[1]["problem"]["pointer"], "/dot/seq", "{r:#?}");
    assert_eq!(r[2]["server"]["record"]["likes"], 7, "{r:#?}");
}

/// PROTOCOL.md SUM-3: a dot whose `prev` is above what the record holds of its session
/// leaves a gap; a contribution inside the gap counts once when it comes, and splits it
/// by its own `prev`; gaps reach only clients of 1.3.2; a `prev` not below `seq` and
/// malformed `dot_gaps` are that mutation's 422 alone.
async fn gaps_keep_what_a_record_lacks_and_count_it_when_it_comes(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    let r = c
        .push(vec![project_create(p, "p"), task_create(t, p)])
        .await;
    assert_eq!(r[1]["status"], "applied", "{r:#?}");
    let add = |prev: u64, seq: u64, n: i64| {
        let mut m = task_update(t, 1, json!({ "likes": { "add": n } }));
        m["dot"] = json!({ "session": "00000000000000cd", "seq": seq, "prev": prev });
        m
    };
    // Seq 8 first (its session's previous dot of the record: 7): 1 to 7 are lacking.
    let r = c.push(vec![add(7, 8, 4)]).await;
    assert_eq!(r[0]["server"]["record"]["likes"], 4, "{r:#?}");
    let (changes, _) = c.changes_as("1.3.2").await;
    let task = &changes[&t.to_string()];
    assert_eq!(task["dots"], json!({ "00000000000000cd": 8 }), "{task:#}");
    assert_eq!(task["dot_gaps"], json!({ "00000000000000cd": [[1, 7]] }));
    let (changes, _) = c.changes_as("1.3.1").await;
    assert!(
        changes[&t.to_string()].get("dot_gaps").is_none(),
        "not for 1.3.1"
    );
    // Seq 5 (previous: 3) comes late: counted once, under any key.
    let r = c.push(vec![add(3, 5, 2), add(3, 5, 2)]).await;
    assert_eq!(r[1]["server"]["record"]["likes"], 6, "+2 once: {r:#?}");
    let (changes, _) = c.changes_as("1.3.2").await;
    assert_eq!(
        changes[&t.to_string()]["dot_gaps"],
        json!({ "00000000000000cd": [[1, 3], [6, 7]] })
    );
    // Seq 8 again: held.
    let r = c.push(vec![add(7, 8, 4)]).await;
    assert_eq!(r[0]["server"]["record"]["likes"], 6, "{r:#?}");
    // Malformed: `prev` not below `seq`; gaps outside the dots.
    let mut create = task_create(Uuid::now_v7(), p);
    create["dots"] = json!({ "00000000000000cd": 3 });
    create["dot_gaps"] = json!({ "00000000000000cd": [[2, 5]] });
    let r = c.push(vec![add(9, 9, 1), create, add(8, 9, 1)]).await;
    assert_eq!(r[0]["problem"]["pointer"], "/dot/prev", "{r:#?}");
    assert_eq!(r[1]["problem"]["pointer"], "/dot_gaps", "{r:#?}");
    assert_eq!(r[2]["server"]["record"]["likes"], 7, "{r:#?}");
}

/// PROTOCOL.md IDEM-1's exception: a mutation rejected as `unknown-record` is evaluated
/// again when retried (simulation seed 35783: the record a restored server lost was sent
/// again by another device meanwhile); other rejections replay.
async fn a_retry_rejected_as_unknown_record_is_evaluated_again(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    let update = task_update(t, 1, json!({ "likes": { "add": 2 } }));
    let r = c.push(vec![update.clone()]).await;
    assert!(
        r[0]["problem"]["type"]
            .as_str()
            .unwrap()
            .ends_with("unknown-record"),
        "{r:#?}"
    );
    let r = c
        .push(vec![project_create(p, "p"), task_create(t, p)])
        .await;
    assert_eq!(r[1]["status"], "applied", "{r:#?}");
    let r = c.push(vec![update.clone()]).await;
    assert_eq!(r[0]["status"], "applied", "evaluated again: {r:#?}");
    assert_eq!(r[0]["server"]["record"]["likes"], 2);
    // Now applied, it replays (counted once).
    let r = c.push(vec![update]).await;
    assert_eq!(r[0]["server"]["record"]["likes"], 2, "{r:#?}");
    // Another rejection replays as it was.
    let mut bad = task_update(t, 1, json!({ "likes": { "add": "x" } }));
    bad["idempotency_key"] = json!("bad-key");
    let first = c.push(vec![bad.clone()]).await;
    let again = c.push(vec![bad]).await;
    assert_eq!(first[0]["status"], "rejected");
    assert_eq!(first, again);
}

/// The other side of IDEM-1's exception (simulation seed 7316): the device that was told
/// `unknown-record` sent the record again as a create carrying the update's dot; a copy
/// of that device restored from a backup of its own database (the update still unsent
/// there) sends the update again under its key, with a dot of its new session (a runtime
/// that drew dots at first sending, or a backup that held the item without one). The
/// retry counts as its first delivery: its dot is the first one, which the record
/// holds, so its `sum` operations are not applied again (the rest of its patch is).
async fn a_retry_evaluated_again_counts_as_its_first_delivery(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    let dot = |session: &str, seq: u64| json!({ "session": session, "seq": seq });
    let mut update = task_update(
        t,
        1,
        json!({ "likes": { "add": 2 }, "title": { "set": "retried", "hlc": "000000000007-00000000-0000000000000001" } }),
    );
    update["dot"] = dot("00000000000000a1", 1);
    let r = c.push(vec![project_create(p, "p"), update.clone()]).await;
    assert!(
        r[1]["problem"]["type"]
            .as_str()
            .unwrap()
            .ends_with("unknown-record"),
        "{r:#?}"
    );
    // The device creates the record as it holds it (the update's +2 in it), with the
    // update's dot among the record's.
    let mut create = task_create(t, p);
    create["record"]["likes"] = json!(2);
    create["dot"] = dot("00000000000000a1", 1);
    let r = c.push(vec![create]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    // The restored copy sends the update again, with a dot of its own session.
    update["dot"] = dot("00000000000000b2", 1);
    let r = c.push(vec![update]).await;
    assert_eq!(r[0]["status"], "applied", "evaluated again: {r:#?}");
    let record = &r[0]["server"]["record"];
    assert_eq!(record["likes"], 2, "counted once: {record:#}");
    assert_eq!(record["title"], "retried", "the rest applies: {record:#}");
}

/// PROTOCOL.md IDEM-6: a mutation that carries the change of earlier keys (`replaces`)
/// answers their retries once it is applied: a twin create answered `conflict` and
/// merged, and an update rejected as `unknown-record` and sent again as a create. The
/// retry of either (a device restored from a backup of its own database) is `applied`
/// under its own key, and its likes count once. An applied key is never replaced, and
/// `replaces` beyond its bounds is that mutation's 422.
async fn a_retry_of_a_replaced_key_answers_with_the_mutation_that_carried_it(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t) = (Uuid::now_v7(), Uuid::now_v7());
    let mut first = task_create(t, p);
    first["record"]["likes"] = json!(2);
    let r = c.push(vec![project_create(p, "p"), first.clone()]).await;
    assert_eq!(r[1]["status"], "applied", "{r:#?}");
    // A twin: conflict; its merge (the twin's likes) carries its change.
    let mut twin = task_create(t, p);
    twin["idempotency_key"] = json!(Uuid::new_v4().to_string());
    twin["record"]["likes"] = json!(3);
    twin["clocks"] = json!({ "title": "000000000002-00000000-0000000000000002" });
    let r = c.push(vec![twin.clone()]).await;
    assert_eq!(r[0]["status"], "conflict", "{r:#?}");
    let mut merged = task_update(t, 1, json!({ "likes": { "add": 3 } }));
    merged["replaces"] = json!([twin["idempotency_key"]]);
    let r = c.push(vec![merged]).await;
    assert_eq!(r[0]["server"]["record"]["likes"], 5, "{r:#?}");
    let r = c.push(vec![twin.clone()]).await;
    assert_eq!(r[0]["status"], "applied", "the merge's result: {r:#?}");
    assert_eq!(r[0]["idempotency_key"], twin["idempotency_key"]);
    assert_eq!(r[0]["server"]["record"]["likes"], 5);
    // An update of a record the server does not have, then a create carrying it.
    let u = Uuid::now_v7();
    let update = task_update(u, 1, json!({ "likes": { "add": 4 } }));
    let r = c.push(vec![update.clone()]).await;
    assert_eq!(r[0]["status"], "rejected", "{r:#?}");
    let mut create = task_create(u, p);
    create["record"]["likes"] = json!(4);
    create["replaces"] = json!([update["idempotency_key"]]);
    let r = c.push(vec![create]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    let r = c.push(vec![update]).await;
    assert_eq!(r[0]["status"], "applied", "{r:#?}");
    assert_eq!(r[0]["server"]["record"]["likes"], 4, "counted once: {r:#?}");
    // An applied key keeps its own result.
    let mut other = task_update(t, 2, json!({ "likes": { "add": 1 } }));
    other["replaces"] = json!([first["idempotency_key"]]);
    c.push(vec![other]).await;
    let r = c.push(vec![first]).await;
    assert_eq!(
        r[0]["server"]["version"], 1,
        "the first create's own result: {r:#?}"
    );
    // Out of bounds: that mutation's 422.
    let mut long = task_update(t, 2, json!({ "likes": { "add": 1 } }));
    long["replaces"] = json!(vec![""; 1]);
    let r = c.push(vec![long]).await;
    assert_eq!(r[0]["problem"]["pointer"], "/replaces", "{r:#?}");
}

/// `m` as a member of transaction `t` (PROTOCOL.md TXN-1).
fn in_txn(mut m: Json, t: &str) -> Json {
    m["transaction"] = json!(t);
    m
}

fn statuses(r: &[Json]) -> Vec<String> {
    r.iter()
        .map(|x| match x["status"].as_str().unwrap() {
            "rejected" => format!(
                "rejected {}",
                x["problem"]["type"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
            ),
            s => s.to_string(),
        })
        .collect()
}

/// Issue "The app developer's side", item 1: the mutations of one transaction are
/// applied all or none (TXN-1), even with other mutations between them; the ones not
/// applied are answered `transaction-aborted` and, sent again, apply afresh; the one that
/// failed keeps its own answer, with the record as it is without the transaction.
async fn a_transaction_is_applied_all_or_none(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (p, t1, t2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    // A value the server refuses dooms its transaction, with whatever lies between its
    // mutations (a mutation of no transaction, one of another transaction): a unit.
    let (mp, mt1) = (in_txn(project_create(p, "P"), "tx-1"), task_create(t1, p));
    let mt2 = in_txn(task_create(t2, p), "tx-2");
    let mut bad = in_txn(task_create(Uuid::now_v7(), p), "tx-1");
    bad["record"]["title"] = json!("bad\u{0}title");
    let r = c
        .push(vec![mp.clone(), mt1.clone(), mt2.clone(), bad.clone()])
        .await;
    assert_eq!(
        statuses(&r),
        [
            "rejected transaction-aborted",
            "rejected transaction-aborted",
            "rejected transaction-aborted",
            "rejected invalid-record"
        ],
        "{r:#?}"
    );
    assert_eq!(r[0]["problem"]["status"], 409);
    let detail = r[1]["problem"]["detail"].as_str().unwrap();
    assert!(
        detail.contains(bad["idempotency_key"].as_str().unwrap()),
        "the answer names the mutation that failed: {detail}"
    );
    let (changes, token) = c.pull_all(None, 100).await;
    assert!(
        changes.is_empty(),
        "nothing of the unit was kept: {changes:#?}"
    );
    // Overlapping transactions are one unit: `T U plain T U`, U's last one refused.
    let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
    let mut layout: Vec<Json> = ids.iter().map(|id| task_create(*id, p)).collect();
    for (k, t) in [(0, "T"), (1, "U"), (3, "T"), (4, "U")] {
        layout[k] = in_txn(layout[k].clone(), t);
    }
    layout[4]["record"]["title"] = json!("bad\u{0}title");
    let r = c.push(layout).await;
    assert_eq!(
        statuses(&r)[..4],
        ["rejected transaction-aborted"; 4],
        "{r:#?}"
    );
    let (changes, token) = c.pull_all(Some(&token), 100).await;
    assert!(
        changes.is_empty(),
        "nothing of the unit was kept: {changes:#?}"
    );
    // Sent again without the refused one, the unit applies; the keys were not spent.
    let r = c.push(vec![mt1.clone(), mt2.clone()]).await;
    assert_eq!(statuses(&r), ["applied", "applied"], "{r:#?}");
    // The aborted mutation was not stored under its key: sent again, it applies.
    let r = c.push(vec![mp.clone()]).await;
    assert_eq!(statuses(&r), ["applied"], "{r:#?}");
    // A conflict dooms its transaction too; the conflict's record is the one stored.
    let r = c
        .push(vec![
            in_txn(task_update(t1, 1, json!({ "likes": { "add": 5 } })), "tx-3"),
            in_txn(
                task_update(t1, 1, json!({ "price_cents": { "set": 1, "base": 99 } })),
                "tx-3",
            ),
        ])
        .await;
    assert_eq!(
        statuses(&r),
        ["rejected transaction-aborted", "conflict"],
        "{r:#?}"
    );
    assert_eq!(
        (
            r[1]["server"]["version"].clone(),
            r[1]["server"]["record"]["likes"].clone()
        ),
        (json!(1), json!(0)),
        "the conflict shows the record without the rolled-back like: {r:#?}"
    );
    // Nothing of it reached the feed: only the creates sent again since.
    let (changes, _) = c.pull_all(Some(&token), 100).await;
    assert_eq!(
        changes
            .iter()
            .map(|c| c["entity_id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>(),
        [t1.to_string(), t2.to_string(), p.to_string()],
        "{changes:#?}"
    );
    // The transaction sent again whole, merged, applies whole: the like counts once.
    let like = in_txn(task_update(t1, 1, json!({ "likes": { "add": 5 } })), "tx-4");
    let price = in_txn(
        task_update(t1, 1, json!({ "price_cents": { "set": 1, "base": 100 } })),
        "tx-4",
    );
    let r = c.push(vec![like.clone(), price.clone()]).await;
    assert_eq!(statuses(&r), ["applied", "applied"], "{r:#?}");
    let r = c.push(vec![like, price]).await;
    assert_eq!(
        statuses(&r),
        ["applied", "applied"],
        "a retry replays: {r:#?}"
    );
    assert_eq!(r[1]["server"]["record"]["likes"], 5, "{r:#?}");
    assert_eq!(r[1]["server"]["record"]["price_cents"], 1, "{r:#?}");
    // `transaction` is not part of the idempotency hash: a retry that names it (the
    // client learnt the server's protocol since) replays the first answer.
    let first = task_update(t1, 3, json!({ "likes": { "add": 1 } }));
    let r = c.push(vec![first.clone()]).await;
    assert_eq!(statuses(&r), ["applied"], "{r:#?}");
    let r = c.push(vec![in_txn(first, "tx-5")]).await;
    assert_eq!(statuses(&r), ["applied"], "{r:#?}");
    assert_eq!(r[0]["server"]["record"]["likes"], 6, "counted once: {r:#?}");
    // Review finding: a conflict with a collected record that fails its unit is stored
    // (IDEM-1), so a retry after the id was created again is answered the same, not
    // applied to the new life.
    let x = Uuid::now_v7();
    c.push(vec![task_create(x, p)]).await;
    let now = chrono::Utc::now().timestamp_millis();
    let r = c
        .push(vec![json!({
            "idempotency_key": Uuid::new_v4().to_string(),
            "entity_type": "task",
            "entity_id": x,
            "op": "delete",
            "base_version": 1,
            "hlc": format!("{now:012x}-00000000-0000000000000001")
        })])
        .await;
    assert_eq!(statuses(&r), ["applied"], "{r:#?}");
    s.server
        .collect_garbage(chrono::Utc::now() + chrono::Duration::seconds(1))
        .await
        .unwrap();
    let late_like = in_txn(task_update(x, 1, json!({ "likes": { "add": 1 } })), "tx-6");
    let r = c
        .push(vec![
            late_like.clone(),
            in_txn(task_create(Uuid::now_v7(), p), "tx-6"),
        ])
        .await;
    assert_eq!(
        statuses(&r),
        ["conflict", "rejected transaction-aborted"],
        "{r:#?}"
    );
    assert_eq!(r[0]["server"]["deleted"], true, "{r:#?}");
    let ahead = chrono::Utc::now().timestamp_millis() + 61_000;
    let mut again = task_create(x, p);
    again["clocks"] = json!({ "title": format!("{ahead:012x}-00000000-0000000000000001") });
    let r = c.push(vec![again]).await;
    assert_eq!(statuses(&r), ["applied"], "created again: {r:#?}");
    let r = c.push(vec![late_like]).await;
    assert_eq!(statuses(&r), ["conflict"], "the stored answer: {r:#?}");
    let (status, snap) = c.get("/snapshot?limit=1000").await;
    assert_eq!(status, 200, "{snap:#}");
    let on_x = snap["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["entity_id"] == json!(x))
        .unwrap();
    assert_eq!(
        on_x["record"]["likes"], 0,
        "the like made before the delete does not count on the new life: {on_x:#}"
    );
}
