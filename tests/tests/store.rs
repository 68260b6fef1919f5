//! The local store and its outbox against real SQLite files.
#![allow(missing_docs)]

use tasks::model;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use model::{Comment, Project, Task, TaskPatch};
use sync_runtime::ops::{LwwOp, SumOp, UnionOp};
use sync_runtime::prelude::*;
use sync_runtime::store::{
    ChangeKind, ChangeOrigin, LocalStore, Migrations, MutationOp, OutboxStatus, Query,
    RecordStatus, StoreError, StoreEvent,
};

fn migrations() -> Migrations {
    tasks::client_migrations().unwrap()
}

fn open(path: &std::path::Path) -> LocalStore {
    tasks::open_store(path).unwrap()
}

fn task(title: &str) -> Task {
    Task {
        id: Uuid::now_v7(),
        project_id: Uuid::now_v7(),
        title: title.into(),
        status: "open".into(),
        tags: BTreeSet::new(),
        likes: 0,
        price_cents: 100,
        due: None,
        meta: BTreeMap::new(),
        r#type: None,
        draft: None,
    }
}

#[test]
fn offline_create_survives_a_restart_with_its_outbox_item() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let t = task("write tests");
    {
        let store = open(&path);
        store.create(&t).unwrap();
    }
    let store = open(&path);
    let got = store.get::<Task>(t.id).unwrap().unwrap();
    assert_eq!(
        got,
        Task {
            draft: None,
            ..t.clone()
        }
    );
    let meta = store.record_meta::<Task>(t.id).unwrap().unwrap();
    assert_eq!(meta.sync_status, RecordStatus::Pending);
    assert_eq!(meta.version, None);
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].op, MutationOp::Create);
    assert_eq!(outbox[0].entity_type, "task");
    assert_eq!(outbox[0].entity_id, t.id);
    assert_eq!(outbox[0].payload["record"]["title"], "write tests");
    assert_eq!(outbox[0].status, OutboxStatus::Pending);
    // Plain SQL sees typed columns.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (title, likes): (String, i64) = conn
        .query_row(
            "SELECT title, likes FROM tasks WHERE id = ?1",
            [t.id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((title.as_str(), likes), ("write tests", 0));
}

/// Marks the outbox as acknowledged by a server, so that later writes start new items
/// (what the sync engine does after a successful push).
fn acknowledge_all(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "DELETE FROM sync_outbox; UPDATE tasks SET sync_version = 1, sync_status = 'clean'; UPDATE comments SET sync_version = 1, sync_status = 'clean';",
    )
    .unwrap();
}

#[test]
fn five_updates_coalesce_into_one_composed_patch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = open(&path);
    let base = task("v0");
    store.create(&base).unwrap();
    acknowledge_all(&path);

    let mut current = base.clone();
    let mut patches = Vec::new();
    for i in 1..=5 {
        let mut next = current.clone();
        next.title = format!("v{i}");
        if i == 5 {
            // The last edit adds to a sum: it composes into the item, which stays as it
            // is from then on.
            next.likes += 15;
        }
        if i % 2 == 0 {
            next.tags.insert(format!("t{i}"));
        } else {
            next.tags.remove(&format!("t{}", i - 1));
        }
        assert!(store.update(&next).unwrap());
        patches.push(Task::diff(&current, &next, Hlc::ZERO).unwrap());
        current = next;
    }
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 1, "{outbox:#?}");
    assert_eq!(outbox[0].op, MutationOp::Update);
    assert_eq!(outbox[0].base_version, Some(1));
    let patch: TaskPatch = serde_json::from_value(outbox[0].payload["patch"].clone()).unwrap();
    let expected = patches.into_iter().reduce(|a, b| a.compose(b)).unwrap();
    assert_eq!(patch.likes, Some(SumOp { add: 15 }));
    assert_eq!(patch.likes, expected.likes);
    assert_eq!(patch.tags, expected.tags);
    // Added then removed again: the composition removes (harmless where absent).
    assert_eq!(
        patch.tags,
        Some(UnionOp {
            add: BTreeSet::new(),
            remove: BTreeSet::from(["t2".to_string(), "t4".to_string()])
        })
    );
    assert_eq!(patch.title.as_ref().map(|o| o.set.as_str()), Some("v5"));
    assert!(matches!(patch.title, Some(LwwOp { .. })));
    // The UI shows the latest.
    assert_eq!(store.get::<Task>(base.id).unwrap().unwrap().title, "v5");
    // An unchanged update writes nothing.
    assert!(!store.update(&current).unwrap());
    assert_eq!(store.outbox().unwrap().len(), 1);
    // The item adds to a sum now: later edits queue behind it, under keys of their own.
    let key = outbox[0].idempotency_key.clone();
    current.title = "v6".into();
    store.update(&current).unwrap();
    current.likes += 1;
    store.update(&current).unwrap();
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 2, "{outbox:#?}");
    assert_eq!(outbox[0].idempotency_key, key, "never rewritten");
    assert_eq!(outbox[1].payload["patch"]["likes"]["add"], 1);
    assert_eq!(outbox[1].payload["patch"]["title"]["set"], "v6");
}

