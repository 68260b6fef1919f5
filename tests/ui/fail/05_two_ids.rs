use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(id)]
    pub project_id: Uuid,
}

fn main() {}
