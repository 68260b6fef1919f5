//! Property tests of the merge laws, for every strategy, through generated code.
#![allow(missing_docs)]
//!
//! Generators draw from small domains on purpose: equal clocks, equal node ids and
//! equal values are common, so ties are exercised, not just the easy cases.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use proptest::prelude::*;
use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug, PartialEq)]
pub struct Item {
    #[sync(id)]
    pub id: Uuid,
    pub title: String,
    pub flag: Option<bool>,
    pub ratio: f64,
    #[sync(merge = "sum")]
    pub likes: i64,
    #[sync(merge = "sum")]
    pub score: f64,
    #[sync(merge = "union")]
    pub tags: BTreeSet<String>,
    #[sync(merge = "union")]
    pub labels: HashSet<u8>,
    #[sync(merge = "union")]
    pub watchers: Vec<i32>,
    #[sync(merge = "manual")]
    pub price: i64,
    #[sync(json)]
    pub meta: BTreeMap<String, i32>,
    #[sync(json, merge = "manual")]
    pub extra: Vec<String>,
    #[sync(immutable)]
    pub created_by: String,
}

const ID: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

fn small_string() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", "a", "b", "c"]).prop_map(String::from)
}

fn hlc() -> impl Strategy<Value = Hlc> {
    (0u64..3, 0u32..2, 0u64..2).prop_map(|(m, c, n)| Hlc::new(m, c, NodeId(n)))
}

fn clocks() -> impl Strategy<Value = ItemClocks> {
    (hlc(), hlc(), hlc(), hlc()).prop_map(|(title, flag, ratio, meta)| ItemClocks {
        title,
        flag,
        ratio,
        meta,
    })
}

fn item() -> impl Strategy<Value = Item> {
    (
        (
            small_string(),
            prop::option::of(any::<bool>()),
            prop::sample::select(vec![0.0, 0.5, -1.0, f64::NAN]),
            -3i64..3,
            // Integer-valued floats: sums are exact, so the laws hold bit for bit.
            (-3i32..3).prop_map(f64::from),
        ),
        (
            prop::collection::btree_set(small_string(), 0..3),
            prop::collection::hash_set(0u8..4, 0..3),
            prop::collection::vec(0i32..4, 0..4),
            0i64..3,
            prop::collection::btree_map(small_string(), 0i32..2, 0..2),
            prop::collection::vec(small_string(), 0..2),
        ),
    )
        .prop_map(
            |((title, flag, ratio, likes, score), (tags, labels, watchers, price, meta, extra))| {
                let mut item = Item {
                    id: ID,
                    title,
                    flag,
                    ratio,
                    likes,
                    score,
                    tags,
                    labels,
                    watchers,
                    price,
                    meta,
                    extra,
                    created_by: "me".into(),
                };
                item.normalize();
                item
            },
        )
}

/// A stamp later than every stamp of [`clocks`]: an edit made after the base.
fn later_hlc() -> impl Strategy<Value = Hlc> {
    (3u64..5, 0u32..2, 0u64..2).prop_map(|(m, c, n)| Hlc::new(m, c, NodeId(n)))
}

/// The item with a finite ratio (stores refuse NaN before anything is sent).
fn finite(mut i: Item) -> Item {
    if i.ratio.is_nan() {
        i.ratio = 0.0;
    }
    i
}

/// Equality that treats NaN as equal to itself (what `MergeValue::same` does).
fn same(a: &Item, b: &Item) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    if a.ratio.is_nan() && b.ratio.is_nan() {
        a.ratio = 0.0;
        b.ratio = 0.0;
    }
    a == b
}