/// Composing an unsent item gives it a new idempotency key: a key names one body, also
/// when a device restored from a backup of its own database sends the item again.
#[test]
fn a_composed_item_takes_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = open(&path);
    let mut t = task("v0");
    store.create(&t).unwrap();
    acknowledge_all(&path);
    t.title = "v1".into();
    store.update(&t).unwrap();
    let first = store.outbox().unwrap()[0].idempotency_key.clone();
    t.title = "v2".into();
    store.update(&t).unwrap();
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_ne!(outbox[0].idempotency_key, first);
}

#[test]
fn history_entities_keep_every_mutation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let mut c = Comment {
        id: Uuid::now_v7(),
        task_id: Uuid::now_v7(),
        body: "0".into(),
    };
    store.create(&c).unwrap();
    for i in 1..=4 {
        c.body = i.to_string();
        store.update(&c).unwrap();
    }
    let ops: Vec<MutationOp> = store.outbox().unwrap().iter().map(|i| i.op).collect();
    assert_eq!(
        ops,
        [
            MutationOp::Create,
            MutationOp::Update,
            MutationOp::Update,
            MutationOp::Update,
            MutationOp::Update
        ]
    );
    store.delete::<Comment>(c.id).unwrap();
    assert_eq!(store.outbox().unwrap().len(), 6);
}

#[test]
fn create_then_delete_sends_both() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let t = task("temporary");
    store.create(&t).unwrap();
    store
        .update(&Task {
            title: "still temporary".into(),
            ..t.clone()
        })
        .unwrap();
    store.delete::<Task>(t.id).unwrap();
    // Another life of this database (restored from a backup taken while the create
    // waited) may have sent the create: the server must learn of the delete.
    let ops: Vec<MutationOp> = store.outbox().unwrap().iter().map(|i| i.op).collect();
    assert_eq!(ops, [MutationOp::Create, MutationOp::Delete]);
    assert!(store.get::<Task>(t.id).unwrap().is_none());
    assert!(store.record_meta::<Task>(t.id).unwrap().unwrap().deleted);
}

#[test]
fn update_then_delete_is_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = open(&path);
    let t = task("x");
    store.create(&t).unwrap();
    acknowledge_all(&path);
    store
        .update(&Task {
            title: "renamed".into(),
            ..t.clone()
        })
        .unwrap();
    store.delete::<Task>(t.id).unwrap();
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].op, MutationOp::Delete);
    assert_eq!(outbox[0].base_version, Some(1));
    let meta = store.record_meta::<Task>(t.id).unwrap().unwrap();
    assert!(meta.deleted);
    assert!(store.get::<Task>(t.id).unwrap().is_none());
    assert!(matches!(store.update(&t), Err(StoreError::NotFound { .. })));
}

/// An update that adds to a sum is never rewritten, not even into a delete: the delete
/// queues behind it.
#[test]
fn a_delete_queues_behind_an_update_that_adds_to_a_sum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = open(&path);
    let t = task("x");
    store.create(&t).unwrap();
    acknowledge_all(&path);
    store
        .update(&Task {
            likes: 3,
            ..t.clone()
        })
        .unwrap();
    store.delete::<Task>(t.id).unwrap();
    let ops: Vec<MutationOp> = store.outbox().unwrap().iter().map(|i| i.op).collect();
    assert_eq!(ops, [MutationOp::Update, MutationOp::Delete]);
}

#[test]
fn delete_then_recreate_does_not_resurrect_old_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = open(&path);
    let mut old = task("old");
    old.tags.insert("stale".into());
    old.likes = 7;
    store.create(&old).unwrap();
    acknowledge_all(&path);
    store.delete::<Task>(old.id).unwrap();
    let new = Task {
        title: "new".into(),
        tags: BTreeSet::new(),
        likes: 0,
        ..old.clone()
    };
    store.create(&new).unwrap();
    assert!(matches!(
        store.create(&new),
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(store.get::<Task>(old.id).unwrap().unwrap(), new);
    let outbox = store.outbox().unwrap();
    let ops: Vec<MutationOp> = outbox.iter().map(|i| i.op).collect();
    assert_eq!(ops, [MutationOp::Delete, MutationOp::Create]);
    assert_eq!(outbox[1].payload["record"]["likes"], 0);
    assert_eq!(outbox[1].payload["record"]["tags"], serde_json::json!([]));
    assert_eq!(
        outbox[1].base_version, None,
        "the delete it follows is not on the server yet: the create's stamp, later than the delete's, makes it a recreate there"
    );
}

#[test]
fn items_being_sent_are_never_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = open(&path);
    let t = task("a");
    store.create(&t).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE sync_outbox SET status = 'sending', attempt_count = 1",
        [],
    )
    .unwrap();
    let before = store.outbox().unwrap();
    store
        .update(&Task {
            title: "b".into(),
            ..t.clone()
        })
        .unwrap();
    let after = store.outbox().unwrap();
    assert_eq!(after.len(), 2);
    assert_eq!(
        after[0], before[0],
        "the in-flight item keeps its key and body"
    );
    assert_eq!(after[1].op, MutationOp::Update);
    assert_ne!(after[0].idempotency_key, after[1].idempotency_key);
}

