//! Cross-attribute and cross-field rules, run on a parsed entity.
//!
//! Every rule reports at the token a user must change, and says what to write instead.

use std::collections::HashMap;

use syn::spanned::Spanned;
use syn::{DeriveInput, FieldsNamed, LitStr};

use crate::ctxt::Ctxt;
use crate::model::{Collection, Entity, Field, MergeStrategy, ScalarType, TypeKind};
use crate::parse::FieldAttrs;

/// Column names starting with this prefix are reserved for sync metadata
/// (`sync_status`, `sync_version`, ...), and table names for syncgen's own tables.
pub const RESERVED_PREFIX: &str = "sync_";

/// The longest identifier every target database accepts (PostgreSQL: 63 bytes).
pub const MAX_IDENT_LEN: usize = 63;
/// Tables are shorter so that derived names (`sync_base_<table>`, indexes) still fit.
pub const MAX_TABLE_LEN: usize = 40;

/// Whether `s` is a portable SQL and wire identifier: ASCII letters, digits and `_`,
/// not starting with a digit.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn check_entity(
    cx: &Ctxt,
    input: &DeriveInput,
    entity_lit: &Option<LitStr>,
    table_lit: &Option<LitStr>,
    entity: &Entity,
    syn_fields: &FieldsNamed,
    fields: &[(Field, FieldAttrs)],
) {
    check_name(
        cx,
        entity_lit
            .as_ref()
            .map(|l| l as &dyn quote::ToTokens)
            .unwrap_or(&input.ident),
        "entity name",
        &entity.name,
        MAX_IDENT_LEN,
    );
    let table_span: &dyn quote::ToTokens = table_lit
        .as_ref()
        .map(|l| l as &dyn quote::ToTokens)
        .unwrap_or(&input.ident);
    if check_name(cx, table_span, "table name", &entity.table, MAX_TABLE_LEN)
        && entity.table.starts_with(RESERVED_PREFIX)
    {
        cx.error_spanned_by(
            table_span,
            format!(
                "table `{}` starts with `{RESERVED_PREFIX}`, which is reserved for syncgen's own tables; choose another with #[sync(table = \"...\")]",
                entity.table
            ),
        );
    }

    // Exactly one id.
    let ids: Vec<_> = fields
        .iter()
        .zip(&syn_fields.named)
        .filter(|((f, _), _)| f.id)
        .collect();
    match ids.as_slice() {
        [] => cx.error_spanned_by(
            &input.ident,
            format!(
                "`{}` has no #[sync(id)] field: mark the `Uuid` field that identifies a record with #[sync(id)]",
                input.ident
            ),
        ),
        [_] => {}
        [(first, _), rest @ ..] => {
            for ((_, attrs), _) in rest {
                cx.error_spanned_by(
                    attrs.path_of("id").expect("id attribute present"),
                    format!(
                        "only one field can be the #[sync(id)]; `{}` already is. Use #[sync(references = \"...\")] for ids of other records",
                        first.0.rust_name
                    ),
                );
            }
        }
    }

    // Unique wire names and columns among synced fields.
    let mut wire: HashMap<&str, &Field> = HashMap::new();
    let mut columns: HashMap<&str, &Field> = HashMap::new();
    for ((field, attrs), syn_field) in fields.iter().zip(&syn_fields.named) {
        if field.skip {
            continue;
        }
        let at: &dyn quote::ToTokens = match attrs.path_of("rename") {
            Some(p) => p,
            None => syn_field.ident.as_ref().expect("named field"),
        };
        if let Some(other) = wire.insert(&field.name, field) {
            cx.error_spanned_by(
                at,
                format!(
                    "wire name `{}` is also used by field `{}`; two fields cannot share one name in records and patches: give one of them #[sync(rename = \"...\")]",
                    field.name, other.rust_name
                ),
            );
            continue;
        }
        let at: &dyn quote::ToTokens = match attrs.path_of("column") {
            Some(p) => p,
            None => syn_field.ident.as_ref().expect("named field"),
        };
        if field.column.starts_with(RESERVED_PREFIX) {
            cx.error_spanned_by(
                at,
                format!(
                    "column `{}` collides with syncgen's metadata columns (every column starting with `{RESERVED_PREFIX}` is reserved: sync_status, sync_version, sync_updated_at, ...); choose another with #[sync(column = \"...\")]",
                    field.column
                ),
            );
        } else if let Some(other) = columns.insert(&field.column, field) {
            cx.error_spanned_by(
                at,
                format!(
                    "column `{}` is also used by field `{}`; choose another with #[sync(column = \"...\")]",
                    field.column, other.rust_name
                ),
            );
        }
    }
}

