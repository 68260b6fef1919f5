//! Every attribute and every supported type in one model.
use std::collections::{BTreeMap, BTreeSet, HashSet};

use sync_runtime::prelude::*;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Address {
    pub city: String,
}

/// An order, named like an SQL keyword on purpose.
#[derive(Syncable, Clone, Debug, PartialEq)]
#[sync(entity = "order", table = "orders", outbox = "history", renamed_from = "purchase")]
pub struct Order {
    #[sync(id)]
    pub id: Uuid,
    #[sync(references = "customer")]
    pub customer: Option<Uuid>,
    #[sync(immutable)]
    pub created_at: DateTime<Utc>,
    pub r#type: String,
    #[sync(rename = "select", column = "select_col")]
    pub selected: bool,
    pub small: i8,
    pub medium: i16,
    pub normal: i32,
    pub tiny_unsigned: u8,
    pub short_unsigned: u16,
    pub unsigned: u32,
    pub ratio: f32,
    #[sync(merge = "sum")]
    pub total: f64,
    #[sync(merge = "sum", default = 0)]
    pub count: i64,
    pub blob: Vec<u8>,
    pub note: Option<String>,
    #[sync(merge = "union")]
    pub tags: BTreeSet<String>,
    #[sync(merge = "union")]
    pub labels: HashSet<i32>,
    #[sync(merge = "union")]
    pub watchers: Vec<Uuid>,
    #[sync(merge = "manual")]
    pub price_cents: i64,
    #[sync(json)]
    pub address: Address,
    #[sync(json, merge = "manual")]
    pub extra: BTreeMap<String, i64>,
    #[sync(json)]
    pub maybe: Option<Address>,
    #[sync(renamed_from = "old_name", default = "none")]
    pub new_name: String,
    #[sync(skip)]
    pub cached: Option<std::sync::Arc<std::path::PathBuf>>,
}

fn main() {
    assert_eq!(<Order as Syncable>::ENTITY, "order");
    assert_eq!(Order::model().table, "orders");
    let _patch = OrderPatch::default();
    let _clocks = OrderClocks::default();
}
