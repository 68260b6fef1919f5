//! The reference server accepts what the OpenAPI document allows and nothing else (issue
//! "An exact contract"), over real HTTP on SQLite and PostgreSQL
//! (`SYNC_TEST_POSTGRES_URL`; skipped with a message when unset). Every refused input
//! leaves nothing stored, and every refusal points at the member at fault.
#![allow(missing_docs)]

mod support;

use serde_json::{Value as Json, json};
use support::{Client, TestServer, project_create, task_create, task_update};
use uuid::Uuid;

both_backends!(
    a_repeated_member_is_refused_and_nothing_is_stored,
    members_the_document_does_not_allow_are_refused_with_a_pointer,
    idempotency_keys_have_the_documented_length,
    page_limits_are_the_documented_range,
    input_is_checked_before_the_clients_model,
    the_bearer_scheme_is_case_insensitive,
    a_record_reads_the_same_in_a_push_result_and_in_changes,
    a_push_over_the_documented_max_items_is_413_and_nothing_is_stored,
    health_takes_no_query_parameter,
);

/// Sends `body` as is (the JSON text matters: repeated names have no `Value`).
async fn post_raw(c: &Client, body: String) -> (u16, Json) {
    let res = c
        .http
        .post(format!("{}/push", c.url))
        .bearer_auth(&c.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Json::Null))
}

async fn nothing_stored(c: &Client) {
    let (changes, _) = c.pull_all(None, 100).await;
    assert!(changes.is_empty(), "nothing stored: {changes:#?}");
}

async fn a_repeated_member_is_refused_and_nothing_is_stored(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let id = Uuid::now_v7();
    // The same field twice in a record: "first" or "second" would be a guess.
    let body = format!(
        r#"{{"mutations": [{{"idempotency_key": "k1", "entity_type": "project", "entity_id": "{id}", "op": "create",
            "record": {{"id": "{id}", "name": "first", "name": "second", "created_at": "2026-01-01T00:00:00Z"}},
            "clocks": {{}}}}]}}"#
    );
    let (status, p) = post_raw(&c, body).await;
    assert_eq!(status, 422, "{p:#}");
    assert_eq!(p["type"], "https://syncgen.dev/problems/invalid-body");
    assert_eq!(p["pointer"], "/mutations/0/record/name", "{p:#}");
    // The same member of a mutation twice.
    let body = format!(
        r#"{{"mutations": [{{"idempotency_key": "k2", "entity_type": "project", "entity_id": "{id}", "op": "delete", "op": "create"}}]}}"#
    );
    let (status, p) = post_raw(&c, body).await;
    assert_eq!(
        (status, p["pointer"].as_str()),
        (422, Some("/mutations/0/op"))
    );
    // The same field twice in a patch.
    let body = format!(
        r#"{{"mutations": [{{"idempotency_key": "k3", "entity_type": "task", "entity_id": "{id}", "op": "update", "base_version": 1,
            "patch": {{"likes": {{"add": 1}}, "likes": {{"add": 5}}}}}}]}}"#
    );
    let (status, p) = post_raw(&c, body).await;
    assert_eq!(
        (status, p["pointer"].as_str()),
        (422, Some("/mutations/0/patch/likes"))
    );
    nothing_stored(&c).await;
}

