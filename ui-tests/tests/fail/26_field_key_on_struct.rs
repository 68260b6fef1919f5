use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
#[sync(merge = "lww")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
}

fn main() {}
