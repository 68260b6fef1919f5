// A record shares the scope of the record its scope field references: a plain field
// cannot be one.
use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
#[sync(scope = "project_id")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    pub project_id: Uuid,
}

fn main() {}
