use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
#[sync(entity = "task", tabel = "tasks")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
}

fn main() {}
