use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id = true)]
    pub id: Uuid,
}

fn main() {}
