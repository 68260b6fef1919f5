use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(immutable, merge = "manual")]
    pub created_by: String,
}

fn main() {}
