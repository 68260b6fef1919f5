use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id, merge = "lww")]
    pub id: Uuid,
    pub title: String,
}

fn main() {}
