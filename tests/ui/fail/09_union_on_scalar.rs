use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(merge = "union")]
    pub likes: i64,
}

fn main() {}
