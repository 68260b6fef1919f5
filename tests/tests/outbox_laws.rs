//! Property test: for any sequence of local writes, applying the coalesced outbox to the
//! server's starting state gives the same result as applying every mutation one by one.
//!
//! Two entities identical but for their outbox mode (`item_c` coalesces, `item_h` keeps
//! history) receive the same writes; their outboxes are then replayed against an empty
//! reference server and the results compared, with each other and with the local rows.
#![allow(missing_docs)]

mod model {
    include!("../fixtures/outbox_model.rs");
}

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use model::{ItemC, ItemH};
use proptest::prelude::*;
use sync_runtime::Record;
use sync_runtime::prelude::*;
use sync_runtime::store::{LocalStore, Migrations, MutationOp, OutboxItem};

/// The client migrations of the fixture model, generated once by sync-cli.
fn migrations_dir() -> &'static std::path::Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/outbox_model.rs");
        sync_cli::generate(&sync_cli::Options {
            inputs: vec![src],
            out_dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
        dir
    })
    .path()
}

#[derive(Debug, Clone)]
struct Values {
    title: String,
    count: i64,
    tags: BTreeSet<String>,
    price: i64,
    note: Option<String>,
}

#[derive(Debug, Clone)]
enum Op {
    Create(usize, Values),
    Update(usize, Values),
    Delete(usize),
    /// The oldest pending item is handed to the network (it may no longer be rewritten).
    Freeze,
}

fn values() -> impl Strategy<Value = Values> {
    (
        prop::sample::select(vec!["a", "b", "c"]),
        -2i64..3,
        prop::collection::btree_set(
            prop::sample::select(vec!["x", "y", "z"]).prop_map(String::from),
            0..3,
        ),
        0i64..3,
        prop::option::of(Just("n".to_string())),
    )
        .prop_map(|(title, count, tags, price, note)| Values {
            title: title.into(),
            count,
            tags,
            price,
            note,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..3usize, values()).prop_map(|(s, v)| Op::Create(s, v)),
        5 => (0..3usize, values()).prop_map(|(s, v)| Op::Update(s, v)),
        2 => (0..3usize).prop_map(Op::Delete),
        1 => Just(Op::Freeze),
    ]
}

fn id(slot: usize) -> Uuid {
    Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + slot as u128)
}

macro_rules! item {
    ($t:ident, $slot:expr, $v:expr) => {
        $t {
            id: id($slot),
            title: $v.title.clone(),
            count: $v.count,
            tags: $v.tags.clone(),
            price: $v.price,
            note: $v.note.clone(),
        }
    };
}

/// A reference server: applies outbox items one by one, as the protocol says.
fn replay<T: Syncable>(items: &[OutboxItem]) -> BTreeMap<Uuid, Option<Record>> {
    let mut server: BTreeMap<Uuid, Option<T>> = BTreeMap::new();
    for item in items.iter().filter(|i| i.entity_type == T::ENTITY) {
        match item.op {
            MutationOp::Create => {
                let record: Record =
                    serde_json::from_value(item.payload["record"].clone()).unwrap();
                server.insert(item.entity_id, Some(T::from_record(&record).unwrap()));
            }
            MutationOp::Update => {
                let patch: T::Patch =
                    serde_json::from_value(item.payload["patch"].clone()).unwrap();
                let current = server
                    .get_mut(&item.entity_id)
                    .and_then(Option::as_mut)
                    .expect("an update is only queued for a record the server will have");
                current.apply(&patch);
            }
            MutationOp::Delete => {
                server.insert(item.entity_id, None);
            }
        }
    }
    server
        .into_iter()
        .map(|(k, v)| (k, v.map(|t| without_id(t.to_record().unwrap()))))
        .collect()
}

fn without_id(mut r: Record) -> Record {
    r.remove("id");
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn coalesced_outbox_equals_uncoalesced(ops in prop::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let store = LocalStore::builder(&path)
            .entity::<ItemC>()
            .entity::<ItemH>()
            .migrations(Migrations::from_dir(migrations_dir().join("migrations/client/sqlite")).unwrap())
            .open()
            .unwrap();
        let mut live = [false; 3];
        for op in &ops {
            match op {
                Op::Create(s, v) if !live[*s] => {
                    store.create(&item!(ItemC, *s, v)).unwrap();
                    store.create(&item!(ItemH, *s, v)).unwrap();
                    live[*s] = true;
                }
                Op::Update(s, v) if live[*s] => {
                    store.update(&item!(ItemC, *s, v)).unwrap();
                    store.update(&item!(ItemH, *s, v)).unwrap();
                }
                Op::Delete(s) if live[*s] => {
                    store.delete::<ItemC>(id(*s)).unwrap();
                    store.delete::<ItemH>(id(*s)).unwrap();
                    live[*s] = false;
                }
                Op::Freeze => {
                    let conn = rusqlite::Connection::open(&path).unwrap();
                    conn.execute(
                        "UPDATE sync_outbox SET status = 'sending', attempt_count = 1 WHERE id = (SELECT MIN(id) FROM sync_outbox WHERE status = 'pending' AND entity_type = 'item_c')",
                        [],
                    ).unwrap();
                }
                _ => {}
            }
        }
        let outbox = store.outbox().unwrap();
        let coalesced = replay::<ItemC>(&outbox);
        let history = replay::<ItemH>(&outbox);
        let live_c: BTreeMap<Uuid, Record> = store.list::<ItemC>().unwrap().into_iter().map(|t| (t.id, without_id(t.to_record().unwrap()))).collect();
        let server_live: BTreeMap<Uuid, Record> = coalesced.iter().filter_map(|(k, v)| v.clone().map(|v| (*k, v))).collect();
        let history_live: BTreeMap<Uuid, Record> = history.iter().filter_map(|(k, v)| v.clone().map(|v| (*k, v))).collect();
        prop_assert_eq!(&server_live, &history_live);
        prop_assert_eq!(&server_live, &live_c, "the server ends where the client is");
        let c_items = outbox.iter().filter(|i| i.entity_type == "item_c").count();
        let h_items = outbox.iter().filter(|i| i.entity_type == "item_h").count();
        prop_assert!(c_items <= h_items);
    }
}
