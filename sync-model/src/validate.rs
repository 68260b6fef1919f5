//! Rules that span entities: names unique across the model, references that resolve.

use std::collections::HashMap;

use crate::model::{Model, ScopeRule};

/// A problem with a whole model, located by entity and (optionally) field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIssue {
    /// Index of the entity in `Model::entities`.
    pub entity: usize,
    /// Index of the field in `Entity::fields`, if the issue is about one field.
    pub field: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Checks the rules no single struct can check: unique entity wire names, unique table
/// names, `references` that name an entity of the model, and scope rules
/// (`#[sync(scope = "...")]`) that lead to a scope root: a scope field's entity declares
/// a scope, and the chain of scope fields does not go round in a circle.
pub fn validate_model(model: &Model) -> Vec<ModelIssue> {
    let mut issues = Vec::new();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut tables: HashMap<&str, usize> = HashMap::new();
    for (i, e) in model.entities.iter().enumerate() {
        if let Some(&first) = names.get(e.name.as_str()) {
            issues.push(ModelIssue {
                entity: i,
                field: None,
                message: format!(
                    "entity name `{}` is also used by `{}`; give one of them #[sync(entity = \"...\")]",
                    e.name, model.entities[first].rust_name
                ),
            });
        } else {
            names.insert(&e.name, i);
        }
        if let Some(&first) = tables.get(e.table.as_str()) {
            issues.push(ModelIssue {
                entity: i,
                field: None,
                message: format!(
                    "table `{}` is also used by `{}`; give one of them #[sync(table = \"...\")]",
                    e.table, model.entities[first].rust_name
                ),
            });
        } else {
            tables.insert(&e.table, i);
        }
    }
    for (i, e) in model.entities.iter().enumerate() {
        for (j, f) in e.fields.iter().enumerate() {
            if let Some(target) = &f.references
                && !names.contains_key(target.as_str())
            {
                let known: Vec<&str> = model.entities.iter().map(|e| e.name.as_str()).collect();
                issues.push(ModelIssue {
                    entity: i,
                    field: Some(j),
                    message: format!(
                        "`{}` references unknown entity `{target}`; known entities: {}",
                        f.rust_name,
                        known.join(", ")
                    ),
                });
            }
        }
    }
    scope_issues(model, &mut issues);
    issues
}

/// Scope rules that span entities: a scope field's entity must have a scope itself, and
/// following scope fields must end at a root (`#[sync(scope = "self")]`), not go round.
fn scope_issues(model: &Model, issues: &mut Vec<ModelIssue>) {
    for (i, e) in model.entities.iter().enumerate() {
        let ScopeRule::Via { field } = &e.scope else {
            continue;
        };
        let Some(j) = e.fields.iter().position(|f| !f.skip && f.name == *field) else {
            continue;
        };
        let f = &e.fields[j];
        let Some(target) = f.references.as_deref().and_then(|t| model.entity(t)) else {
            // An unknown entity is reported above.
            continue;
        };
        if target.scope.is_account() {
            issues.push(ModelIssue {
                entity: i,
                field: Some(j),
                message: format!(
                    "`{}` shares the scope of the `{}` it references, but `{}` declares no scope; give `{}` #[sync(scope = \"self\")] (each {} is a scope) or a scope of its own",
                    e.rust_name, target.name, target.rust_name, target.rust_name, target.name
                ),
            });
            continue;
        }
        if model.scope_root(e).is_none() {
            // Not Account at the end, so a cycle (or a broken link reported elsewhere).
            let mut chain = vec![e.name.clone()];
            let mut at = target;
            while !chain.contains(&at.name) {
                chain.push(at.name.clone());
                let next = match &at.scope {
                    ScopeRule::Via { field } => at
                        .field(field)
                        .and_then(|f| f.references.as_deref())
                        .and_then(|t| model.entity(t)),
                    _ => None,
                };
                match next {
                    Some(n) => at = n,
                    None => break,
                }
            }
            if chain.contains(&at.name) {
                chain.push(at.name.clone());
                issues.push(ModelIssue {
                    entity: i,
                    field: Some(j),
                    message: format!(
                        "the scope rules go round in a circle ({}): no record's scope can be found; make one of these entities a scope root with #[sync(scope = \"self\")]",
                        chain.join(" -> ")
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_source;

    #[test]
    fn unknown_reference_and_duplicate_names() {
        let model = parse_source(
            r#"
            #[derive(Syncable)]
            struct Task { #[sync(id)] id: Uuid, #[sync(references = "projekt")] project: Uuid }
            #[derive(Syncable)]
            #[sync(entity = "task", table = "other")]
            struct Other { #[sync(id)] id: Uuid }
            "#,
        )
        .unwrap();
        let issues = validate_model(&model);
        assert_eq!(issues.len(), 2, "{issues:?}");
        assert!(issues[0].message.contains("entity name `task`"));
        assert!(issues[1].message.contains("unknown entity `projekt`"));
        assert_eq!(issues[1].field, Some(1));
    }

    #[test]
    fn scopes_follow_references_to_a_root() {
        let model = parse_source(
            r#"
            #[derive(Syncable)]
            #[sync(scope = "self")]
            struct Project { #[sync(id)] id: Uuid }
            #[derive(Syncable)]
            #[sync(scope = "project_id")]
            struct Task { #[sync(id)] id: Uuid, #[sync(references = "project")] project_id: Uuid }
            #[derive(Syncable)]
            #[sync(scope = "task_id")]
            struct Comment { #[sync(id)] id: Uuid, #[sync(references = "task")] task_id: Uuid }
            #[derive(Syncable)]
            struct Setting { #[sync(id)] id: Uuid }
            "#,
        )
        .unwrap();
        assert_eq!(validate_model(&model), vec![]);
        let comment = model.entity("comment").unwrap();
        let (root, hops) = model.scope_root(comment).unwrap();
        assert_eq!(root.name, "project");
        assert_eq!(hops, vec![("comment", "task_id"), ("task", "project_id")]);
        assert!(model.scope_root(model.entity("setting").unwrap()).is_none());
        let project = model.entity("project").unwrap();
        assert_eq!(model.scope_root(project).unwrap().1, vec![]);
    }

    #[test]
    fn a_scope_through_an_unscoped_entity_or_round_a_circle_is_refused() {
        let model = parse_source(
            r#"
            #[derive(Syncable)]
            struct Project { #[sync(id)] id: Uuid }
            #[derive(Syncable)]
            #[sync(scope = "project_id")]
            struct Task { #[sync(id)] id: Uuid, #[sync(references = "project")] project_id: Uuid }
            #[derive(Syncable)]
            #[sync(scope = "b")]
            struct A { #[sync(id)] id: Uuid, #[sync(references = "b")] b: Uuid }
            #[derive(Syncable)]
            #[sync(scope = "a")]
            struct B { #[sync(id)] id: Uuid, #[sync(references = "a")] a: Uuid }
            "#,
        )
        .unwrap();
        let issues = validate_model(&model);
        assert_eq!(issues.len(), 3, "{issues:#?}");
        assert!(
            issues[0].message.contains("`Project` declares no scope"),
            "{}",
            issues[0].message
        );
        assert_eq!((issues[0].entity, issues[0].field), (1, Some(1)));
        assert!(
            issues[1].message.contains("a -> b -> a"),
            "{}",
            issues[1].message
        );
        assert!(
            issues[2].message.contains("b -> a -> b"),
            "{}",
            issues[2].message
        );
    }
}
