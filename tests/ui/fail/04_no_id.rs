use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task {
    pub id: Uuid,
    pub title: String,
}

fn main() {}