#[test]
fn queries_filter_and_order_on_typed_columns() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    for (title, likes, status) in [("a", 3, "open"), ("b", 1, "done"), ("c", 2, "open")] {
        store
            .create(&Task {
                likes,
                status: status.into(),
                ..task(title)
            })
            .unwrap();
    }
    let open_by_likes: Vec<String> = store
        .query::<Task>(&Query::new().eq("status", "open").order_by_desc("likes"))
        .unwrap()
        .into_iter()
        .map(|t| t.title)
        .collect();
    assert_eq!(open_by_likes, ["a", "c"]);
    let few = store
        .query::<Task>(&Query::new().lt("likes", 3).order_by("title").limit(1))
        .unwrap();
    assert_eq!(few.len(), 1);
    assert_eq!(few[0].title, "b");
    assert_eq!(
        store
            .query::<Task>(&Query::new().eq("type", None::<String>))
            .unwrap()
            .len(),
        3
    );
    assert!(matches!(
        store.query::<Task>(&Query::new().eq("nope", 1)),
        Err(StoreError::UnknownField { .. })
    ));
    assert_eq!(store.list::<Task>().unwrap().len(), 3);
}

/// Issue "The app developer's side", item 5: set membership, null tests, lists of
/// values and prefixes, and a value of the wrong type is an error naming the field and
/// both types (it was reported as database corruption).
#[test]
fn queries_test_sets_nulls_lists_and_prefixes_and_name_type_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let due = "2026-12-24T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
    for (title, tags, kind, likes) in [
        ("Re: invoice", vec!["urgent", "money"], Some("bug"), 1),
        ("Re: lunch", vec![], None, 2),
        ("Invoice 50% off", vec!["money"], Some("chore"), 3),
        ("ünïcode", vec!["urgent"], None, 4),
    ] {
        store
            .create(&Task {
                tags: tags.into_iter().map(String::from).collect(),
                r#type: kind.map(String::from),
                likes,
                due: (likes % 2 == 0).then_some(due),
                ..task(title)
            })
            .unwrap();
    }
    let titles = |q: Query| -> Vec<String> {
        let mut t: Vec<String> = store
            .query::<Task>(&q)
            .unwrap()
            .into_iter()
            .map(|t| t.title)
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        titles(Query::new().contains("tags", "urgent")),
        ["Re: invoice", "ünïcode"]
    );
    assert_eq!(
        titles(
            Query::new()
                .contains("tags", "money")
                .contains("tags", "urgent")
        ),
        ["Re: invoice"]
    );
    assert_eq!(
        titles(Query::new().is_null("type")),
        ["Re: lunch", "ünïcode"]
    );
    assert_eq!(
        titles(Query::new().is_not_null("due")),
        ["Re: lunch", "ünïcode"]
    );
    assert_eq!(
        titles(Query::new().is_in("likes", [1, 3])),
        ["Invoice 50% off", "Re: invoice"]
    );
    assert_eq!(
        titles(Query::new().is_in("type", [Some("bug"), None])),
        ["Re: invoice", "Re: lunch", "ünïcode"]
    );
    assert!(titles(Query::new().is_in("likes", Vec::<i64>::new())).is_empty());
    assert_eq!(
        titles(Query::new().starts_with("title", "Re: ")),
        ["Re: invoice", "Re: lunch"]
    );
    assert!(
        titles(Query::new().starts_with("title", "re: ")).is_empty(),
        "case-sensitive"
    );
    assert_eq!(
        titles(Query::new().starts_with("title", "ünï")),
        ["ünïcode"]
    );
    assert_eq!(
        titles(Query::new().starts_with("title", "Invoice 50%")),
        ["Invoice 50% off"],
        "no wildcards"
    );
    assert_eq!(titles(Query::new().starts_with("title", "")).len(), 4);
    // Wrong types and tests a field's type does not have: errors naming both.
    let err = |q: Query| match store.query::<Task>(&q) {
        Err(StoreError::InvalidQuery { field, reason, .. }) => format!("{field}: {reason}"),
        other => panic!("expected InvalidQuery, got {other:?}"),
    };
    let e = err(Query::new().eq("likes", "three"));
    assert!(
        e.contains("`likes` is `i64`") && e.contains("a string"),
        "{e}"
    );
    let e = err(Query::new().is_in("due", ["soon"]));
    assert!(e.contains("`due` is `Option<DateTime<Utc>>`"), "{e}");
    let e = err(Query::new().contains("title", "x"));
    assert!(e.contains("`contains` tests a set"), "{e}");
    let e = err(Query::new().contains("tags", 5));
    assert!(e.contains("set of") && e.contains("an integer"), "{e}");
    let e = err(Query::new().is_null("likes"));
    assert!(e.contains("never null"), "{e}");
    let e = err(Query::new().starts_with("likes", "1"));
    assert!(e.contains("`starts_with` tests a string field"), "{e}");
    let e = err(Query::new().lt("type", None::<String>));
    assert!(e.contains("needs a value"), "{e}");
    let shown = store
        .query::<Task>(&Query::new().eq("likes", "three"))
        .unwrap_err()
        .to_string();
    assert!(shown.starts_with("query on `task.likes`: "), "{shown}");
}

