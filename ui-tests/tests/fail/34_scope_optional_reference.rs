// Every record needs a scope: an optional reference cannot decide it.
use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
#[sync(scope = "project_id")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(references = "project")]
    pub project_id: Option<Uuid>,
}

fn main() {}