/// Compares everything but the `manual` fields that conflicted (their local value stays
/// in place on each side, by design).
fn same_except_conflicts(a: &Item, b: &Item, conflicted: &[String]) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    if conflicted.iter().any(|f| f == "price") {
        a.price = 0;
        b.price = 0;
    }
    if conflicted.iter().any(|f| f == "extra") {
        a.extra.clear();
        b.extra.clear();
    }
    same(&a, &b)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_deterministic(b in item(), l in item(), r in item(), lc in clocks(), rc in clocks()) {
        let m1 = Item::merge3(&b, &l, &lc, &r, &rc);
        let m2 = Item::merge3(&b, &l, &lc, &r, &rc);
        prop_assert!(same(&m1.value, &m2.value));
        prop_assert_eq!(m1.clocks, m2.clocks);
        prop_assert_eq!(m1.conflicts, m2.conflicts);
    }

    #[test]
    fn merge_is_symmetric(b in item(), l in item(), r in item(), lc in clocks(), rc in clocks()) {
        let lr = Item::merge3(&b, &l, &lc, &r, &rc);
        let rl = Item::merge3(&b, &r, &rc, &l, &lc);
        let fields: Vec<String> = lr.conflicts.iter().map(|c| c.field.clone()).collect();
        let swapped: Vec<String> = rl.conflicts.iter().map(|c| c.field.clone()).collect();
        prop_assert_eq!(&fields, &swapped);
        for (x, y) in lr.conflicts.iter().zip(&rl.conflicts) {
            prop_assert_eq!(&x.local, &y.remote);
            prop_assert_eq!(&x.remote, &y.local);
            prop_assert_eq!(&x.base, &y.base);
        }
        prop_assert!(same_except_conflicts(&lr.value, &rl.value, &fields), "{:?}\nvs\n{:?}", lr.value, rl.value);
        prop_assert_eq!(lr.clocks, rl.clocks);
    }

    #[test]
    fn merge_respects_the_base(b in item(), r in item(), bc in clocks(), rc in clocks()) {
        let m = Item::merge3(&b, &b, &bc, &r, &rc);
        prop_assert!(same(&m.value, &r), "{:?}\nvs\n{:?}", m.value, r);
        prop_assert!(m.conflicts.is_empty());
        let m = Item::merge3(&b, &r, &rc, &b, &bc);
        prop_assert!(same(&m.value, &r));
    }

    #[test]
    fn merge_is_idempotent_except_sums(b in item(), x in item(), xc in clocks()) {
        let m = Item::merge3(&b, &x, &xc, &x, &xc);
        let mut expected = x.clone();
        // `sum` counts operations: both sides adding d is 2d (see sync_runtime::merge).
        expected.likes = x.likes.wrapping_add(x.likes).wrapping_sub(b.likes);
        if x.likes == b.likes { expected.likes = x.likes; }
        expected.score = if x.score == b.score { x.score } else { (x.score + x.score) - b.score };
        prop_assert!(same(&m.value, &expected), "{:?}\nvs\n{:?}", m.value, expected);
        prop_assert!(m.conflicts.is_empty());
        prop_assert_eq!(m.clocks, xc);
    }

    #[test]
    fn merging_again_changes_nothing(b in item(), l in item(), r in item(), lc in clocks(), rc in clocks()) {
        let m = Item::merge3(&b, &l, &lc, &r, &rc);
        // The remote is now the base: merging the same remote again is a no-op.
        let again = Item::merge3(&r, &m.value, &m.clocks, &r, &rc);
        prop_assert!(same(&again.value, &m.value));
        prop_assert!(again.conflicts.is_empty());
    }

    #[test]
    fn apply_of_diff_gives_the_new_value(old in item(), new in item(), h in hlc()) {
        let patch = Item::diff(&old, &new, h).unwrap();
        let mut applied = old.clone();
        applied.apply(&patch);
        prop_assert!(same(&applied, &new), "{:?}\nvs\n{:?}", applied, new);
        prop_assert_eq!(patch.is_empty(), same(&old, &new));
        // The patch survives the wire (non-finite floats are refused before that).
        if new.validate().is_err() {
            prop_assert!(new.ratio.is_nan());
            return Ok(());
        }
        let json = serde_json::to_string(&patch).unwrap();
        let back: ItemPatch = serde_json::from_str(&json).unwrap();
        let mut applied2 = old.clone();
        applied2.apply(&back);
        prop_assert!(same(&applied2, &new));
    }

    #[test]
    fn apply_concurrent_on_the_base_equals_apply(old in item(), new in item(), h in hlc()) {
        prop_assume!(h > Hlc::ZERO);
        let patch = Item::diff(&old, &new, h).unwrap();
        let mut concurrent = old.clone();
        let mut clocks = ItemClocks::all(Hlc::ZERO);
        prop_assert!(concurrent.apply_concurrent(&mut clocks, &patch).is_empty());
        prop_assert!(same(&concurrent, &new), "{:?}\nvs\n{:?}", concurrent, new);
    }

    #[test]
    fn compose_equals_sequential_application(x in item(), y in item(), z in item(), h1 in hlc(), h2 in hlc()) {
        let (h1, h2) = if h1 <= h2 { (h1, h2) } else { (h2, h1) };
        let p1 = Item::diff(&x, &y, h1).unwrap();
        let p2 = Item::diff(&y, &z, h2).unwrap();
        let mut seq = x.clone();
        seq.apply(&p1);
        seq.apply(&p2);
        let mut once = x.clone();
        once.apply(&p1.clone().compose(p2.clone()));
        prop_assert!(same(&seq, &once), "{:?}\nvs\n{:?}", seq, once);
        prop_assert!(same(&once, &z));
    }

    /// The server applies a patch onto a newer record (`apply_concurrent`), the client
    /// merges three records (`merge3`): two algorithms for one rule set. For two
    /// concurrent edits of one base, both give the same record, clocks and conflicts.
    #[test]
    fn the_servers_apply_and_the_clients_merge_agree(
        b in item(), l in item(), r in item(), bc in clocks(), hl in later_hlc(), hr in later_hlc()
    ) {
        let (b, l, r) = (finite(b), finite(l), finite(r));
        let pl = Item::diff(&b, &l, hl).unwrap();
        let pr = Item::diff(&b, &r, hr).unwrap();
        let mut lc = bc;
        Item::stamp(&mut lc, &pl);
        let mut rc = bc;
        Item::stamp(&mut rc, &pr);
        // The server holds the remote edit and receives the local one.
        let mut server = r.clone();
        let mut server_clocks = rc;
        let server_conflicts = server.apply_concurrent(&mut server_clocks, &pl);
        // The client merges the server's record into its own.
        let m = Item::merge3(&b, &l, &lc, &r, &rc);
        let mut client_conflicts: Vec<&str> = m.conflicts.iter().map(|c| c.field.as_str()).collect();
        let mut server_conflicts = server_conflicts.clone();
        client_conflicts.sort_unstable();
        server_conflicts.sort_unstable();
        prop_assert_eq!(&client_conflicts, &server_conflicts);
        if server_conflicts.is_empty() {
            let mut merged = m.value.clone();
            merged.normalize();
            server.normalize();
            prop_assert!(same(&server, &merged), "server {:?}\nclient {:?}", server, merged);
            prop_assert_eq!(server_clocks, m.clocks);
        }
    }

    #[test]
    fn two_replicas_converge(b in item(), l in item(), r in item(), lc in clocks(), rc in clocks()) {
        // Each replica merges the other's state into its own.
        let at_l = Item::merge3(&b, &l, &lc, &r, &rc);
        let at_r = Item::merge3(&b, &r, &rc, &l, &lc);
        if at_l.conflicts.is_empty() {
            prop_assert!(same(&at_l.value, &at_r.value));
        }
    }
}