async fn members_the_document_does_not_allow_are_refused_with_a_pointer(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let project = Uuid::now_v7();
    let task = Uuid::now_v7();
    let mut unknown_field = project_create(project, "p");
    unknown_field["record"]["priority"] = json!(9);
    let mut missing_field = project_create(project, "p");
    missing_field["record"]
        .as_object_mut()
        .unwrap()
        .remove("created_at");
    let mut unknown_clock = project_create(project, "p");
    unknown_clock["clocks"]["priority"] = json!("000000000001-00000000-0000000000000001");
    let mut create_with_patch = project_create(project, "p");
    create_with_patch["patch"] = json!({ "name": { "set": "q" } });
    let delete_with_record = json!({ "idempotency_key": "d1", "entity_type": "project", "entity_id": project,
        "op": "delete", "record": { "id": project } });
    let mut unknown_mutation_member = project_create(project, "p");
    unknown_mutation_member["priority"] = json!(9);
    let results = c
        .push(vec![
            unknown_field,
            missing_field,
            unknown_clock,
            task_update(task, 1, json!({ "priority": { "set": 1 } })),
            task_update(task, 1, json!({ "likes": { "add": 1, "extra": true } })),
            task_update(task, 1, json!({ "id": { "set": Uuid::now_v7() } })),
            create_with_patch,
            delete_with_record,
        ])
        .await;
    let expected = [
        ("invalid-record", "/record/priority"),
        ("invalid-record", "/record"),
        ("invalid-record", "/clocks/priority"),
        ("invalid-patch", "/patch/priority"),
        ("invalid-patch", "/patch/likes/extra"),
        ("invalid-patch", "/patch/id"),
        ("invalid-mutation", "/patch"),
        ("invalid-mutation", "/record"),
    ];
    assert_eq!(results.len(), expected.len());
    for (r, (kind, pointer)) in results.iter().zip(expected) {
        assert_eq!(r["status"], "rejected", "{r:#}");
        assert_eq!(r["problem"]["status"], 422);
        assert_eq!(
            r["problem"]["type"],
            format!("https://syncgen.dev/problems/{kind}"),
            "{r:#}"
        );
        assert_eq!(r["problem"]["pointer"], pointer, "{r:#}");
    }
    // An unknown member of the mutation itself refuses the body.
    let (status, p) = c
        .post("/push", &json!({ "mutations": [unknown_mutation_member] }))
        .await;
    assert_eq!(
        (status, p["pointer"].as_str()),
        (422, Some("/mutations/0/priority"))
    );
    nothing_stored(&c).await;
    // The same mutations, well-formed, are applied.
    let results = c
        .push(vec![
            project_create(project, "p"),
            task_create(task, project),
        ])
        .await;
    assert!(
        results.iter().all(|r| r["status"] == "applied"),
        "{results:#?}"
    );
}

async fn idempotency_keys_have_the_documented_length(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    for key in [String::new(), "k".repeat(256)] {
        let mut m = project_create(Uuid::now_v7(), "p");
        m["idempotency_key"] = json!(key);
        let (status, p) = c.post("/push", &json!({ "mutations": [m] })).await;
        assert_eq!(status, 422, "{p:#}");
        assert_eq!(p["pointer"], "/mutations/0/idempotency_key");
    }
    nothing_stored(&c).await;
    // The longest key the document allows fits every backend's key index (multi-byte
    // characters included).
    let mut m = project_create(Uuid::now_v7(), "p");
    m["idempotency_key"] = json!("ключ".repeat(63) + "abc");
    let results = c.push(vec![m.clone()]).await;
    assert_eq!(results[0]["status"], "applied", "{:#}", results[0]);
    assert_eq!(
        c.push(vec![m]).await,
        results,
        "replayed under the same key"
    );
}

async fn page_limits_are_the_documented_range(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    for path in ["/changes", "/snapshot"] {
        let (status, p) = c.get(&format!("{path}?limit=5&extra=1")).await;
        assert_eq!(status, 400, "an unlisted query parameter: {p:#}");
        for bad in ["0", "1001", "-1"] {
            let (status, p) = c.get(&format!("{path}?limit={bad}")).await;
            assert_eq!(status, 400, "{path}?limit={bad}: {p:#}");
        }
        for good in ["1", "1000"] {
            let (status, p) = c.get(&format!("{path}?limit={good}")).await;
            assert_eq!(status, 200, "{path}?limit={good}: {p:#}");
        }
    }
}

async fn the_bearer_scheme_is_case_insensitive(s: &TestServer) {
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let res = reqwest::Client::new()
            .get(format!("{}/changes", s.url))
            .header("authorization", format!("{scheme} token-a"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 200, "{scheme}");
    }
}

