use sync_runtime::prelude::*;

// A local type that merely shares the name of a supported one.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, schemars::JsonSchema, PartialEq)]
pub struct String;

#[derive(Syncable, Clone, Debug)]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    pub title: String,
}

fn main() {}