#[test]
fn subscribers_hear_about_commits_and_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let events = store.subscribe();
    let status = store.watch_status();
    let t = task("watched");
    store.create(&t).unwrap();
    assert_eq!(
        events.recv_timeout(Duration::from_secs(1)),
        Some(StoreEvent::Changed {
            entity: "task".into(),
            id: t.id,
            change: ChangeKind::Created,
            origin: ChangeOrigin::Local,
        })
    );
    let s = status.recv_timeout(Duration::from_secs(1)).unwrap();
    assert_eq!(s.pending, 1);
    assert!(s.dead.is_empty() && s.failed.is_empty() && s.conflicted.is_empty());
    assert_eq!(s.last_sync_at, None);
    store.delete::<Task>(t.id).unwrap();
    assert_eq!(
        events
            .recv_timeout(Duration::from_secs(1))
            .map(|e| match e {
                StoreEvent::Changed { change, .. } => change,
            }),
        Some(ChangeKind::Deleted)
    );
}

/// Issue "The app developer's side", item 2: a live query gives the current result set,
/// then a new one after each commit that changed it, and nothing for a commit that
/// left it as it was; the same as an async stream.
#[test]
fn a_live_query_follows_the_commits_that_change_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let titles = |r: Option<Result<Vec<Task>, StoreError>>| -> Vec<String> {
        r.expect("a result set")
            .unwrap()
            .into_iter()
            .map(|t| t.title)
            .collect()
    };
    let wait = Duration::from_secs(2);
    let mut open_tasks = store
        .watch::<Task>(Query::new().eq("status", "open").order_by("title"))
        .unwrap();
    assert!(
        titles(open_tasks.next()).is_empty(),
        "the current set first"
    );
    assert!(open_tasks.try_next().is_none(), "nothing new");
    let a = task("a");
    store.create(&a).unwrap();
    assert_eq!(titles(open_tasks.next_timeout(wait)), ["a"]);
    let b = Task {
        status: "done".into(),
        ..task("b")
    };
    store.create(&b).unwrap();
    assert!(
        open_tasks
            .next_timeout(Duration::from_millis(200))
            .is_none(),
        "a done task leaves the open set as it was"
    );
    store
        .update(&Task {
            status: "open".into(),
            ..b.clone()
        })
        .unwrap();
    store
        .update(&Task {
            title: "a2".into(),
            ..a.clone()
        })
        .unwrap();
    // Both commits may come as one new set or two; the last is what the store holds.
    let mut last = titles(open_tasks.next_timeout(wait));
    while let Some(r) = open_tasks.try_next() {
        last = titles(Some(r));
    }
    assert_eq!(last, ["a2", "b"]);
    store.delete::<Task>(a.id).unwrap();
    assert_eq!(titles(open_tasks.next_timeout(wait)), ["b"]);
    // A wrong query fails at once.
    assert!(matches!(
        store.watch::<Task>(Query::new().eq("nope", 1)),
        Err(StoreError::UnknownField { .. })
    ));
    // The async form: polled by hand, as any executor would.
    let mut stream = store.watch_stream::<Task>(Query::new()).unwrap();
    let mut next = || {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), &mut cx) {
            std::task::Poll::Ready(r) => Some(r),
            std::task::Poll::Pending => None,
        }
    };
    assert_eq!(titles(next().unwrap()), ["b"], "the current set first");
    assert!(next().is_none(), "then pending");
    store.create(&task("c")).unwrap();
    assert_eq!(titles(next().unwrap()), ["b", "c"]);
    assert!(next().is_none());
}

#[test]
fn status_shows_failed_dead_and_conflicted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = open(&path);
    let (a, b, c) = (task("a"), task("b"), task("c"));
    for t in [&a, &b, &c] {
        store.create(t).unwrap();
    }
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "UPDATE sync_outbox SET status = 'failed', attempt_count = 3, last_error = 'HTTP 503' WHERE entity_id = '{}';
         UPDATE sync_outbox SET status = 'dead', attempt_count = 8, last_error = 'rejected: title too long' WHERE entity_id = '{}';
         UPDATE tasks SET sync_status = 'conflicted' WHERE id = '{}';
         INSERT INTO sync_state (scope, last_sync_at) VALUES ('acc', '2026-01-01T00:00:00Z');",
        a.id, b.id, c.id
    ))
    .unwrap();
    let s = store.status().unwrap();
    assert_eq!(s.pending, 2, "pending + failed; dead items are not pending");
    assert_eq!(s.failed.len(), 1);
    assert_eq!(s.failed[0].last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(s.dead.len(), 1);
    assert_eq!(s.dead[0].entity_id, b.id);
    assert_eq!(s.conflicted, vec![("task".to_string(), c.id)]);
    assert_eq!(
        s.last_sync_at.map(sync_runtime::time::format).as_deref(),
        Some("2026-01-01T00:00:00.000000Z")
    );
    assert_eq!(s.retries, 2, "the failed item is on its third attempt");
    let oldest = s.oldest_pending_at.unwrap();
    assert!(
        store
            .outbox()
            .unwrap()
            .iter()
            .all(|i| i.created_at >= oldest)
    );
    assert_eq!(store.retry_dead().unwrap(), 1);
    assert!(store.status().unwrap().dead.is_empty());
}

