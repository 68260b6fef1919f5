use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(skip, merge = "sum")]
    pub draft_count: i64,
}

fn main() {}
