use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(merge = "sum")]
    pub title: String,
}

fn main() {}
