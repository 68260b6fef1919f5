//! Schema evolution: the difference between the last generated model and the source,
//! as a list of dialect-independent steps.

use sync_model::{Entity, Field, FieldType, MergeStrategy, Model, ScalarType, TypeKind};

use crate::error::Error;

/// One change to the database schema (or to metadata only).
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A new entity: its tables and indexes.
    CreateEntity(Entity),
    /// An entity removed from the model (destructive).
    DropEntity(Entity),
    /// An entity whose wire name changed (`#[sync(renamed_from = "...")]` on the
    /// struct), and with it maybe its table. Comes before the steps of its fields,
    /// which name it by its new name and table.
    RenameEntity {
        /// The entity before.
        from: Entity,
        /// The entity after.
        to: Entity,
    },
    /// A new synced field on an existing entity.
    AddField {
        /// The entity, as it is after the change.
        entity: Entity,
        /// The new field.
        field: Field,
    },
    /// A synced field removed from an entity (destructive).
    DropField {
        /// The entity, as it was before the change.
        entity: Entity,
        /// The removed field.
        field: Field,
    },
    /// A field whose column or wire name changed (`renamed_from`, a new `rename` or a
    /// new `column`).
    RenameColumn {
        /// The entity, as it is after the change.
        entity: Entity,
        /// The field before.
        from: Field,
        /// The field after.
        to: Field,
    },
    /// A field whose type became wider without losing values (`i32` to `i64`, `f32` to `f64`).
    WidenField {
        /// The entity, as it is after the change.
        entity: Entity,
        /// The field before.
        from: Field,
        /// The field after.
        to: Field,
    },
    /// A field that gained `references`: its column is indexed.
    AddIndex {
        /// The entity.
        entity: Entity,
        /// The field.
        field: Field,
    },
    /// A field that lost `references`: its index goes.
    DropIndex {
        /// The entity.
        entity: Entity,
        /// The field.
        field: Field,
    },
    /// A change with no schema effect (merge strategy, outbox mode, `immutable`, default);
    /// the migration records the new fingerprint.
    Metadata(String),
}

impl Step {
    /// A short snake_case description, used in migration file names.
    pub fn slug(&self) -> String {
        match self {
            Step::CreateEntity(e) => format!("add_{}", e.name),
            Step::DropEntity(e) => format!("drop_{}", e.name),
            Step::RenameEntity { to, .. } => format!("rename_{}", to.name),
            Step::AddField { entity, field } => format!("add_{}_{}", entity.name, field.name),
            Step::DropField { entity, field } => format!("drop_{}_{}", entity.name, field.name),
            Step::RenameColumn { entity, to, .. } => format!("rename_{}_{}", entity.name, to.name),
            Step::WidenField { entity, to, .. } => format!("widen_{}_{}", entity.name, to.name),
            Step::AddIndex { entity, field } => format!("index_{}_{}", entity.name, field.name),
            Step::DropIndex { entity, field } => format!("unindex_{}_{}", entity.name, field.name),
            Step::Metadata(_) => "update_metadata".to_string(),
        }
    }

    /// Whether the step loses data.
    pub fn is_destructive(&self) -> bool {
        matches!(self, Step::DropEntity(_) | Step::DropField { .. })
    }

    /// A sentence for the migration's header comment.
    pub fn describe(&self) -> String {
        match self {
            Step::CreateEntity(e) => format!("add entity `{}` (table `{}`)", e.name, e.table),
            Step::DropEntity(e) => format!("drop entity `{}` (table `{}`)", e.name, e.table),
            Step::RenameEntity { from, to } => format!(
                "rename entity `{}` (table `{}`) to `{}` (table `{}`)",
                from.name, from.table, to.name, to.table
            ),
            Step::AddField { entity, field } => {
                format!("add field `{}.{}`", entity.name, field.name)
            }
            Step::DropField { entity, field } => {
                format!("drop field `{}.{}`", entity.name, field.name)
            }
            Step::RenameColumn { entity, from, to } => format!(
                "rename `{}.{}` (column `{}`) to `{}` (column `{}`)",
                entity.name, from.name, from.column, to.name, to.column
            ),
            Step::WidenField { entity, from, to } => format!(
                "widen `{}.{}` from {} to {}",
                entity.name,
                to.name,
                type_name(&from.ty),
                type_name(&to.ty)
            ),
            Step::AddIndex { entity, field } => format!("index `{}.{}`", entity.name, field.name),
            Step::DropIndex { entity, field } => {
                format!("drop the index of `{}.{}`", entity.name, field.name)
            }
            Step::Metadata(m) => m.clone(),
        }
    }
}

