use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task {
    #[sync(id = true)]
    pub id: Uuid,
}

fn main() {}
