use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    pub id: Uuid,
    pub title: String,
}

fn main() {}
