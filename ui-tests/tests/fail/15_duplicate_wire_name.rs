use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    pub title: String,
    #[sync(rename = "title")]
    pub heading: String,
}

fn main() {}
