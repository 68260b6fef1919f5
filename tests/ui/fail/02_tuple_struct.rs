use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Task(Uuid, String);

fn main() {}
