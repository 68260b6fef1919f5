use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task {
    #[sync(id, merge = "lww")]
    pub id: Uuid,
    pub title: String,
}

fn main() {}