#[test]
fn a_database_for_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    drop(open(&path));
    let err = LocalStore::builder(&path)
        .entity::<Project>()
        .entity::<Task>()
        .migrations(migrations())
        .open()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, StoreError::RegistrationMismatch { .. }),
        "{msg}"
    );
    assert!(msg.contains("(Project, Task)"), "{msg}");
    assert!(
        msg.contains("table `comments`, but no registered entity uses it"),
        "names the missing entity's table: {msg}"
    );
}

/// Migrations without the fingerprint header (not written by `sync-cli generate`) skip the
/// check before applying; the check after applying still refuses the wrong registration.
#[test]
fn migrations_without_a_header_are_checked_after_applying() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("migrations");
    std::fs::create_dir(&folder).unwrap();
    let generated = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/tasks/generated/migrations/client/sqlite");
    for entry in std::fs::read_dir(generated).unwrap() {
        let path = entry.unwrap().path();
        let sql: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("-- Model fingerprint:"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(folder.join(path.file_name().unwrap()), sql).unwrap();
    }
    let err = LocalStore::builder(dir.path().join("app.db"))
        .entity::<Project>()
        .entity::<Task>()
        .migrations(Migrations::from_dir(&folder).unwrap())
        .open()
        .unwrap_err();
    assert!(
        matches!(err, StoreError::FingerprintMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("(Project, Task)"), "{err}");
}

/// Issue "Upgrades in any order", item 5: open is all or nothing. A registration with an
/// entity missing, or one too many, is refused before any migration touches the file,
/// naming the entity.
#[test]
fn a_wrong_registration_is_refused_before_anything_is_applied() {
    #[derive(Syncable, Clone, Debug, PartialEq)]
    #[sync(entity = "stray")]
    pub struct Stray {
        #[sync(id)]
        pub id: Uuid,
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let err = LocalStore::builder(&path)
        .entity::<Project>()
        .entity::<Task>()
        .entity::<Comment>()
        .entity::<Stray>()
        .migrations(migrations())
        .open()
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("entity `Stray` (`stray`, table `strays`) is registered, but no migration creates its table"),
        "{msg}"
    );
    assert!(msg.contains("nothing was applied"), "{msg}");
    let tables: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0, "the database file is untouched");
}

#[test]
fn unregistered_types_and_bad_values_are_errors_not_writes() {
    #[derive(Syncable, Clone, Debug, PartialEq)]
    pub struct Other {
        #[sync(id)]
        pub id: Uuid,
    }
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let err = store.create(&Other { id: Uuid::now_v7() }).unwrap_err();
    assert!(err.to_string().contains("add `.entity::<T>()`"), "{err}");
    let p = Project {
        id: Uuid::now_v7(),
        name: "p".into(),
        created_at: DateTime::from_timestamp(1, 0).unwrap(),
    };
    store.create(&p).unwrap();
    let err = store
        .update(&Project {
            created_at: DateTime::from_timestamp(2, 0).unwrap(),
            ..p.clone()
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Diff(_)), "{err}");
    assert_eq!(
        store.get::<Project>(p.id).unwrap().unwrap(),
        p,
        "nothing written"
    );
    assert_eq!(store.outbox().unwrap().len(), 1);
}

#[test]
fn concurrent_writers_never_lose_an_outbox_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut ids = Vec::new();
                for i in 0..25 {
                    let t = Task {
                        likes: i,
                        ..task("t")
                    };
                    store.create(&t).unwrap();
                    ids.push(t.id);
                }
                ids
            })
        })
        .collect();
    let ids: Vec<Uuid> = threads
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(ids.len(), 200);
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 200);
    let in_outbox: BTreeSet<Uuid> = outbox.iter().map(|i| i.entity_id).collect();
    assert_eq!(in_outbox, ids.iter().copied().collect());
    assert_eq!(store.list::<Task>().unwrap().len(), 200);
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<LocalStore>();
}

#[test]
fn clock_and_node_id_persist_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let t = task("a");
    let (node, stamp) = {
        let store = open(&path);
        store.create(&t).unwrap();
        (
            store.node_id(),
            store.record_meta::<Task>(t.id).unwrap().unwrap().updated_at,
        )
    };
    let store = open(&path);
    assert_eq!(store.node_id(), node);
    store
        .update(&Task {
            title: "b".into(),
            ..t
        })
        .unwrap();
    let later = store.record_meta::<Task>(t.id).unwrap().unwrap().updated_at;
    assert!(later > stamp, "{later} > {stamp}");
}

