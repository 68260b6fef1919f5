//! Two devices edit the same task offline; the generated three-way merge combines them.
//!
//! Run with `cargo run -p sync-runtime --example two_devices`.

use std::collections::BTreeSet;

use sync_runtime::prelude::*;

/// A task, annotated with one merge rule per field.
#[derive(Syncable, Clone, Debug, PartialEq)]
#[sync(entity = "task")]
pub struct Task {
    /// The task's id.
    #[sync(id)]
    pub id: Uuid,
    /// Last writer wins (the default).
    pub title: String,
    /// Concurrent adds and removes both survive.
    #[sync(merge = "union")]
    pub tags: BTreeSet<String>,
    /// Offline increments add up.
    #[sync(merge = "sum")]
    pub likes: i64,
    /// Two different edits are a conflict the user resolves.
    #[sync(merge = "manual")]
    pub price_cents: i64,
}

fn main() {
    let phone = HlcClock::new(NodeId(1));
    let laptop = HlcClock::new(NodeId(2));

    let base = Task {
        id: Uuid::now_v7(),
        title: "Buy milk".into(),
        tags: BTreeSet::from(["shopping".to_string()]),
        likes: 0,
        price_cents: 199,
    };
    let clocks = TaskClocks::all(phone.now());

    // Offline on the phone.
    let mut on_phone = base.clone();
    on_phone.title = "Buy oat milk".into();
    on_phone.likes += 1;
    on_phone.price_cents = 249;
    let phone_patch = Task::diff(&base, &on_phone, phone.now()).expect("diff");
    let mut phone_clocks = clocks;
    Task::stamp(&mut phone_clocks, &phone_patch);

    // Offline on the laptop, a little later.
    let mut on_laptop = base.clone();
    on_laptop.tags.insert("weekend".into());
    on_laptop.tags.remove("shopping");
    on_laptop.likes += 2;
    on_laptop.price_cents = 229;
    let laptop_patch = Task::diff(&base, &on_laptop, laptop.now()).expect("diff");
    let mut laptop_clocks = clocks;
    Task::stamp(&mut laptop_clocks, &laptop_patch);

    println!(
        "phone patch:  {}",
        serde_json::to_string(&phone_patch).expect("json")
    );
    println!(
        "laptop patch: {}",
        serde_json::to_string(&laptop_patch).expect("json")
    );

    let merged = Task::merge3(&base, &on_phone, &phone_clocks, &on_laptop, &laptop_clocks);
    println!("merged:       {:?}", merged.value);
    for c in &merged.conflicts {
        println!(
            "conflict on `{}`: base {}, phone {}, laptop {}",
            c.field, c.base, c.local, c.remote
        );
    }
    let other_way = Task::merge3(&base, &on_laptop, &laptop_clocks, &on_phone, &phone_clocks);
    assert_eq!(merged.value.title, other_way.value.title);
    assert_eq!(merged.value.tags, other_way.value.tags);
    assert_eq!(merged.value.likes, 3);
    println!("both devices converge on title, tags and likes; the price waits for the user");
}
