// An attribute error is reported once: code that uses the type, its patch and its
// `Syncable` impl does not fail a second time (the derive emits a fallback impl), also
// when another struct attribute's value happens to contain the word "crate".
use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug)]
#[sync(table = "crates")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(merge = "counter")]
    pub likes: i64,
}

fn entity_of<T: Syncable>() -> &'static str {
    T::ENTITY
}

fn main() {
    let _patch = TaskPatch::default();
    let _clocks: TaskClocks = Default::default();
    let _ = entity_of::<Task>();
}
