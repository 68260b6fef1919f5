// Version 1 of the upgrade simulation's model (tests/upgrades.rs). The build script
// generates the migrations of versions 1, 2 and 3, one after the other, as an app's
// releases would.
use std::collections::BTreeSet;

use sync_runtime::prelude::*;

/// Something counted.
#[derive(Syncable, Clone, Debug, PartialEq)]
#[sync(entity = "item")]
pub struct Item {
    /// The item's id.
    #[sync(id)]
    pub id: Uuid,
    /// Its name; the last edit wins.
    pub name: String,
    /// Offline increments add up.
    #[sync(merge = "sum")]
    pub count: i64,
    /// Concurrent adds both survive.
    #[sync(merge = "union")]
    pub tags: BTreeSet<String>,
}