/// Values the protocol refuses (a NUL in any string, a timestamp past year 9999) are
/// refused at the write, on every path, and nothing is stored or queued.
#[test]
fn values_the_protocol_refuses_are_refused_at_the_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("s.db"));
    let bad = task("bad\u{0}title");
    let err = store.create(&bad).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(v) if v.field == "title"),
        "{err}"
    );
    assert!(store.get::<Task>(bad.id).unwrap().is_none());
    assert!(store.outbox().unwrap().is_empty());
    let mut good = task("good");
    store.create(&good).unwrap();
    good.tags.insert("x\u{0}".into());
    let err = store.update(&good).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(v) if v.field == "tags"),
        "{err}"
    );
    good.tags.clear();
    good.meta.insert("k".into(), "v\u{0}".into());
    let err = store.update(&good).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(v) if v.field == "meta"),
        "{err}"
    );
    good.meta.clear();
    good.due = Some("+10000-01-01T00:00:00Z".parse().unwrap());
    let err = store.update(&good).unwrap_err();
    assert!(
        matches!(&err, StoreError::Invalid(v) if v.field == "due"),
        "{err}"
    );
    assert_eq!(store.get::<Task>(good.id).unwrap().unwrap().title, "good");
    assert_eq!(store.outbox().unwrap().len(), 1);
}

/// Dots (PROTOCOL.md SUM-2) are drawn when an item that adds to a `sum` is queued, so a
/// backup of the database holds them; items without one (queued by a runtime that drew
/// them when it first sent an item) get theirs when the store opens, in queue order, and
/// an item that adds nothing to a `sum` takes none.
#[test]
fn items_that_add_to_sums_hold_their_dot_from_the_moment_they_are_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let t = task("liked");
    let u = task("liked too");
    {
        let store = open(&path);
        store.create(&t).unwrap();
        store.create(&u).unwrap();
        let mut liked = t.clone();
        liked.likes = 3;
        store.update(&liked).unwrap();
        liked.title = "renamed".into();
        store.update(&liked).unwrap();
        let outbox = store.outbox().unwrap();
        assert_eq!(outbox.len(), 4, "{outbox:#?}");
        let seqs: Vec<Option<u64>> = outbox
            .iter()
            .map(|i| i.payload["dot"]["seq"].as_u64())
            .collect();
        assert_eq!(
            seqs,
            [Some(1), Some(2), Some(3), None],
            "creates of a task and the like take one, the title none"
        );
        let session = outbox[0].payload["dot"]["session"].as_str().unwrap();
        assert_eq!(session.len(), 16);
        assert!(
            outbox[..3]
                .iter()
                .all(|i| i.payload["dot"]["session"] == session)
        );
    }
    // As a runtime that drew dots at first send left its outbox: no dots.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE sync_outbox SET payload = json_remove(payload, '$.dot')",
        [],
    )
    .unwrap();
    drop(conn);
    let store = open(&path);
    let outbox = store.outbox().unwrap();
    let seqs: Vec<Option<u64>> = outbox
        .iter()
        .map(|i| i.payload["dot"]["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        [Some(1), Some(2), Some(3), None],
        "given at open, in queue order"
    );
    // The next item of this session comes after them.
    let mut liked = store.get::<Task>(u.id).unwrap().unwrap();
    liked.likes += 1;
    store.update(&liked).unwrap();
    let last = store.outbox().unwrap().pop().unwrap();
    assert_eq!(last.payload["dot"]["seq"], 4);
}

/// PROTOCOL.md SUM-3: each dot names its session's previous dot of the same record
/// (`prev`), whatever other records' items came between; a create begins a life of its
/// record, with `prev` 0, also over a delete of the same id.
#[test]
fn a_dot_names_its_sessions_previous_dot_of_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let t = task("liked");
    let u = task("other");
    store.create(&t).unwrap();
    let mut liked = t.clone();
    liked.likes = 1;
    store.update(&liked).unwrap();
    liked.likes = 2;
    store.update(&liked).unwrap();
    store.create(&u).unwrap();
    liked.likes = 3;
    store.update(&liked).unwrap();
    let dots: Vec<(String, u64, u64)> = store
        .outbox()
        .unwrap()
        .iter()
        .map(|i| {
            let d = &i.payload["dot"];
            (
                i.entity_id.to_string(),
                d["seq"].as_u64().unwrap(),
                d["prev"].as_u64().unwrap(),
            )
        })
        .collect();
    let (t_id, u_id) = (t.id.to_string(), u.id.to_string());
    assert_eq!(
        dots,
        [
            (t_id.clone(), 1, 0),
            (t_id.clone(), 2, 1),
            (t_id.clone(), 3, 2),
            (u_id, 4, 0),
            (t_id, 5, 3)
        ],
        "items that add to sums are never folded together"
    );
    // Deleted and created again under the same id: a new life, prev 0.
    store.delete::<Task>(t.id).unwrap();
    store.create(&t).unwrap();
    let last = store.outbox().unwrap().pop().unwrap();
    assert_eq!(last.op, sync_runtime::protocol::MutationOp::Create);
    assert_eq!(last.payload["dot"]["prev"], 0, "{last:#?}");
}

