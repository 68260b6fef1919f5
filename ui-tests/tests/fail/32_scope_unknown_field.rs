// `scope` names a field of the struct (its Rust name), or "self".
use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
#[sync(scope = "projct_id")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(references = "project")]
    pub project_id: Uuid,
}

fn main() {}
