use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
pub enum Status {
    Open,
    Done,
}

fn main() {}
