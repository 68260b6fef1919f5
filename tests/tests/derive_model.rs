//! The model the derive embeds is the model `sync-model` parses from the same source,
#![allow(missing_docs)]
//! and every generated function does what its docs say.

mod model {
    include!("../../examples/tasks/src/model.rs");
}

use std::collections::BTreeMap;

use model::{Comment, Project, Task, TaskClocks, TaskPatch};
use sync_runtime::ops::{LwwOp, ManualOp, SumOp, UnionOp};
use sync_runtime::prelude::*;
use sync_runtime::{DiffError, RecordError};

const SOURCE: &str = include_str!("../../examples/tasks/src/model.rs");

#[test]
fn embedded_model_equals_parsed_model() {
    let parsed = sync_model::parse_source(SOURCE).expect("fixture parses");
    assert_eq!(parsed.entities.len(), 3);
    assert_eq!(Project::model(), &parsed.entities[0]);
    assert_eq!(Task::model(), &parsed.entities[1]);
    assert_eq!(Comment::model(), &parsed.entities[2]);
    for (embedded, fp) in [
        (Project::model(), Project::FINGERPRINT),
        (Task::model(), Task::FINGERPRINT),
        (Comment::model(), Comment::FINGERPRINT),
    ] {
        assert_eq!(sync_model::fingerprint_entity(embedded).0, fp);
    }
}

#[test]
fn model_details() {
    let t = Task::model();
    assert_eq!(Task::ENTITY, "task");
    assert_eq!(t.table, "tasks");
    assert_eq!(Comment::model().table, "comments");
    assert_eq!(Comment::model().outbox, sync_model::OutboxMode::History);
    assert_eq!(t.field("type").unwrap().column, "kind");
    assert_eq!(
        t.field("project_id").unwrap().references.as_deref(),
        Some("project")
    );
    assert!(t.field("draft").is_none(), "skip fields are not synced");
    assert!(t.fields.iter().any(|f| f.rust_name == "draft" && f.skip));
    assert_eq!(
        t.field("title").unwrap().docs,
        "What to do; the last edit wins."
    );
    assert_eq!(Project::model().docs, "A project groups tasks.");
}

fn hlc(m: u64) -> Hlc {
    Hlc::new(m, 0, NodeId(7))
}

fn task() -> Task {
    Task {
        id: Uuid::now_v7(),
        project_id: Uuid::now_v7(),
        title: "Write docs".into(),
        status: "open".into(),
        tags: ["docs".to_string()].into(),
        likes: 1,
        price_cents: 500,
        due: None,
        meta: BTreeMap::new(),
        r#type: None,
        draft: Some("local".into()),
    }
}

#[test]
fn diff_records_one_operation_per_changed_field() {
    let old = task();
    let mut new = old.clone();
    new.title = "Write better docs".into();
    new.tags.insert("urgent".into());
    new.tags.remove("docs");
    new.likes = 4;
    new.price_cents = 700;
    new.meta.insert("k".into(), "v".into());
    new.draft = None; // local-only: not in the patch
    let p = Task::diff(&old, &new, hlc(10)).unwrap();
    assert_eq!(
        p.fields(),
        ["title", "tags", "likes", "price_cents", "meta"]
    );
    assert_eq!(
        p.title,
        Some(LwwOp {
            set: "Write better docs".to_string(),
            hlc: hlc(10)
        })
    );
    assert_eq!(
        p.tags,
        Some(UnionOp {
            add: ["urgent".to_string()].into(),
            remove: ["docs".to_string()].into()
        })
    );
    assert_eq!(p.likes, Some(SumOp { add: 3 }));
    assert_eq!(
        p.price_cents,
        Some(ManualOp {
            set: 700,
            base: 500
        })
    );
    assert!(p.status.is_none() && p.due.is_none());

    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["likes"], serde_json::json!({"add": 3}));
    assert_eq!(
        json["price_cents"],
        serde_json::json!({"set": 700, "base": 500})
    );
    assert!(json.get("status").is_none(), "unchanged fields are omitted");
    let back: TaskPatch = serde_json::from_value(json).unwrap();
    assert_eq!(back, p);

    let mut applied = old.clone();
    applied.apply(&p);
    applied.draft = None;
    assert_eq!(applied, new);

    assert!(Task::diff(&old, &old, hlc(11)).unwrap().is_empty());
}

