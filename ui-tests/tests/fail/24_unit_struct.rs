use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub struct Marker;

fn main() {}