/// Review finding: the server's protocol version is saved whenever what it allows
/// changes, 1.3.3's lives (PROTOCOL.md SUM-4) included: a store that last saw a 1.3.2
/// server starts checking records' lives once the server speaks 1.3.3, and stops if it
/// goes back (a 1.3.2 server's recreated records do not say so).
#[test]
fn the_server_protocol_is_saved_when_lives_come_or_go() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let saved = |path: &std::path::Path| -> String {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row(
                "SELECT \"value\" FROM \"sync_meta\" WHERE \"key\" = 'server-protocol'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    for (version, expected) in [("1.3.2", "1.3.2"), ("1.3.3", "1.3.3"), ("1.3.2", "1.3.2")] {
        let store = open(&path);
        store.observe_server_protocol(version).unwrap();
        drop(store);
        assert_eq!(saved(&path), expected, "after {version}");
    }
}

/// Issue "The app developer's side", item 1: writes of several entities in one
/// transaction commit together with their outbox items, marked as one transaction;
/// subscribers hear of them after the commit, in order.
#[test]
fn a_transaction_commits_its_writes_together() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let events = store.subscribe();
    let p = Project {
        id: Uuid::now_v7(),
        name: "Field inventory".into(),
        created_at: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
    };
    let mut t = task("count the shelves");
    t.project_id = p.id;
    let c = Comment {
        id: Uuid::now_v7(),
        task_id: t.id,
        body: "aisle 4 first".into(),
    };
    let seen = store
        .transaction(|tx| {
            tx.create(&p)?;
            tx.create(&t)?;
            tx.create(&c)?;
            // The transaction reads its own writes; the store's other users do not yet.
            let mut mine = tx.get::<Task>(t.id)?.expect("its own create");
            mine.likes += 2;
            assert!(tx.update(&mine)?);
            assert!(!tx.update(&mine)?, "nothing changed");
            assert!(
                events.try_recv().is_none(),
                "nothing is told before the commit"
            );
            Ok::<_, StoreError>(mine.likes)
        })
        .unwrap();
    assert_eq!(seen, 2);
    assert_eq!(store.get::<Task>(t.id).unwrap().unwrap().likes, 2);
    let told: Vec<(String, ChangeKind)> = std::iter::from_fn(|| events.try_recv())
        .map(|e| match e {
            StoreEvent::Changed { entity, change, .. } => (entity, change),
        })
        .collect();
    assert_eq!(
        told,
        [
            ("project".to_string(), ChangeKind::Created),
            ("task".to_string(), ChangeKind::Created),
            ("comment".to_string(), ChangeKind::Created),
            ("task".to_string(), ChangeKind::Updated),
        ]
    );
    let outbox = store.outbox().unwrap();
    assert_eq!(outbox.len(), 4, "{outbox:#?}");
    let marks: BTreeSet<&str> = outbox
        .iter()
        .map(|i| i.payload["txn"].as_str().expect("marked"))
        .collect();
    assert_eq!(marks.len(), 1, "one transaction");
    // A write outside a transaction is not marked.
    store.create(&task("alone")).unwrap();
    assert!(store.outbox().unwrap()[4].payload.get("txn").is_none());
}

/// An error from the closure undoes every write of the transaction; a failed write
/// inside it leaves nothing behind and the transaction goes on.
#[test]
fn a_transaction_that_fails_leaves_nothing_and_a_failed_write_inside_it_is_undone() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let kept = task("kept");
    store.create(&kept).unwrap();
    let before = store.outbox().unwrap();
    let events = store.subscribe();
    let fresh = task("never");
    let r: Result<(), Box<dyn std::error::Error + Send + Sync>> = store.transaction(|tx| {
        tx.create(&fresh)?;
        tx.delete::<Task>(kept.id)?;
        Err("the user cancelled".into())
    });
    assert_eq!(r.unwrap_err().to_string(), "the user cancelled");
    assert!(store.get::<Task>(fresh.id).unwrap().is_none());
    assert!(store.get::<Task>(kept.id).unwrap().is_some());
    assert_eq!(store.outbox().unwrap(), before);
    assert!(
        events.try_recv().is_none(),
        "nothing is told of undone writes"
    );

    // A write that fails (an id that exists) is undone alone.
    let other = task("other");
    store
        .transaction(|tx| {
            tx.create(&other)?;
            let e = tx.create(&kept).unwrap_err();
            assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
            tx.update(&Task {
                title: "kept, renamed".into(),
                ..kept.clone()
            })?;
            Ok::<_, StoreError>(())
        })
        .unwrap();
    assert_eq!(
        store.get::<Task>(kept.id).unwrap().unwrap().title,
        "kept, renamed"
    );
    assert!(store.get::<Task>(other.id).unwrap().is_some());
    // The create of `kept` (alone), then the transaction's create and update.
    let ops: Vec<MutationOp> = store.outbox().unwrap().iter().map(|i| i.op).collect();
    assert_eq!(
        ops,
        [MutationOp::Create, MutationOp::Create, MutationOp::Update]
    );
}