async fn a_record_reads_the_same_in_a_push_result_and_in_changes(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let id = Uuid::now_v7();
    // Sent without fractional seconds, and with an offset.
    let mut m = project_create(id, "p");
    m["record"]["created_at"] = json!("2026-01-01T01:00:00+01:00");
    let results = c.push(vec![m]).await;
    let pushed = &results[0]["server"];
    let (changes, _) = c.pull_all(None, 100).await;
    assert_eq!(changes.len(), 1);
    assert_eq!(&changes[0], pushed);
    assert_eq!(
        pushed["record"]["created_at"],
        "2026-01-01T00:00:00.000000Z"
    );
    let (_, snapshot) = c.get("/snapshot").await;
    assert_eq!(&snapshot["records"][0], pushed);
}

async fn input_is_checked_before_the_clients_model(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let unknown_model = "sha256:00000000000000000000000000000000";
    let send = |body: Json| {
        c.http
            .post(format!("{}/push", c.url))
            .bearer_auth(&c.token)
            .header("sync-model-fingerprint", unknown_model)
            .json(&body)
            .send()
    };
    let id = Uuid::now_v7();
    // A body the document does not allow is 422 whatever the model ...
    let bad = json!({ "mutations": [{ "idempotency_key": "k", "entity_type": "project",
        "entity_id": id, "op": "delete", "hlc": null }] });
    let res = send(bad).await.unwrap();
    assert_eq!(res.status().as_u16(), 422);
    let p: Json = res.json().await.unwrap();
    assert_eq!(p["pointer"], "/mutations/0/hlc", "{p:#}");
    // ... and a valid one from an unknown model is 426.
    let good = json!({ "mutations": [project_create(id, "p")] });
    assert_eq!(send(good).await.unwrap().status().as_u16(), 426);
    nothing_stored(&c).await;
    // `2.0` is the integer 2, as JSON Schema counts it.
    let mut m = project_create(id, "p");
    m["base_version"] = json!(null);
    let results = c.push(vec![m]).await;
    assert_eq!(results[0]["status"], "applied");
    let body = format!(
        r#"{{"mutations": [{{"idempotency_key": "d", "entity_type": "project", "entity_id": "{id}", "op": "delete", "base_version": 1.0}}]}}"#
    );
    let (status, answer) = post_raw(&c, body).await;
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["results"][0]["status"], "applied", "{answer:#}");
}

async fn a_push_over_the_documented_max_items_is_413_and_nothing_is_stored(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let max = sync_runtime::protocol::MAX_PUSH_MUTATIONS;
    let many = |n: usize| -> Json {
        json!({ "mutations": (0..n).map(|_| project_create(Uuid::now_v7(), "p")).collect::<Vec<_>>() })
    };
    let (status, p) = c.post("/push", &many(max + 1)).await;
    assert_eq!(status, 413, "{p:#}");
    assert_eq!(p["type"], "https://syncgen.dev/problems/batch-too-large");
    assert!(
        p["detail"].as_str().unwrap().contains(&max.to_string()),
        "{p:#}"
    );
    nothing_stored(&c).await;
    // The document's own figure.
    let doc: Json =
        serde_json::from_str(include_str!("../../examples/tasks/generated/openapi.json")).unwrap();
    assert_eq!(
        doc["components"]["schemas"]["PushRequest"]["properties"]["mutations"]["maxItems"],
        json!(max)
    );
    // Exactly the maximum is accepted.
    let (status, body) = c.post("/push", &many(max)).await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["results"].as_array().unwrap().len(), max);
}

async fn health_takes_no_query_parameter(s: &TestServer) {
    let c = Client::new(&s.url, "token-a");
    let (status, _) = c.get("/health").await;
    assert_eq!(status, 200);
    let (status, p) = c.get("/health?verbose=1").await;
    assert_eq!(status, 400, "{p:#}");
    assert_eq!(p["type"], "https://syncgen.dev/problems/invalid-query");
}
