//! Reading records: by id, all, by a simple query, and a record's sync metadata.

use super::*;
use sync_model::sql::meta;
use sync_model::{Field, ScalarType, TypeKind};

/// A time column (the canonical text of [`crate::time`]) read back.
pub(crate) fn time_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    let Some(text) = r.get::<_, Option<String>>(i)? else {
        return Ok(None);
    };
    crate::time::parse(&text).map(Some).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("`{text}` is not an RFC 3339 time").into(),
        )
    })
}

/// A time column that is never NULL.
pub(crate) fn time_col_required(
    r: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<DateTime<Utc>> {
    time_col(r, i)?.ok_or(rusqlite::Error::InvalidColumnType(
        i,
        "time".into(),
        rusqlite::types::Type::Null,
    ))
}

pub(crate) fn q(ident: &str) -> String {
    sync_model::sql::Dialect::Sqlite.quote(ident)
}

/// A field's type as the model's source writes it (`i64`, `Option<String>`,
/// `BTreeSet<String>`), for query errors.
fn type_name(f: &Field) -> String {
    let inner = match &f.ty.kind {
        TypeKind::Scalar { scalar } => scalar.rust_name().to_string(),
        TypeKind::Set { item, .. } => format!("a set of {}", item.rust_name()),
        TypeKind::Json { rust_type } => rust_type.clone(),
    };
    if f.ty.nullable {
        format!("Option<{inner}>")
    } else {
        inner
    }
}

/// The JSON kind of a value, for query errors.
fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// Appends one filter's condition to `sql` (` AND ...`) and its arguments to `args`.
fn filter_sql<'f>(
    entity: &'static str,
    filter: &Filter,
    field: &dyn Fn(&str) -> Result<&'f Field, StoreError>,
    sql: &mut String,
    args: &mut Vec<Sql>,
) -> Result<(), StoreError> {
    let invalid = |f: &Field, reason: String| StoreError::InvalidQuery {
        entity,
        field: f.name.clone(),
        reason,
    };
    // A value of the field's type, as SQLite holds it.
    let value_of = |f: &Field, v: &Result<Json, String>| -> Result<Sql, StoreError> {
        let v = v
            .as_ref()
            .map_err(|e| invalid(f, format!("the value does not serialise: {e}")))?;
        columns::to_sql(f, v).map_err(|_| {
            invalid(
                f,
                format!(
                    "`{}` is `{}`, but the value is {} ({v})",
                    f.name,
                    type_name(f),
                    kind(v)
                ),
            )
        })
    };
    match filter {
        Filter::Compare {
            field: name,
            op,
            value,
        } => {
            let f = field(name)?;
            if let Ok(Json::Null) = value {
                let not = if *op == "<>" { "NOT " } else { "" };
                if !matches!(*op, "=" | "<>") {
                    return Err(invalid(f, format!("`{op}` needs a value, not null")));
                }
                sql.push_str(&format!(" AND {} IS {not}NULL", q(&f.column)));
            } else {
                let v = value_of(f, value)?;
                sql.push_str(&format!(" AND {} {op} ?", q(&f.column)));
                args.push(v);
            }
        }
        Filter::Contains { field: name, item } => {
            let f = field(name)?;
            let TypeKind::Set { item: scalar, .. } = f.ty.kind else {
                return Err(invalid(
                    f,
                    format!(
                        "`contains` tests a set (a `union` field); `{}` is `{}`",
                        f.name,
                        type_name(f)
                    ),
                ));
            };
            // The item is checked as a value of the set's item type.
            let mut as_item = f.clone();
            as_item.ty.kind = TypeKind::Scalar { scalar };
            as_item.ty.nullable = false;
            let v = match item {
                Ok(Json::Null) => {
                    return Err(invalid(f, "a set holds no null item".to_string()));
                }
                other => value_of(&as_item, other).map_err(|_| {
                    invalid(
                        f,
                        format!(
                            "`{}` is `{}`, but the item is {}",
                            f.name,
                            type_name(f),
                            item.as_ref().map_or("not serialisable", kind)
                        ),
                    )
                })?,
            };
            sql.push_str(&format!(
                " AND EXISTS (SELECT 1 FROM json_each({}) WHERE json_each.value = ?)",
                q(&f.column)
            ));
            args.push(v);
        }
        Filter::Null { field: name, null } => {
            let f = field(name)?;
            if !f.ty.nullable {
                return Err(invalid(
                    f,
                    format!(
                        "`{}` is `{}`, never null; `is_null` and `is_not_null` test an `Option` field",
                        f.name,
                        type_name(f)
                    ),
                ));
            }
            let not = if *null { "" } else { "NOT " };
            sql.push_str(&format!(" AND {} IS {not}NULL", q(&f.column)));
        }
        Filter::In {
            field: name,
            values,
        } => {
            let f = field(name)?;
            let values = values
                .as_ref()
                .map_err(|e| invalid(f, format!("a value does not serialise: {e}")))?;
            let with_null = values.iter().any(Json::is_null);
            let mut marks = Vec::new();
            for v in values.iter().filter(|v| !v.is_null()) {
                args.push(value_of(f, &Ok(v.clone()))?);
                marks.push("?");
            }
            let col = q(&f.column);
            match (marks.is_empty(), with_null) {
                (true, false) => sql.push_str(" AND 0"),
                (true, true) => sql.push_str(&format!(" AND {col} IS NULL")),
                (false, false) => sql.push_str(&format!(" AND {col} IN ({})", marks.join(", "))),
                (false, true) => sql.push_str(&format!(
                    " AND ({col} IN ({}) OR {col} IS NULL)",
                    marks.join(", ")
                )),
            }
        }
        Filter::Prefix {
            field: name,
            prefix,
        } => {
            let f = field(name)?;
            if !matches!(
                f.ty.kind,
                TypeKind::Scalar {
                    scalar: ScalarType::String
                }
            ) {
                return Err(invalid(
                    f,
                    format!(
                        "`starts_with` tests a string field; `{}` is `{}`",
                        f.name,
                        type_name(f)
                    ),
                ));
            }
            // By characters, as SQLite's `substr` and `length` count them in text (no
            // `LIKE`: its wildcards and case folding would need escaping).
            let chars = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX);
            sql.push_str(&format!(" AND substr({}, 1, ?) = ?", q(&f.column)));
            args.push(Sql::Integer(chars));
            args.push(Sql::Text(prefix.clone()));
        }
    }
    Ok(())
}