fn type_name(t: &FieldType) -> String {
    let base = match &t.kind {
        TypeKind::Scalar { scalar } => scalar.rust_name().to_string(),
        TypeKind::Set { item, .. } => format!("set of {}", item.rust_name()),
        TypeKind::Json { rust_type } => format!("json {rust_type}"),
    };
    if t.nullable {
        format!("Option<{base}>")
    } else {
        base
    }
}

/// A change from the snapshot that cannot be expressed as a migration, at an entity and
/// maybe one of its fields (so the CLI can point at the source).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The entity's wire name.
    pub entity: String,
    /// The field's wire name, for a field-level issue.
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

/// The steps from `old` to `new`. Destructive steps are refused unless `allow_destructive`.
///
/// # Errors
/// [`Error::Unsupported`], listing every such change, if an entity's table or id field
/// changed, a new field is required and has no `default`, or a field's nullability
/// changed; otherwise [`Error::Destructive`], listing every drop, if an entity or a field
/// would be dropped and `allow_destructive` is `false`.
pub fn diff(old: &Model, new: &Model, allow_destructive: bool) -> Result<Vec<Step>, Error> {
    diff_issues(old, new, allow_destructive).map_err(|e| match e {
        Ok(issues) => Error::Unsupported(issues.into_iter().map(|i| i.message).collect()),
        Err(e) => e,
    })
}

/// [`diff`], with the unsupported changes as [`Issue`]s (`Err(Ok(..))`) so the caller
/// can place them in the source; other errors as `Err(Err(..))`.
pub(crate) fn diff_issues(
    old: &Model,
    new: &Model,
    allow_destructive: bool,
) -> Result<Vec<Step>, Result<Vec<Issue>, Error>> {
    let mut steps = Vec::new();
    let mut unsupported = Vec::new();
    // An entity renamed: its old name is gone from the new model and names it.
    let renamed_to = |o: &Entity| {
        new.entities.iter().find(|e| {
            e.renamed_from.as_deref() == Some(o.name.as_str()) && new.entity(&o.name).is_none()
        })
    };
    for e in &new.entities {
        match old.entity(&e.name) {
            Some(o) => diff_entity(o, e, &mut steps, &mut unsupported),
            None => match old.entities.iter().find(|o| renamed_to(o) == Some(e)) {
                Some(o) => {
                    steps.push(Step::RenameEntity {
                        from: o.clone(),
                        to: e.clone(),
                    });
                    // Its fields, compared under the new name and table.
                    let renamed = Entity {
                        name: e.name.clone(),
                        table: e.table.clone(),
                        ..o.clone()
                    };
                    diff_entity(&renamed, e, &mut steps, &mut unsupported);
                }
                None => steps.push(Step::CreateEntity(e.clone())),
            },
        }
    }
    for o in &old.entities {
        if new.entity(&o.name).is_none() && renamed_to(o).is_none() {
            steps.push(Step::DropEntity(o.clone()));
        }
    }
    if !unsupported.is_empty() {
        return Err(Ok(unsupported));
    }
    if !allow_destructive {
        let destructive: Vec<String> = steps
            .iter()
            .filter(|s| s.is_destructive())
            .map(|s| match s {
                Step::DropEntity(e) => format!(
                    "entity `{}` ({}) was removed from the source; its table `{}` and every row in it would be dropped",
                    e.name, e.rust_name, e.table
                ),
                Step::DropField { entity, field } => drop_message(entity, field, new),
                _ => unreachable!("only drops are destructive"),
            })
            .collect();
        if !destructive.is_empty() {
            return Err(Err(Error::Destructive(destructive)));
        }
    }
    Ok(steps)
}

/// The old fields of an entity that the new one neither keeps by name nor names in a
/// `renamed_from`.
fn vanished<'a>(old: &'a Entity, new: &'a Entity) -> impl Iterator<Item = &'a Field> {
    old.synced_fields().filter(move |o| {
        !o.id
            && new.field(&o.name).is_none()
            && !new
                .synced_fields()
                .any(|f| f.renamed_from.as_deref() == Some(o.name.as_str()))
    })
}

