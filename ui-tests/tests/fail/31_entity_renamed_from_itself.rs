use sync_runtime::prelude::*;

/// `renamed_from` on a struct names the entity's previous wire name.
#[derive(Syncable, Clone, Debug)]
#[sync(entity = "note", renamed_from = "note")]
pub struct Note {
    #[sync(id)]
    pub id: Uuid,
}

fn main() {}
