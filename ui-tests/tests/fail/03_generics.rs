use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task<T> {
    #[sync(id)]
    pub id: Uuid,
    pub payload: T,
}

fn main() {}
