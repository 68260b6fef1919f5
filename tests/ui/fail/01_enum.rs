use sync_runtime::prelude::*;

#[derive(Syncable)]
pub enum Status {
    Open,
    Done,
}

fn main() {}