/// Coalescing still applies in a transaction, and an edit folded into an item of an
/// earlier transaction joins the two: their items then travel together.
#[test]
fn a_transaction_writing_into_an_earlier_ones_item_joins_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let a = task("a");
    let b = task("b");
    // Two creates (an update never folds into a create: it queues behind it).
    store.create(&a).unwrap();
    store.create(&b).unwrap();
    store
        .transaction(|tx| {
            tx.update(&Task {
                title: "a1".into(),
                ..a.clone()
            })?;
            tx.update(&Task {
                title: "b1".into(),
                ..b.clone()
            })
        })
        .unwrap();
    let c = task("c");
    store
        .transaction(|tx| {
            tx.create(&c)?;
            tx.update(&Task {
                title: "a2".into(),
                ..a.clone()
            })
        })
        .unwrap();
    let outbox = store.outbox().unwrap();
    // The creates of a and b, a's two updates composed, b's update, c's create.
    assert_eq!(outbox.len(), 5, "{outbox:#?}");
    assert!(outbox[..2].iter().all(|i| i.payload.get("txn").is_none()));
    let marks: BTreeSet<&str> = outbox[2..]
        .iter()
        .map(|i| i.payload["txn"].as_str().expect("marked"))
        .collect();
    assert_eq!(marks.len(), 1, "the two transactions joined: {outbox:#?}");
    assert_eq!(outbox[2].payload["patch"]["title"]["set"], "a2");
}

/// A store method called inside a transaction's closure on the same thread says what
/// to do instead of waiting forever for the connection; the store stays usable.
#[test]
fn a_store_call_inside_its_own_transaction_panics_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let t = task("t");
    let s = store.clone();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = s.transaction(|tx| {
            tx.create(&t)?;
            s.create(&task("through the store"))
        });
    }))
    .unwrap_err();
    let msg = panicked
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| panicked.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(msg.contains("tx.create"), "{msg}");
    assert!(store.get::<Task>(t.id).unwrap().is_none(), "undone");
    store.create(&task("after")).unwrap();
    assert!(
        store.outbox().unwrap()[0].payload.get("txn").is_none(),
        "later writes are not marked"
    );
}

/// A write that fails after it wrote (here: the record's pending update cannot be read
/// back to fold the new edit into it) is undone alone; the transaction goes on and
/// commits the rest.
#[test]
fn a_write_that_fails_halfway_inside_a_transaction_is_undone_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let store = open(&path);
    let t = task("v0");
    store.create(&t).unwrap();
    store
        .update(&Task {
            title: "v1".into(),
            ..t.clone()
        })
        .unwrap();
    // The pending update's body is damaged behind the store's back.
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE sync_outbox SET payload = '{\"patch\": {\"title\": 5}}' WHERE op = 'update'",
        [],
    )
    .unwrap();
    drop(raw);
    let other = task("other");
    store
        .transaction(|tx| {
            // The row is written before the damaged item is read: the savepoint undoes it.
            let e = tx
                .update(&Task {
                    title: "v2".into(),
                    ..t.clone()
                })
                .unwrap_err();
            assert!(matches!(e, StoreError::Corrupt(_)), "{e}");
            assert_eq!(tx.get::<Task>(t.id)?.unwrap().title, "v1");
            tx.create(&other)
        })
        .unwrap();
    assert_eq!(store.get::<Task>(t.id).unwrap().unwrap().title, "v1");
    assert!(store.get::<Task>(other.id).unwrap().is_some());
}

/// Writes a transaction undid drew dots (`sum` edits) that never reach the server: the
/// record's next dot names the last one that stays as its `prev`, not an undone one
/// (the server would keep the undone one as a gap, PROTOCOL.md SUM-3).
#[test]
fn an_undone_transaction_gives_its_dots_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("app.db"));
    let mut t = task("counted");
    store.create(&t).unwrap();
    t.likes += 1;
    store.update(&t).unwrap();
    let dot = |item: &sync_runtime::store::OutboxItem| {
        let d = &item.payload["dot"];
        (d["seq"].as_u64().unwrap(), d["prev"].as_u64().unwrap())
    };
    let (kept, _) = dot(store.outbox().unwrap().last().unwrap());
    // Undone by an error from the closure...
    let r: Result<(), StoreError> = store.transaction(|tx| {
        tx.update(&Task {
            likes: t.likes + 1,
            ..t.clone()
        })?;
        Err(StoreError::Corrupt("given up".into()))
    });
    assert!(r.is_err());
    // ...and by a panic in it.
    let s = store.clone();
    let t2 = t.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = s.transaction(|tx| {
            tx.update(&Task {
                likes: t2.likes + 5,
                ..t2.clone()
            })?;
            panic!("the app crashed in the middle");
            #[allow(unreachable_code)]
            Ok::<_, StoreError>(())
        });
    }))
    .unwrap_err();
    t.likes += 1;
    store.update(&t).unwrap();
    let (seq, prev) = dot(store.outbox().unwrap().last().unwrap());
    assert!(seq > kept);
    assert_eq!(prev, kept, "the next dot follows the last one kept");
}