impl LocalStore {
    /// The live record with this id.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Corrupt`] if a column holds a value of the wrong SQLite type;
    /// [`StoreError::Record`] if the stored record does not fit `T`;
    /// [`StoreError::Sqlite`] if the database fails. No record is `Ok(None)`, not an error.
    pub fn get<T: Syncable>(&self, id: Uuid) -> Result<Option<T>, StoreError> {
        let table = self.table::<T>()?;
        let conn = self.conn();
        match read_row(&conn, table, id)? {
            Some(row) if !row.deleted => Ok(Some(T::from_record(&row.record)?)),
            _ => Ok(None),
        }
    }

    /// Every live record of a type, in id order.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Corrupt`] if a column holds a value of the wrong SQLite type;
    /// [`StoreError::Record`] if a stored record does not fit `T`;
    /// [`StoreError::Sqlite`] if the database fails.
    pub fn list<T: Syncable>(&self) -> Result<Vec<T>, StoreError> {
        self.query(&Query::new())
    }

    /// Live records matching a query (see [`Query`] for the filters), in the query's
    /// order, then by id.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::UnknownField`] if a filter or the ordering names something that is
    /// not a synced field's wire name; [`StoreError::InvalidQuery`] if a filter value
    /// does not have its field's type (for example a string for a `bool` field) or the
    /// filter's test does not apply to it (`contains` on a field that is not a set,
    /// `starts_with` on one that is not a string, `is_null` on one that is not
    /// optional); [`StoreError::Corrupt`] if a column holds a value of the wrong SQLite
    /// type; [`StoreError::Record`] if a stored record does not fit `T`;
    /// [`StoreError::Sqlite`] if the database fails.
    pub fn query<T: Syncable>(&self, query: &Query) -> Result<Vec<T>, StoreError> {
        self.query_records::<T>(query)?
            .iter()
            .map(|r| Ok(T::from_record(r)?))
            .collect()
    }

    /// [`LocalStore::query`]'s records, as stored.
    pub(crate) fn query_records<T: Syncable>(
        &self,
        query: &Query,
    ) -> Result<Vec<Record>, StoreError> {
        let entity = self.entity::<T>()?;
        let field = |name: &str| {
            entity.field(name).ok_or_else(|| StoreError::UnknownField {
                entity: T::ENTITY,
                field: name.to_string(),
            })
        };
        let mut sql = self.table::<T>()?.select_live.clone();
        let mut args: Vec<Sql> = Vec::new();
        for filter in query.filters() {
            filter_sql(T::ENTITY, filter, &field, &mut sql, &mut args)?;
        }
        match query.order() {
            Some((name, desc)) => {
                let f = field(name)?;
                sql.push_str(&format!(
                    " ORDER BY {} {}, {}",
                    q(&f.column),
                    if *desc { "DESC" } else { "ASC" },
                    q(&entity.id_field().column)
                ));
            }
            None => sql.push_str(&format!(" ORDER BY {}", q(&entity.id_field().column))),
        }
        if let Some(n) = query.max() {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(row_from_sql(entity, r)?.record);
        }
        Ok(out)
    }

    /// The sync metadata of a record (also of a tombstone).
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Corrupt`] if the stored `sync_status` or `sync_updated_at` cannot be
    /// parsed; [`StoreError::Sqlite`] if the database fails. No row is `Ok(None)`.
    pub fn record_meta<T: Syncable>(&self, id: Uuid) -> Result<Option<RecordMeta>, StoreError> {
        let entity = self.entity::<T>()?;
        let conn = self.conn();
        let sql = format!(
            "SELECT {}, {}, {}, {} FROM {} WHERE {} = ?1",
            q(meta::STATUS),
            q(meta::UPDATED_AT),
            q(meta::VERSION),
            q(meta::DELETED),
            q(&entity.table),
            q(&entity.id_field().column)
        );
        conn.query_row(&sql, [id.to_string()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .optional()?
        .map(|(sync_status, updated_at, version, deleted)| {
            Ok(RecordMeta {
                sync_status: RecordStatus::parse(&sync_status)?,
                updated_at: updated_at
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("sync_updated_at `{updated_at}`")))?,
                version,
                deleted: deleted != 0,
            })
        })
        .transpose()
    }
}
