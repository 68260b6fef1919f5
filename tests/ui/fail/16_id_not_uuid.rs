use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task {
    #[sync(id)]
    pub id: i64,
    pub title: String,
}

fn main() {}
