//! `#[sync(crate = "...")]` for crates that re-export the runtime.
mod rt {
    pub use sync_runtime::*;
}

#[derive(rt::Syncable, Clone, Debug)]
#[sync(crate = "crate::rt")]
pub struct Note {
    #[sync(id)]
    pub id: rt::uuid::Uuid,
    pub body: String,
}

fn main() {
    use rt::Syncable as _;
    assert_eq!(Note::ENTITY, "note");
}
