use sync_runtime::prelude::*;

#[derive(Syncable)]
#[sync(merge = "lww")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
}

fn main() {}
