use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(immutable, merge = "manual")]
    pub created_by: String,
}

fn main() {}
