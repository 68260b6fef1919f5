use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(references = "project")]
    pub project: String,
}

fn main() {}
