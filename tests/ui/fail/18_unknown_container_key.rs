use sync_runtime::prelude::*;

#[derive(Syncable)]
#[sync(entity = "task", tabel = "tasks")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
}

fn main() {}