#[test]
fn lww_tie_with_equal_clock_and_node_does_not_depend_on_order() {
    let base = Item {
        id: ID,
        title: "base".into(),
        flag: None,
        ratio: 0.0,
        likes: 0,
        score: 0.0,
        tags: BTreeSet::new(),
        labels: HashSet::new(),
        watchers: vec![],
        price: 0,
        meta: BTreeMap::new(),
        extra: vec![],
        created_by: "me".into(),
    };
    let mut a = base.clone();
    a.title = "a".into();
    a.meta.insert("k".into(), 1);
    let mut b = base.clone();
    b.title = "b".into();
    b.meta.insert("k".into(), 2);
    let same_clock = ItemClocks::all(Hlc::new(5, 0, NodeId(1)));
    let ab = Item::merge3(&base, &a, &same_clock, &b, &same_clock);
    let ba = Item::merge3(&base, &b, &same_clock, &a, &same_clock);
    assert_eq!(ab.value, ba.value);
    assert_eq!(ab.value.title, "b");
}

/// A `#[sync(json)]` value merges as one value, never member by member (README, "Merge
/// semantics"): members of one JSON value are often coupled (a point's `lat` and `lng`,
/// a range's `from` and `to`), and a member-wise merge would make a value no device
/// wrote. Two devices editing different members of one map concurrently: under `lww`
/// the later stamp's whole value wins on both replicas (the other member's edit is
/// replaced, as the merge table says); under `manual` it is a conflict holding both
/// whole values, the local one in place until the user resolves it.
#[test]
fn a_json_value_merges_as_one_value_not_member_by_member() {
    let mut base = Item {
        id: ID,
        title: "base".into(),
        flag: None,
        ratio: 0.0,
        likes: 0,
        score: 0.0,
        tags: BTreeSet::new(),
        labels: HashSet::new(),
        watchers: vec![],
        price: 0,
        meta: BTreeMap::new(),
        extra: vec![],
        created_by: "me".into(),
    };
    base.meta.insert("a".into(), 0);
    base.meta.insert("b".into(), 0);
    base.extra = vec!["x".into(), "y".into()];
    let bc = ItemClocks::all(Hlc::new(1, 0, NodeId(1)));
    // Device 1 edits member `a` (earlier), device 2 member `b` (later).
    let mut one = base.clone();
    one.meta.insert("a".into(), 1);
    one.extra[0] = "x1".into();
    let mut two = base.clone();
    two.meta.insert("b".into(), 2);
    two.extra[1] = "y2".into();
    let (mut c1, mut c2) = (bc, bc);
    Item::stamp(
        &mut c1,
        &Item::diff(&base, &one, Hlc::new(10, 0, NodeId(1))).unwrap(),
    );
    Item::stamp(
        &mut c2,
        &Item::diff(&base, &two, Hlc::new(20, 0, NodeId(2))).unwrap(),
    );

    let at_one = Item::merge3(&base, &one, &c1, &two, &c2);
    let at_two = Item::merge3(&base, &two, &c2, &one, &c1);
    let whole_of_two: BTreeMap<String, i32> = [("a".into(), 0), ("b".into(), 2)].into();
    assert_eq!(
        at_one.value.meta, whole_of_two,
        "lww: the later stamp's whole value"
    );
    assert_eq!(at_two.value.meta, whole_of_two);
    assert_eq!(at_one.clocks.meta, Hlc::new(20, 0, NodeId(2)));

    // `manual`: one conflict on the field, with the three whole values; each side keeps
    // its own value in place until resolved.
    for (merged, local, remote) in [(&at_one, &one, &two), (&at_two, &two, &one)] {
        let conflicts: Vec<_> = merged
            .conflicts
            .iter()
            .filter(|c| c.field == "extra")
            .collect();
        assert_eq!(conflicts.len(), 1, "{:?}", merged.conflicts);
        let c = conflicts[0];
        assert_eq!(c.base, serde_json::json!(["x", "y"]));
        assert_eq!(c.local, serde_json::to_value(&local.extra).unwrap());
        assert_eq!(c.remote, serde_json::to_value(&remote.extra).unwrap());
        assert_eq!(merged.value.extra, local.extra);
    }

    // The server's side agrees: device 2's edit of `meta` applied onto device 1's
    // record replaces the whole map; its edit of `extra` is a conflict (and a
    // conflicted mutation applies nothing).
    let mut two_meta = base.clone();
    two_meta.meta.insert("b".into(), 2);
    let mut server = one.clone();
    let mut server_clocks = c1;
    let conflicts = server.apply_concurrent(
        &mut server_clocks,
        &Item::diff(&base, &two_meta, Hlc::new(20, 0, NodeId(2))).unwrap(),
    );
    assert!(conflicts.is_empty());
    assert_eq!(server.meta, whole_of_two);
    let mut two_extra = base.clone();
    two_extra.extra[1] = "y2".into();
    let conflicts = server.apply_concurrent(
        &mut server_clocks,
        &Item::diff(&base, &two_extra, Hlc::new(21, 0, NodeId(2))).unwrap(),
    );
    assert_eq!(conflicts, vec!["extra"]);
    assert_eq!(server.extra, one.extra, "nothing applied");
}
