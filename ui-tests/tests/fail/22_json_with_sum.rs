use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(json, merge = "sum")]
    pub stats: std::collections::BTreeMap<String, i64>,
}

fn main() {}
