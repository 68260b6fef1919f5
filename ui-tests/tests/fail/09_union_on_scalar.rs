use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(merge = "union")]
    pub likes: i64,
}

fn main() {}
