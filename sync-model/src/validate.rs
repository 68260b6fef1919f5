//! Rules that span entities: names unique across the model, references that resolve.

use std::collections::HashMap;

use crate::model::Model;

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
/// names, and `references` that name an entity of the model.
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
    issues
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
}