/// Why `field` of `entity` would be dropped, and the safe change to make instead.
fn drop_message(entity: &Entity, field: &Field, new_model: &Model) -> String {
    let new = new_model.entity(&entity.name);
    let head = format!(
        "field `{}` of `{}` ({}.{})",
        field.name, entity.name, entity.rust_name, field.rust_name
    );
    if let Some(now) = new.and_then(|e| e.field(&field.name)) {
        // Still there, with a type that cannot hold every old value: no rename hint.
        return format!(
            "{head} changed type from {} to {}, which cannot hold every value the column holds; column `{}` and its data would be dropped and created again: keep {}, or add a field of the new type and copy the values over in the app",
            type_name(&field.ty),
            type_name(&now.ty),
            field.column,
            type_name(&field.ty)
        );
    }
    let candidates: Vec<&Field> = new
        .map(|e| {
            e.synced_fields()
                .filter(|f| {
                    !f.id
                        && f.ty == field.ty
                        && f.renamed_from.is_none()
                        && entity.field(&f.name).is_none()
                })
                .collect()
        })
        .unwrap_or_default();
    let hint = match candidates.as_slice() {
        [] => format!(
            "to rename it, add #[sync(renamed_from = \"{}\")] to the new field",
            field.name
        ),
        [f] => format!(
            "if `{}` is this field renamed, add #[sync(renamed_from = \"{}\")] to `{}`",
            f.name, field.name, f.name
        ),
        many => format!(
            "if one of {} is this field renamed, add #[sync(renamed_from = \"{}\")] to it",
            many.iter()
                .map(|f| format!("`{}`", f.name))
                .collect::<Vec<_>>()
                .join(", "),
            field.name
        ),
    };
    format!(
        "{head} was removed; column `{}` and its data would be dropped ({hint})",
        field.column
    )
}

