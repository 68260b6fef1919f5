// Version 3 of the upgrade simulation's model: `Item.count` (a sum) renamed to
// `total`, a field with a default added (`priority`), the field `note` (added in
// version 2) dropped, and the entity `label` renamed to `tag` (table `labels` to `tags`).
use std::collections::BTreeSet;

use sync_runtime::prelude::*;

/// Something counted.
#[derive(Syncable, Clone, Debug, PartialEq)]
#[sync(entity = "item")]
pub struct Item {
    /// The item's id.
    #[sync(id)]
    pub id: Uuid,
    /// Its title; the last edit wins. `name` in version 1.
    #[sync(renamed_from = "name")]
    pub title: String,
    /// Offline increments add up. `count` in versions 1 and 2.
    #[sync(merge = "sum", renamed_from = "count")]
    pub total: i64,
    /// Concurrent adds both survive.
    #[sync(merge = "union")]
    pub tags: BTreeSet<String>,
    /// Added in version 3.
    #[sync(default = 0)]
    pub priority: i64,
}

/// A tag: a label until version 3, added in version 2.
#[derive(Syncable, Clone, Debug, PartialEq)]
#[sync(renamed_from = "label")]
pub struct Tag {
    /// The tag's id.
    #[sync(id)]
    pub id: Uuid,
    /// Its text.
    pub text: String,
}
