use sync_runtime::prelude::*;

#[derive(Syncable)]
pub struct Marker;

fn main() {}
