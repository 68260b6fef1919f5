//! A record's life on the server from arbitrary input: a create's record and clocks are
//! checked, then patches are applied to it (as the same version and as concurrent
//! edits), the way the reference server applies mutations. Nothing may panic, and every
//! record a patch produces passes the create's checks again (no patch can make a record
//! the protocol would refuse).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use libfuzzer_sys::fuzz_target;
use serde_json::Value as Json;
use sync_runtime::erased::{ErasedEntity, PatchOutcome};
use sync_runtime::prelude::*;

/// Every merge strategy and the field kinds that go with them.
#[derive(Syncable, Clone, Debug, PartialEq)]
#[sync(entity = "task")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    pub title: String,
    #[sync(merge = "union")]
    pub tags: BTreeSet<String>,
    #[sync(merge = "sum")]
    pub likes: i64,
    #[sync(merge = "manual")]
    pub price_cents: i64,
    pub due: Option<DateTime<Utc>>,
    #[sync(json)]
    pub meta: BTreeMap<String, String>,
    #[sync(immutable)]
    pub created_at: DateTime<Utc>,
}

fuzz_target!(|data: &[u8]| {
    // The input: a JSON array `[record, clocks, patch, patch, ...]`.
    let Ok(Json::Array(items)) = serde_json::from_slice::<Json>(data) else {
        return;
    };
    let mut items = items.into_iter();
    let entity = ErasedEntity::of::<Task>();
    let Some(Json::Object(record)) = items.next() else {
        return;
    };
    let clocks = items.next();
    let Ok((mut record, mut clocks)) = entity.check_record(record, clocks) else {
        return;
    };
    for (i, patch) in items.enumerate() {
        match entity.apply_patch(&record, &clocks, &patch, i % 2 == 0) {
            Ok(PatchOutcome::Applied {
                record: next,
                clocks: next_clocks,
            }) => {
                entity
                    .check_record(next.clone(), Some(next_clocks.clone()))
                    .expect("a patched record passes the create's checks");
                record = next;
                clocks = next_clocks;
            }
            Ok(PatchOutcome::Conflict(_)) | Err(_) => {}
        }
    }
});
