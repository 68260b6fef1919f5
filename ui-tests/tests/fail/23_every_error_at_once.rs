use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(merge = "sum")]
    pub title: String,
    #[sync(merge = "union")]
    pub likes: i64,
    pub views: u64,
}

fn main() {}
