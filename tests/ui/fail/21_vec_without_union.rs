use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    pub tags: Vec<String>,
}

fn main() {}
