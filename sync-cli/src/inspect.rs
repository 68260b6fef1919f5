//! `sync-cli inspect`: the model as a table, the way the generators see it.

use std::fmt::Write;

use sync_model::{Model, TypeKind};

use crate::render::sql_types;

/// Renders every entity's fields, types, merge strategies and columns as text tables.
pub fn inspect(model: &Model) -> String {
    let mut out = String::new();
    for e in &model.entities {
        let _ = writeln!(
            out,
            "{} (entity `{}`, table `{}`, outbox {:?}, fingerprint {})",
            e.rust_name,
            e.name,
            e.table,
            e.outbox,
            sync_model::fingerprint_entity(e)
        );
        let mut rows = vec![[
            "field".to_string(),
            "wire".to_string(),
            "type".to_string(),
            "merge".to_string(),
            "column".to_string(),
            "sqlite / postgres / mysql".to_string(),
            "flags".to_string(),
        ]];
        for f in &e.fields {
            let ty = match &f.ty.kind {
                TypeKind::Scalar { scalar } => scalar.rust_name().to_string(),
                TypeKind::Set { collection, item } => {
                    format!("{collection:?}<{}>", item.rust_name())
                }
                TypeKind::Json { rust_type } => format!("json {rust_type}"),
            };
            let ty = if f.ty.nullable {
                format!("Option<{ty}>")
            } else {
                ty
            };
            let mut flags = Vec::new();
            if f.id {
                flags.push("id".to_string());
            }
            if f.immutable {
                flags.push("immutable".to_string());
            }
            if let Some(r) = &f.references {
                flags.push(format!("references {r}"));
            }
            if let Some(d) = &f.default {
                flags.push(format!("default {d}"));
            }
            if f.skip {
                let ty = match &f.ty.kind {
                    TypeKind::Json { rust_type } => rust_type.clone(),
                    _ => ty,
                };
                rows.push([
                    f.rust_name.clone(),
                    "-".into(),
                    ty,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "skip (local only)".into(),
                ]);
                continue;
            }
            let [a, b, c] = sql_types(&f.ty);
            rows.push([
                f.rust_name.clone(),
                f.name.clone(),
                ty,
                if f.id {
                    "-".to_string()
                } else {
                    f.merge.to_string()
                },
                f.column.clone(),
                format!("{a} / {b} / {c}"),
                flags.join(", "),
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for (n, row) in rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "  {}", line.join("  ").trim_end());
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(out, "  {}", rule.join("  "));
            }
        }
        out.push('\n');
    }
    out
}
