use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Task(Uuid, String);

fn main() {}