fn check_name(cx: &Ctxt, at: &dyn quote::ToTokens, what: &str, name: &str, max: usize) -> bool {
    if !is_identifier(name) {
        cx.error_spanned_by(
            at,
            format!("{what} `{name}` is not a portable identifier: use ASCII letters, digits and `_`, not starting with a digit"),
        );
        return false;
    }
    if name.len() > max {
        cx.error_spanned_by(
            at,
            format!("{what} `{name}` is longer than {max} characters, which not every database accepts; choose a shorter one"),
        );
        return false;
    }
    true
}

pub(crate) fn check_field(cx: &Ctxt, field: &Field, attrs: &FieldAttrs, syn_field: &syn::Field) {
    let ty = &syn_field.ty;
    let merge_path = attrs.path_of("merge");

    if field.skip {
        for key in [
            "id",
            "merge",
            "immutable",
            "rename",
            "column",
            "json",
            "references",
            "renamed_from",
            "default",
        ] {
            if let Some(p) = attrs.path_of(key) {
                cx.error_spanned_by(
                    p,
                    format!(
                        "`skip` fields are local-only and never synced or stored in sync tables, so `{key}` has no meaning here; remove `{key}` or remove `skip`"
                    ),
                );
            }
        }
        return;
    }

    if field.id {
        if let Some(p) = merge_path {
            cx.error_spanned_by(
                p,
                "the id never changes, so it has no merge strategy; remove `merge` from the #[sync(id)] field",
            );
        }
        for (key, why) in [
            ("immutable", "an id is always immutable"),
            ("json", "an id is a Uuid column"),
            (
                "references",
                "an id identifies this record; put `references` on a field holding another record's id",
            ),
            ("default", "every record has its own id"),
        ] {
            if let Some(p) = attrs.path_of(key) {
                cx.error_spanned_by(
                    p,
                    format!("`{key}` cannot be used on the #[sync(id)] field: {why}; remove it"),
                );
            }
        }
        let is_uuid = field.ty.kind
            == TypeKind::Scalar {
                scalar: ScalarType::Uuid,
            }
            && !field.ty.nullable;
        if !is_uuid && !attrs.json.present() {
            cx.error_spanned_by(
                ty,
                "the #[sync(id)] field must be a `Uuid` (v7 preferred): ids are created offline on many devices and must never collide",
            );
        }
        return;
    }

    if field.immutable
        && let Some(p) = merge_path
    {
        cx.error_spanned_by(
            p,
            "an `immutable` field is set when the record is created and never patched, so it never merges; remove `merge` or remove `immutable`",
        );
    }

    let json = matches!(field.ty.kind, TypeKind::Json { .. });
    match field.merge {
        MergeStrategy::Sum => {
            let numeric = matches!(
                field.ty.kind,
                TypeKind::Scalar {
                    scalar: ScalarType::I8
                        | ScalarType::I16
                        | ScalarType::I32
                        | ScalarType::I64
                        | ScalarType::F32
                        | ScalarType::F64
                }
            );
            if json {
                cx.error_spanned_by(
                    merge_path.expect("sum is never the default"),
                    "a #[sync(json)] value is opaque to merges: only \"lww\" and \"manual\" apply to it",
                );
            } else if !numeric || field.ty.nullable {
                cx.error_spanned_by(
                    ty,
                    format!(
                        "`sum` adds concurrent increments and decrements, so it needs a non-optional signed integer or float (i8, i16, i32, i64, f32, f64), but `{}` is `{}`; use \"lww\" (the default) or \"manual\" for other types",
                        field.rust_name,
                        crate::types::type_to_string(ty)
                    ),
                );
            }
        }
        MergeStrategy::Union => {
            if json {
                cx.error_spanned_by(
                    merge_path.expect("union is never the default"),
                    "a #[sync(json)] value is opaque to merges: only \"lww\" and \"manual\" apply to it; drop `json` and use BTreeSet<T>, HashSet<T> or Vec<T> for a union",
                );
            } else if !matches!(field.ty.kind, TypeKind::Set { .. }) {
                cx.error_spanned_by(
                    ty,
                    format!(
                        "`union` merges sets, so it needs BTreeSet<T>, HashSet<T> or Vec<T>, but `{}` is `{}`; use \"sum\" for counters, \"lww\" or \"manual\" for single values",
                        field.rust_name,
                        crate::types::type_to_string(ty)
                    ),
                );
            }
        }
        MergeStrategy::Lww | MergeStrategy::Manual => {
            if let TypeKind::Set {
                collection: Collection::Vec,
                ..
            } = field.ty.kind
            {
                cx.error_spanned_by(
                    ty,
                    format!(
                        "`{}` is a `Vec`: add #[sync(merge = \"union\")] to sync it as a set (kept sorted, concurrent adds and removes merge), or #[sync(json)] to sync the list as one value",
                        field.rust_name
                    ),
                );
            }
        }
    }

    if let Some(target) = &field.references {
        let p = attrs.path_of("references").expect("references present");
        if field.ty.kind
            != (TypeKind::Scalar {
                scalar: ScalarType::Uuid,
            })
        {
            cx.error_spanned_by(
                ty,
                format!("`references = \"{target}\"` means this field holds a record id, so it must be `Uuid` or `Option<Uuid>`"),
            );
        } else if !is_identifier(target) {
            cx.error_spanned_by(p, format!("`{target}` is not an entity wire name"));
        }
    }

    for (key, value) in [("rename", &field.name), ("column", &field.column)] {
        if !is_identifier(value) || value.len() > MAX_IDENT_LEN {
            let at: &dyn quote::ToTokens = match attrs.path_of(key) {
                Some(p) => p,
                None => syn_field.ident.as_ref().expect("named field"),
            };
            cx.error_spanned_by(
                at,
                format!("`{value}` is not a portable identifier: use at most {MAX_IDENT_LEN} ASCII letters, digits and `_`, not starting with a digit"),
            );
        }
    }
    if let Some(old) = &field.renamed_from
        && (!is_identifier(old) || *old == field.name)
    {
        cx.error_spanned_by(
            attrs.path_of("renamed_from").expect("present"),
            format!("`renamed_from` names the field's previous wire name; `{old}` is not a different identifier"),
        );
    }
    if let Some(default) = &field.default {
        let ok = match &field.ty.kind {
            TypeKind::Scalar { scalar } => match scalar {
                ScalarType::Bool => default.is_boolean(),
                s if s.is_integer() => default.is_i64(),
                ScalarType::F32 | ScalarType::F64 => default.is_number(),
                ScalarType::String | ScalarType::Uuid | ScalarType::Timestamp => {
                    default.is_string()
                }
                _ => false,
            },
            TypeKind::Set { .. } => false,
            TypeKind::Json { .. } => true,
        };
        if !ok {
            cx.error_spanned_by(
                attrs.path_of("default").expect("present"),
                format!(
                    "default `{default}` does not fit `{}`{}",
                    crate::types::type_to_string(ty),
                    if matches!(field.ty.kind, TypeKind::Set { .. }) {
                        ": sets always default to empty; remove `default`"
                    } else {
                        ""
                    }
                ),
            );
        }
    }
    let _ = syn_field.span();
}
