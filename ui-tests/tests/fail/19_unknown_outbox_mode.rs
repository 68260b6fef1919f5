use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
#[sync(outbox = "audit")]
pub struct Comment {
    #[sync(id)]
    pub id: Uuid,
    pub body: String,
}

fn main() {}
