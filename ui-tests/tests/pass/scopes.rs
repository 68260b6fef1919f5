//! Scope rules: a project is its own scope, a task lives in its project's.
use sync_runtime::prelude::*;

#[derive(Syncable, Clone, Debug, PartialEq)]
#[sync(scope = "self")]
pub struct Project {
    #[sync(id)]
    pub id: Uuid,
    pub name: String,
}

#[derive(Syncable, Clone, Debug, PartialEq)]
#[sync(scope = "project")]
pub struct Task {
    #[sync(id)]
    pub id: Uuid,
    #[sync(references = "project", rename = "project_id")]
    pub project: Uuid,
}

fn main() {
    use sync_runtime::model::ScopeRule;
    assert_eq!(Project::model().scope, ScopeRule::Root);
    assert_eq!(
        Task::model().scope,
        ScopeRule::Via {
            field: "project_id".into()
        }
    );
}