fn diff_entity(old: &Entity, new: &Entity, steps: &mut Vec<Step>, unsupported: &mut Vec<Issue>) {
    if old.table != new.table {
        unsupported.push(Issue {
            entity: new.name.clone(),
            field: None,
            message: format!(
                "the table of `{}` changed from `{}` to `{}`; a table is renamed only with its entity (#[sync(renamed_from = \"...\")] on the struct, with a new entity name): keep #[sync(table = \"{}\")]",
                new.name, old.table, new.table, old.table
            ),
        });
        return;
    }
    let (oid, nid) = (old.id_field(), new.id_field());
    if oid.name != nid.name || oid.column != nid.column {
        unsupported.push(Issue {
            entity: new.name.clone(),
            field: None,
            message: format!(
                "the id of `{}` changed from `{}` to `{}`; an entity's id field cannot change",
                new.name, oid.name, nid.name
            ),
        });
        return;
    }
    if old.outbox != new.outbox {
        steps.push(Step::Metadata(format!(
            "`{}`: outbox mode {:?} -> {:?}",
            new.name, old.outbox, new.outbox
        )));
    }
    let mut matched_old: Vec<&str> = Vec::new();
    for f in new.synced_fields().filter(|f| !f.id) {
        let by_name = old.field(&f.name);
        let renamed = if by_name.is_none() {
            f.renamed_from
                .as_deref()
                .and_then(|prev| old.field(prev))
                .filter(|prev| new.field(&prev.name).is_none())
        } else {
            None
        };
        let Some(o) = by_name.or(renamed) else {
            if !f.ty.nullable && f.default.is_none() && !matches!(f.ty.kind, TypeKind::Set { .. }) {
                // A field of the same type that disappeared is most likely this one,
                // renamed: say so first, since a default would lose its data.
                let gone: Vec<&Field> = vanished(old, new).filter(|o| o.ty == f.ty).collect();
                let rename = match gone.as_slice() {
                    [] => String::new(),
                    [o] => format!(
                        "if it is `{}` renamed, add #[sync(renamed_from = \"{}\")] to it (a default would drop `{}`'s data); if it is a new field, ",
                        o.name, o.name, o.name
                    ),
                    many => format!(
                        "if it is one of {} renamed, add #[sync(renamed_from = \"...\")] naming it (a default would drop its data); if it is a new field, ",
                        many.iter()
                            .map(|o| format!("`{}`", o.name))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                unsupported.push(Issue {
                    entity: new.name.clone(),
                    field: Some(f.name.clone()),
                    message: format!(
                        "field `{}` of `{}` ({}.{}) is new and not optional: {}existing rows need a value: add #[sync(default = ...)] or make it Option<{}>",
                        f.name,
                        new.name,
                        new.rust_name,
                        f.rust_name,
                        rename,
                        type_name(&f.ty)
                    ),
                });
            }
            steps.push(Step::AddField {
                entity: new.clone(),
                field: f.clone(),
            });
            continue;
        };
        matched_old.push(&o.name);
        if o.ty != f.ty {
            if is_widening(&o.ty, &f.ty) {
                steps.push(Step::WidenField {
                    entity: new.clone(),
                    from: o.clone(),
                    to: f.clone(),
                });
            } else if o.ty.kind == f.ty.kind && o.ty.nullable != f.ty.nullable {
                unsupported.push(Issue {
                    entity: new.name.clone(),
                    field: Some(f.name.clone()),
                    message: format!(
                        "field `{}` of `{}` changed nullability ({} -> {}); changing NOT NULL needs a table rebuild on SQLite, which syncgen does not generate: add a new field instead",
                        f.name,
                        new.name,
                        type_name(&o.ty),
                        type_name(&f.ty)
                    ),
                });
                continue;
            } else {
                // Narrowing or unrelated: the old column goes, a new one comes.
                steps.push(Step::DropField {
                    entity: old.clone(),
                    field: o.clone(),
                });
                steps.push(Step::AddField {
                    entity: new.clone(),
                    field: f.clone(),
                });
                continue;
            }
        }
        if o.column != f.column || o.name != f.name {
            // (A rename on the wire alone keeps the column: the step then only brings
            // the data in flight and the wire history along.)
            steps.push(Step::RenameColumn {
                entity: new.clone(),
                from: o.clone(),
                to: f.clone(),
            });
        }
        match (&o.references, &f.references) {
            (None, Some(_)) => steps.push(Step::AddIndex {
                entity: new.clone(),
                field: f.clone(),
            }),
            (Some(_), None) => steps.push(Step::DropIndex {
                entity: new.clone(),
                field: o.clone(),
            }),
            _ => {}
        }
        if o.merge != f.merge {
            steps.push(Step::Metadata(format!(
                "`{}.{}`: merge {} -> {}",
                new.name, f.name, o.merge, f.merge
            )));
        }
        if o.immutable != f.immutable || o.default != f.default {
            steps.push(Step::Metadata(format!(
                "`{}.{}`: options changed",
                new.name, f.name
            )));
        }
    }
    for o in old.synced_fields().filter(|f| !f.id) {
        if !matched_old.contains(&o.name.as_str()) {
            steps.push(Step::DropField {
                entity: old.clone(),
                field: o.clone(),
            });
        }
    }
    let _ = MergeStrategy::Lww;
}

fn rank(s: ScalarType) -> Option<(u8, u8)> {
    // (family, width): a value fits in any type of its family with a greater width.
    Some(match s {
        ScalarType::I8 | ScalarType::U8 => (0, 1),
        ScalarType::I16 => (0, 2),
        ScalarType::U16 | ScalarType::I32 => (0, 3),
        ScalarType::U32 | ScalarType::I64 => (0, 4),
        ScalarType::F32 => (1, 1),
        ScalarType::F64 => (1, 2),
        _ => return None,
    })
}

fn is_widening(from: &FieldType, to: &FieldType) -> bool {
    if from.nullable != to.nullable {
        return false;
    }
    match (&from.kind, &to.kind) {
        (TypeKind::Scalar { scalar: a }, TypeKind::Scalar { scalar: b }) => {
            match (rank(*a), rank(*b)) {
                (Some((fa, wa)), Some((fb, wb))) => {
                    fa == fb && wb > wa && !matches!(b, ScalarType::U16 | ScalarType::U32)
                }
                _ => false,
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_model::parse_source;

    fn model(src: &str) -> Model {
        parse_source(src).unwrap()
    }

    const V1: &str = r#"
        #[derive(Syncable)]
        struct Task { #[sync(id)] id: Uuid, title: String, likes: i32 }
    "#;

    #[test]
    fn no_change_no_steps() {
        assert!(diff(&model(V1), &model(V1), false).unwrap().is_empty());
    }

    #[test]
    fn add_entity_and_field_with_default() {
        let v2 = V1.replace(
            "likes: i32 }",
            "likes: i32, #[sync(default = \"open\")] status: String }",
        ) + "#[derive(Syncable)] struct Tag { #[sync(id)] id: Uuid }";
        let steps = diff(&model(V1), &model(&v2), false).unwrap();
        assert_eq!(
            steps.iter().map(Step::slug).collect::<Vec<_>>(),
            ["add_task_status", "add_tag"]
        );
    }

    /// Issue "Upgrades in any order", item 6: a field that disappears while one of the
    /// same type appears gets the rename hint first, before the default hint.
    #[test]
    fn a_likely_rename_leads_with_renamed_from() {
        let v2 = V1.replace("title: String", "name: String");
        let err = diff(&model(V1), &model(&v2), false)
            .unwrap_err()
            .to_string();
        let rename = err
            .find("add #[sync(renamed_from = \"title\")]")
            .unwrap_or_else(|| panic!("{err}"));
        let default = err.find("add #[sync(default = ...)]").unwrap();
        assert!(rename < default, "rename hint first: {err}");
        // With a default the field is accepted as new, and the drop names the candidate.
        let v3 = V1.replace("title: String", "#[sync(default = \"\")] name: String");
        let err = diff(&model(V1), &model(&v3), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "if `name` is this field renamed, add #[sync(renamed_from = \"title\")] to `name`"
            ),
            "{err}"
        );
    }

    /// A rename on the wire that keeps its column (`rename` with `renamed_from` and the
    /// old `column`) is a rename step, so the data in flight and the server's history
    /// follow it, and no column is touched.
    #[test]
    fn a_wire_rename_keeping_its_column_is_a_rename() {
        let v2 = V1.replace(
            "title: String",
            "#[sync(rename = \"heading\", renamed_from = \"title\", column = \"title\")] title: String",
        );
        let steps = diff(&model(V1), &model(&v2), false).unwrap();
        assert!(
            matches!(
                steps.as_slice(),
                [Step::RenameColumn { from, to, .. }]
                    if from.name == "title" && to.name == "heading" && from.column == to.column
            ),
            "{steps:?}"
        );
    }

    /// A narrowing type change is not a rename: no rename hint.
    #[test]
    fn a_narrowing_change_gets_no_rename_hint() {
        let v2 = V1.replace("likes: i32", "likes: i16");
        let err = diff(&model(V1), &model(&v2), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("changed type from i32 to i16"), "{err}");
        assert!(!err.contains("renamed_from"), "{err}");
    }

    #[test]
    fn new_required_field_needs_a_default() {
        let v2 = V1.replace("likes: i32 }", "likes: i32, status: String }");
        let err = diff(&model(V1), &model(&v2), false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("add #[sync(default = ...)] or make it Option<String>"),
            "{err}"
        );
    }

    #[test]
    fn drops_are_refused_unless_allowed() {
        let v2 = V1.replace(", likes: i32", "");
        let err = diff(&model(V1), &model(&v2), false).unwrap_err();
        assert!(matches!(err, Error::Destructive(_)));
        assert!(err.to_string().contains("field `likes` of `task`"), "{err}");
        let steps = diff(&model(V1), &model(&v2), true).unwrap();
        assert!(matches!(steps.as_slice(), [Step::DropField { .. }]));
    }

    #[test]
    fn renames_are_explicit() {
        let v2 = V1.replace(
            "title: String",
            "#[sync(renamed_from = \"title\")] name: String",
        );
        let steps = diff(&model(V1), &model(&v2), false).unwrap();
        assert_eq!(
            steps.iter().map(Step::slug).collect::<Vec<_>>(),
            ["rename_task_name"]
        );
        // Without `renamed_from` the same edit is a drop plus an add.
        let v3 = V1.replace("title: String", "#[sync(default = \"\")] name: String");
        assert!(matches!(
            diff(&model(V1), &model(&v3), false),
            Err(Error::Destructive(_))
        ));
    }

    #[test]
    fn widening_is_safe_narrowing_is_destructive() {
        let wide = V1.replace("likes: i32", "likes: i64");
        let steps = diff(&model(V1), &model(&wide), false).unwrap();
        assert!(matches!(steps.as_slice(), [Step::WidenField { .. }]));
        assert!(matches!(
            diff(&model(&wide), &model(V1), false),
            Err(Error::Destructive(_))
        ));
    }

    #[test]
    fn merge_change_is_metadata_only() {
        let v2 = V1.replace("likes: i32", "#[sync(merge = \"sum\")] likes: i32");
        let steps = diff(&model(V1), &model(&v2), false).unwrap();
        assert!(matches!(steps.as_slice(), [Step::Metadata(_)]));
    }
}
