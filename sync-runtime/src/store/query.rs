//! Reading records: by id, all, by a simple query, and a record's sync metadata.

use super::*;
use sync_model::sql::meta;

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

    /// Live records matching a query.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::UnknownField`] if a filter or the ordering names something that is
    /// not a synced field's wire name; [`StoreError::Corrupt`] if a filter value does not
    /// have its field's type (for example a string for a `bool` field), or a column holds
    /// a value of the wrong SQLite type; [`StoreError::Record`] if a stored record does
    /// not fit `T`; [`StoreError::Sqlite`] if the database fails.
    pub fn query<T: Syncable>(&self, query: &Query) -> Result<Vec<T>, StoreError> {
        let entity = self.entity::<T>()?;
        let field = |name: &str| {
            entity.field(name).ok_or_else(|| StoreError::UnknownField {
                entity: T::ENTITY,
                field: name.to_string(),
            })
        };
        let mut sql = self.table::<T>()?.select_live.clone();
        let mut args: Vec<Sql> = Vec::new();
        for (name, op, value) in &query.filters {
            let f = field(name)?;
            if value.is_null() {
                let not = if *op == "<>" { "NOT " } else { "" };
                sql.push_str(&format!(" AND {} IS {not}NULL", q(&f.column)));
            } else {
                sql.push_str(&format!(" AND {} {op} ?", q(&f.column)));
                args.push(columns::to_sql(f, value)?);
            }
        }
        match &query.order {
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
        if let Some(n) = query.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params_from_iter(args))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let row = row_from_sql(entity, r)?;
            out.push(T::from_record(&row.record)?);
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