#[test]
fn diff_refuses_id_and_immutable_changes() {
    let p = Project {
        id: Uuid::now_v7(),
        name: "A".into(),
        created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
    };
    let mut q = p.clone();
    q.created_at = DateTime::from_timestamp(1_700_000_001, 0).unwrap();
    assert_eq!(
        Project::diff(&p, &q, hlc(1)).unwrap_err(),
        DiffError::ImmutableChanged {
            entity: "project",
            field: "created_at"
        }
    );
    let mut r = p.clone();
    r.id = Uuid::now_v7();
    assert_eq!(
        Project::diff(&p, &r, hlc(1)).unwrap_err(),
        DiffError::IdChanged { entity: "project" }
    );
}

#[test]
fn patches_reject_unknown_fields() {
    let err = serde_json::from_str::<TaskPatch>(r#"{"nope": {"set": 1}}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field `nope`"), "{err}");
    assert!(
        err.to_string()
            .contains("expected one of `project_id`, `title`"),
        "{err}"
    );
    // Internal field names are not wire names.
    let err = serde_json::from_str::<TaskPatch>(r#"{"r#type": null}"#).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
    let twice = r#"{"likes": {"add": 1}, "likes": {"add": 2}}"#;
    let err = serde_json::from_str::<TaskPatch>(twice).unwrap_err();
    assert!(err.to_string().contains("duplicate field `likes`"), "{err}");
    let err = serde_json::from_str::<TaskPatch>("[]").unwrap_err();
    assert!(
        err.to_string().contains("expected struct TaskPatch"),
        "{err}"
    );
}

#[test]
fn patches_are_objects_of_the_changed_fields_by_wire_name() {
    let base = task();
    let mut edited = base.clone();
    edited.r#type = Some("errand".into());
    edited.likes += 2;
    let patch = Task::diff(&base, &edited, hlc(3)).unwrap();
    let json = serde_json::to_value(&patch).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["likes", "type"], "only what changed: {json}");
    assert_eq!(serde_json::from_value::<TaskPatch>(json).unwrap(), patch);
    // `null` is an unchanged field, as is a missing one.
    let p: TaskPatch = serde_json::from_str(r#"{"title": null, "likes": {"add": 2}}"#).unwrap();
    assert!(p.title.is_none());
    assert_eq!(p.likes, Some(SumOp { add: 2 }));
}

#[test]
fn compose_and_stamp() {
    let base = task();
    let mut a = base.clone();
    a.likes += 2;
    a.title = "one".into();
    let mut b = a.clone();
    b.likes += 3;
    b.title = "two".into();
    b.price_cents = 1;
    let p1 = Task::diff(&base, &a, hlc(1)).unwrap();
    let p2 = Task::diff(&a, &b, hlc(2)).unwrap();
    let c = p1.clone().compose(p2.clone());
    assert_eq!(c.likes, Some(SumOp { add: 5 }));
    assert_eq!(c.title.as_ref().unwrap().set, "two");
    assert_eq!(c.price_cents, Some(ManualOp { set: 1, base: 500 }));

    let mut clocks = TaskClocks::all(hlc(0));
    Task::stamp(&mut clocks, &c);
    assert_eq!(clocks.title, hlc(2));
    assert_eq!(clocks.status, hlc(0));
    assert_eq!(clocks.latest(), hlc(2));
}

#[test]
fn merge3_auto_merges_and_reports_manual_conflicts() {
    let base = task();
    let mut local = base.clone();
    local.title = "local title".into();
    local.likes += 1;
    local.tags.insert("l".into());
    local.price_cents = 600;
    let mut remote = base.clone();
    remote.status = "done".into();
    remote.likes += 10;
    remote.tags.insert("r".into());
    remote.tags.remove("docs");
    remote.price_cents = 900;
    let clocks = TaskClocks::all(hlc(1));
    let m = Task::merge3(&base, &local, &clocks, &remote, &clocks);
    assert_eq!(m.value.title, "local title");
    assert_eq!(m.value.status, "done");
    assert_eq!(m.value.likes, 12);
    assert_eq!(m.value.tags, ["l".to_string(), "r".to_string()].into());
    assert_eq!(
        m.value.price_cents, 600,
        "the local value stays while conflicted"
    );
    assert_eq!(m.conflicts.len(), 1);
    assert_eq!(m.conflicts[0].field, "price_cents");
    assert_eq!(m.conflicts[0].base, serde_json::json!(500));
    assert_eq!(m.conflicts[0].local, serde_json::json!(600));
    assert_eq!(m.conflicts[0].remote, serde_json::json!(900));
}

#[test]
fn lww_uses_per_field_clocks() {
    let base = task();
    let mut local = base.clone();
    local.title = "older edit".into();
    let mut local_clocks = TaskClocks::all(hlc(1));
    local_clocks.title = hlc(5);
    let mut remote = base.clone();
    remote.title = "newer edit".into();
    let mut remote_clocks = TaskClocks::all(hlc(1));
    remote_clocks.title = hlc(9);
    let m = Task::merge3(&base, &local, &local_clocks, &remote, &remote_clocks);
    assert_eq!(m.value.title, "newer edit");
    assert_eq!(m.clocks.title, hlc(9));
}

#[test]
fn records_round_trip_by_wire_name() {
    let mut t = task();
    t.r#type = Some("bug".into());
    t.due = Some(DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap());
    t.normalize();
    assert_eq!(t.due.unwrap().timestamp_subsec_nanos(), 123_456_000);
    let rec = t.to_record().unwrap();
    assert_eq!(rec["type"], serde_json::json!("bug"));
    assert!(!rec.contains_key("draft"), "skip fields stay local");
    let back = Task::from_record(&rec).unwrap();
    assert_eq!(back.draft, None);
    assert_eq!(
        Task {
            draft: t.draft.clone(),
            ..back
        },
        t
    );

    let mut bad = rec.clone();
    bad.insert("likes".into(), serde_json::json!("many"));
    assert!(matches!(
        Task::from_record(&bad),
        Err(RecordError::Invalid { field: "likes", .. })
    ));
    let mut missing = rec;
    missing.remove("title");
    assert!(matches!(
        Task::from_record(&missing),
        Err(RecordError::Missing { field: "title", .. })
    ));
}

#[test]
fn clocks_serialise_as_a_map_of_wire_names() {
    let mut clocks = TaskClocks::all(hlc(1));
    clocks.r#type = hlc(2);
    let json = serde_json::to_value(clocks).unwrap();
    // Only the lww fields, by wire name (`type`, not `r#type` or `kind`).
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["due", "meta", "project_id", "status", "title", "type"]
    );
    let text = serde_json::to_string(&clocks).unwrap();
    assert!(text.starts_with(r#"{"project_id":"#), "field order: {text}");
    assert_eq!(json["type"], serde_json::to_value(hlc(2)).unwrap());
    assert_eq!(serde_json::from_value::<TaskClocks>(json).unwrap(), clocks);

    // A missing field is the zero clock, an unknown one is ignored (an older or newer
    // model's clocks still read), a repeated one is an error, a sequence fills in order.
    let partial: TaskClocks =
        serde_json::from_str(&format!(r#"{{"title": "{}", "gone": 1}}"#, hlc(3))).unwrap();
    assert_eq!(partial.title, hlc(3));
    assert_eq!(partial.status, Hlc::ZERO);
    let twice = format!(r#"{{"title": "{0}", "title": "{0}"}}"#, hlc(3));
    let err = serde_json::from_str::<TaskClocks>(&twice).unwrap_err();
    assert!(err.to_string().contains("duplicate field `title`"), "{err}");
    let seq: TaskClocks = serde_json::from_str(&format!(r#"["{}"]"#, hlc(4))).unwrap();
    assert_eq!(seq.project_id, hlc(4));
    let bad = serde_json::from_str::<TaskClocks>(r#"{"title": "yesterday"}"#).unwrap_err();
    assert!(bad.to_string().contains("invalid HLC"), "{bad}");
    assert!(serde_json::from_str::<TaskClocks>("7").is_err());
}

#[derive(Syncable, Clone, Debug, PartialEq)]
pub struct Reading {
    #[sync(id)]
    pub id: Uuid,
    pub value: f64,
    pub limit: Option<f32>,
}

#[test]
fn validate_refuses_non_finite_floats() {
    let ok = Reading {
        id: Uuid::now_v7(),
        value: 1.5,
        limit: None,
    };
    assert!(ok.validate().is_ok());
    let nan = Reading {
        value: f64::NAN,
        ..ok.clone()
    };
    let err = nan.validate().unwrap_err();
    assert_eq!(err.field, "value");
    assert_eq!(
        err.to_string(),
        "field `value` of `reading` is not a finite number (NaN and infinity cannot be stored or sent)"
    );
    let inf = Reading {
        limit: Some(f32::INFINITY),
        ..ok
    };
    assert_eq!(inf.validate().unwrap_err().field, "limit");
}

#[test]
fn apply_concurrent_applies_safe_ops_and_reports_manual_conflicts() {
    let base = task();
    // The server moved on: another device retitled at t=20, liked twice, repriced.
    let mut server = base.clone();
    server.title = "server title".into();
    server.likes = 3;
    let mut server_clocks = TaskClocks::all(hlc(1));
    server_clocks.title = hlc(20);

    // A client patch made against `base`: an older title edit, one like, a tag.
    let mut client = base.clone();
    client.title = "client title".into();
    client.likes = 2;
    client.tags.insert("c".into());
    let patch = Task::diff(&base, &client, hlc(10)).unwrap();
    let mut merged = server.clone();
    let mut clocks = server_clocks;
    assert!(merged.apply_concurrent(&mut clocks, &patch).is_empty());
    assert_eq!(merged.title, "server title", "older lww edit loses");
    assert_eq!(merged.likes, 4, "sum adds the delta");
    assert!(merged.tags.contains("c"));

    // A newer lww edit wins.
    let patch = Task::diff(&base, &client, hlc(30)).unwrap();
    let mut merged = server.clone();
    let mut clocks = server_clocks;
    merged.apply_concurrent(&mut clocks, &patch);
    assert_eq!(merged.title, "client title");
    assert_eq!(clocks.title, hlc(30));

    // A manual edit against a base the server no longer holds is a conflict, and
    // nothing of the patch is applied.
    server.price_cents = 900;
    let mut client2 = base.clone();
    client2.price_cents = 700;
    client2.likes = 5;
    let patch = Task::diff(&base, &client2, hlc(40)).unwrap();
    let mut merged = server.clone();
    let mut clocks = server_clocks;
    assert_eq!(
        merged.apply_concurrent(&mut clocks, &patch),
        ["price_cents"]
    );
    assert_eq!(merged, server);
    // ... unless the server holds the base, or already the new value.
    let mut same_base = base.clone();
    same_base.apply_concurrent(&mut clocks, &patch);
    assert_eq!(same_base.price_cents, 700);
}

/// Types named like the generated code's generic parameters and items.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Default)]
pub struct A {
    pub x: i64,
}

/// Another.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PatchVisitor(pub String);

#[derive(Syncable, Clone, Debug, PartialEq)]
pub struct Hygiene {
    #[sync(id)]
    pub id: Uuid,
    #[sync(json)]
    pub a: A,
    #[sync(json)]
    pub visitor: PatchVisitor,
    pub key: String,
    pub out: i64,
}

#[test]
fn generated_code_does_not_clash_with_user_names() {
    let h = Hygiene {
        id: Uuid::now_v7(),
        a: A { x: 1 },
        visitor: PatchVisitor("v".into()),
        key: "k".into(),
        out: 1,
    };
    let mut edited = h.clone();
    edited.a.x = 2;
    edited.key = "k2".into();
    let patch = Hygiene::diff(&h, &edited, hlc(1)).unwrap();
    let json = serde_json::to_string(&patch).unwrap();
    let back: HygienePatch = serde_json::from_str(&json).unwrap();
    assert_eq!(back, patch);
    let clocks = serde_json::to_string(&HygieneClocks::all(hlc(2))).unwrap();
    assert_eq!(
        serde_json::from_str::<HygieneClocks>(&clocks).unwrap(),
        HygieneClocks::all(hlc(2))
    );
}
