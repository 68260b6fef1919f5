//! Every SQL statement the protocol runs, built once per dialect and model when the server
//! starts ([`Statements::new`]); requests only bind values.
//!
//! A statement's placeholders are numbered in the order of the arguments its caller binds,
//! which each statement's doc comment lists.

use std::collections::BTreeMap;

use sync_model::sql::{Dialect, meta};
use sync_model::{Entity, ScalarType};

use crate::db::{DbError, ph, q, sel};

/// The statements of one dialect and model.
pub(crate) struct Statements {
    /// `(account)`: creates the account's counter row if missing.
    pub(crate) account_ensure: String,
    /// `(account)` → `last_seq`, the row locked for the transaction.
    pub(crate) account_lock: String,
    /// `(account)` → `last_seq, horizon_seq`.
    pub(crate) account_horizon: String,
    /// `(last_seq, account)`.
    pub(crate) account_save_seq: String,
    /// `(horizon_seq, account, horizon_seq)`: raises the horizon, never lowers it.
    pub(crate) account_raise_horizon: String,
    /// `()` → `account` of every account.
    pub(crate) accounts_all: String,
    /// `(account, seq, entity_type, entity_id, version, deleted, committed_at)`.
    pub(crate) change_insert: String,
    /// `(account, seq)` → `committed_at`.
    pub(crate) change_committed_at: String,
    /// `(account, since, limit)` → `seq, entity_type, entity_id, committed_at` in order.
    pub(crate) changes_page: String,
    /// `(account)` → `seq, committed_at` of the account's newest change the reader sees.
    pub(crate) change_last: String,
    /// `(account, cutoff)` → `seq` of the changes committed before the cutoff.
    pub(crate) changes_before: String,
    /// `(account, seq)`: deletes the change rows below `seq`, except deletes (slim
    /// tombstones).
    pub(crate) changes_collect: String,
    /// `(account, entity_type, entity_id)` → `version, committed_at` of the record's last
    /// delete.
    pub(crate) last_delete: String,
    /// `(account, idempotency_key)` → `request_hash, state, response_body, created_at,
    /// response_status`.
    pub(crate) key_lookup: String,
    /// `(account, idempotency_key, request_hash, response_status, response_body,
    /// created_at, expires_at)`: stores a result (`done`), over an abandoned claim too.
    pub(crate) key_store: String,
    /// `(response_status, response_body, expires_at, account, key)`: gives a key whose
    /// mutation applied nothing (`conflict`, or rejected) the result of a later mutation
    /// that carries its change (IDEM-6).
    pub(crate) key_replace: String,
    /// `(now, never)`: compacts the keys whose retention ended.
    pub(crate) keys_compact: String,
    entities: BTreeMap<String, EntityStatements>,
}

/// The statements of one entity. Record reads select [`record_columns`] first.
pub(crate) struct EntityStatements {
    /// `(account, id)` → the record, locked for the transaction.
    pub(crate) load: String,
    /// The synced fields, the metadata (clocks, version, seq, server time, deleted), then
    /// `account`.
    pub(crate) insert: String,
    /// The synced fields but the id, the metadata as for `insert`, then `(account, id)`.
    pub(crate) update: String,
    /// `(account, after_seq, up_to_seq)` → the record, `sync_seq`, id.
    pub(crate) changed_between: String,
    /// `(account, pinned_seq, limit)` → the record, id; the first snapshot page.
    pub(crate) snapshot_first: String,
    /// `(account, pinned_seq, after_id, limit)` → the record, id; a later page.
    pub(crate) snapshot_after: String,
    /// `(account, pinned_seq)` → how many rows a snapshot pinned there holds.
    pub(crate) snapshot_count: String,
    /// `(account, seq)`: deletes the tombstones changed at or before `seq`.
    pub(crate) collect_tombstones: String,
}

impl Statements {
    /// Builds every statement for the dialect and the entities.
    pub(crate) fn new<'a>(d: Dialect, entities: impl IntoIterator<Item = &'a Entity>) -> Self {
        let text = "TEXT";
        let big = d.big_int_type();
        let ts = sync_model::sql::scalar_type(ScalarType::Timestamp, d);
        let uuid = sync_model::sql::scalar_type(ScalarType::Uuid, d);
        let boolean = sync_model::sql::scalar_type(ScalarType::Bool, d);
        let true_lit = d.bool_literal(true);
        let lock = d.row_lock();
        let accounts = q(d, meta::ACCOUNTS);
        let changes = q(d, meta::CHANGES);
        let keys = q(d, meta::IDEMPOTENCY);
        let account = q(d, meta::ACCOUNT);
        let c = |name: &str| q(d, name);
        let p = |n: usize, ty: &str| ph(d, n, ty);
        Statements {
            account_ensure: format!(
                "INSERT INTO {accounts} ({account}) VALUES ({}) ON CONFLICT ({account}) DO NOTHING",
                p(1, text)
            ),
            account_lock: format!(
                "SELECT {} FROM {accounts} WHERE {account} = {}{lock}",
                sel(d, "last_seq"),
                p(1, text)
            ),
            account_horizon: format!(
                "SELECT {}, {} FROM {accounts} WHERE {account} = {}",
                sel(d, "last_seq"),
                sel(d, "horizon_seq"),
                p(1, text)
            ),
            account_save_seq: format!(
                "UPDATE {accounts} SET {} = {} WHERE {account} = {}",
                c("last_seq"),
                p(1, big),
                p(2, text)
            ),
            account_raise_horizon: format!(
                "UPDATE {accounts} SET {h} = {} WHERE {account} = {} AND {h} < {}",
                p(1, big),
                p(2, text),
                p(3, big),
                h = c("horizon_seq"),
            ),
            accounts_all: format!("SELECT {} FROM {accounts}", sel(d, meta::ACCOUNT)),
            change_insert: format!(
                "INSERT INTO {changes} ({account}, {}, {}, {}, {}, {}, {}) VALUES ({}, {}, {}, {}, {}, {}, {})",
                c("seq"),
                c("entity_type"),
                c("entity_id"),
                c("version"),
                c("deleted"),
                c("committed_at"),
                p(1, text),
                p(2, big),
                p(3, text),
                p(4, uuid),
                p(5, big),
                p(6, boolean),
                p(7, ts),
            ),
            change_committed_at: format!(
                "SELECT {} FROM {changes} WHERE {account} = {} AND {} = {}",
                sel(d, "committed_at"),
                p(1, text),
                c("seq"),
                p(2, big),
            ),
            changes_page: format!(
                "SELECT {}, {}, {}, {} FROM {changes} WHERE {account} = {} AND {seq} > {} ORDER BY {seq} LIMIT {}",
                sel(d, "seq"),
                sel(d, "entity_type"),
                sel(d, "entity_id"),
                sel(d, "committed_at"),
                p(1, text),
                p(2, big),
                p(3, big),
                seq = c("seq"),
            ),
            change_last: format!(
                "SELECT {}, {} FROM {changes} WHERE {account} = {} ORDER BY {seq} DESC LIMIT 1",
                sel(d, "seq"),
                sel(d, "committed_at"),
                p(1, text),
                seq = c("seq"),
            ),
            changes_before: format!(
                "SELECT {} FROM {changes} WHERE {account} = {} AND {} < {}",
                sel(d, "seq"),
                p(1, text),
                c("committed_at"),
                p(2, ts)
            ),
            changes_collect: format!(
                "DELETE FROM {changes} WHERE {account} = {} AND {} < {} AND {} <> {true_lit}",
                p(1, text),
                c("seq"),
                p(2, big),
                c("deleted"),
            ),
            last_delete: format!(
                "SELECT {}, {} FROM {changes} WHERE {account} = {} AND {} = {} AND {} = {} AND {} = {true_lit} ORDER BY {} DESC LIMIT 1",
                sel(d, "version"),
                sel(d, "committed_at"),
                p(1, text),
                c("entity_type"),
                p(2, text),
                c("entity_id"),
                p(3, uuid),
                c("deleted"),
                c("seq"),
            ),
            key_lookup: format!(
                "SELECT {}, {}, {}, {}, {} FROM {keys} WHERE {account} = {} AND {} = {}",
                sel(d, "request_hash"),
                sel(d, "state"),
                sel(d, "response_body"),
                sel(d, "created_at"),
                sel(d, "response_status"),
                p(1, text),
                c("idempotency_key"),
                p(2, text),
            ),
            key_replace: format!(
                "UPDATE {keys} SET {s} = 'done', {rs} = {}, {rb} = {}, {e} = {} WHERE {account} = {} AND {k} = {} AND {rs} <> 200",
                p(1, big),
                p(2, text),
                p(3, ts),
                p(4, text),
                p(5, text),
                k = c("idempotency_key"),
                s = c("state"),
                rs = c("response_status"),
                rb = c("response_body"),
                e = c("expires_at"),
            ),
            key_store: format!(
                "INSERT INTO {keys} ({account}, {k}, {h}, {s}, {rs}, {rb}, {cr}, {e}) VALUES ({}, {}, {}, 'done', {}, {}, {}, {}) ON CONFLICT ({account}, {k}) DO UPDATE SET {h} = excluded.{h}, {s} = 'done', {rs} = excluded.{rs}, {rb} = excluded.{rb}, {cr} = excluded.{cr}, {e} = excluded.{e}",
                p(1, text),
                p(2, text),
                p(3, text),
                p(4, big),
                p(5, text),
                p(6, ts),
                p(7, ts),
                k = c("idempotency_key"),
                h = c("request_hash"),
                s = c("state"),
                rs = c("response_status"),
                rb = c("response_body"),
                cr = c("created_at"),
                e = c("expires_at"),
            ),
            keys_compact: format!(
                "UPDATE {keys} SET {s} = 'compacted', {rb} = NULL, {e} = {} WHERE {s} = 'done' AND {e} < {}",
                p(2, ts),
                p(1, ts),
                s = c("state"),
                rb = c("response_body"),
                e = c("expires_at"),
            ),
            entities: entities
                .into_iter()
                .map(|e| (e.name.clone(), EntityStatements::new(d, e)))
                .collect(),
        }
    }

    /// The statements of the entity named `name` (its wire name).
    ///
    /// # Errors
    ///
    /// [`DbError::Invalid`] for an entity the server was not started with.
    pub(crate) fn entity(&self, e: &Entity) -> Result<&EntityStatements, DbError> {
        self.entities
            .get(&e.name)
            .ok_or_else(|| DbError::Invalid(format!("no statements for entity `{}`", e.name)))
    }
}

impl EntityStatements {
    fn new(d: Dialect, e: &Entity) -> Self {
        let text = "TEXT";
        let big = d.big_int_type();
        let uuid = sync_model::sql::scalar_type(ScalarType::Uuid, d);
        let table = q(d, &e.table);
        let account = q(d, meta::ACCOUNT);
        let id = q(d, &e.id_field().column);
        let seq = q(d, meta::SEQ);
        let record = record_columns(d, e).join(", ");
        let p = |n: usize, ty: &str| ph(d, n, ty);

        // The written columns with their types: the synced fields, then the metadata.
        let mut written: Vec<(String, &str)> = e
            .synced_fields()
            .map(|f| (q(d, &f.column), sync_model::sql::column_type(&f.ty, d)))
            .collect();
        for (col, ty) in [
            (meta::CLOCKS, d.json_type()),
            (meta::VERSION, big),
            (meta::SEQ, big),
            (
                meta::SERVER_UPDATED_AT,
                sync_model::sql::scalar_type(ScalarType::Timestamp, d),
            ),
            (
                meta::DELETED,
                sync_model::sql::scalar_type(ScalarType::Bool, d),
            ),
        ] {
            written.push((q(d, col), ty));
        }
        let sets: Vec<String> = written
            .iter()
            .enumerate()
            .filter(|(_, (col, _))| *col != id)
            .map(|(i, (col, ty))| format!("{col} = {}", p(i + 1, ty)))
            .collect();
        let n = written.len();
        let mut insert_cols: Vec<&str> = written.iter().map(|(col, _)| col.as_str()).collect();
        insert_cols.push(&account);
        let mut insert_phs: Vec<String> = written
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| p(i + 1, ty))
            .collect();
        insert_phs.push(p(n + 1, text));
        let id_sel = sel(d, &e.id_field().column);

        EntityStatements {
            load: format!(
                "SELECT {record} FROM {table} WHERE {account} = {} AND {id} = {}{}",
                p(1, text),
                p(2, uuid),
                d.row_lock()
            ),
            insert: format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                insert_cols.join(", "),
                insert_phs.join(", ")
            ),
            update: format!(
                "UPDATE {table} SET {} WHERE {account} = {} AND {id} = {}",
                sets.join(", "),
                p(n + 1, text),
                p(n + 2, uuid)
            ),
            changed_between: format!(
                "SELECT {record}, {}, {id_sel} FROM {table} WHERE {account} = {} AND {seq} > {} AND {seq} <= {}",
                sel(d, meta::SEQ),
                p(1, text),
                p(2, big),
                p(3, big),
            ),
            snapshot_first: format!(
                "SELECT {record}, {id_sel} FROM {table} WHERE {account} = {} AND {seq} <= {} ORDER BY {id} LIMIT {}",
                p(1, text),
                p(2, big),
                p(3, big),
            ),
            snapshot_after: format!(
                "SELECT {record}, {id_sel} FROM {table} WHERE {account} = {} AND {seq} <= {} AND {id} > {} ORDER BY {id} LIMIT {}",
                p(1, text),
                p(2, big),
                p(3, uuid),
                p(4, big),
            ),
            snapshot_count: format!(
                // Read back as every column is (PostgreSQL's as JSON text).
                "SELECT {} FROM {table} WHERE {account} = {} AND {seq} <= {}",
                match d {
                    Dialect::Postgres => "to_json(COUNT(*))::text",
                    _ => "COUNT(*)",
                },
                p(1, text),
                p(2, big),
            ),
            collect_tombstones: format!(
                "DELETE FROM {table} WHERE {account} = {} AND {} = {} AND {seq} <= {}",
                p(1, text),
                q(d, meta::DELETED),
                d.bool_literal(true),
                p(2, big),
            ),
        }
    }
}

/// The columns [`super::stored_from_row`] reads: the synced fields, then the sync metadata
/// (clocks, version, deleted, server time).
pub(crate) fn record_columns(d: Dialect, e: &Entity) -> Vec<String> {
    let mut cols: Vec<String> = e.synced_fields().map(|f| sel(d, &f.column)).collect();
    for c in [
        meta::CLOCKS,
        meta::VERSION,
        meta::DELETED,
        meta::SERVER_UPDATED_AT,
    ] {
        cols.push(sel(d, c));
    }
    cols
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Entity {
        let src = r#"
            #[derive(Syncable)]
            #[sync(table = "tasks")]
            struct Task {
                #[sync(id)]
                id: Uuid,
                #[sync(merge = "lww")]
                title: String,
                #[sync(merge = "sum")]
                points: i64,
            }
        "#;
        crate::logic::entity_of(src)
    }

    #[test]
    fn placeholders_follow_the_bound_arguments() {
        let e = task();
        let s = Statements::new(Dialect::Sqlite, [&e]);
        let es = s.entity(&e).unwrap();
        // id, title, points, 5 metadata columns, account.
        assert!(
            es.insert
                .ends_with("VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
        );
        assert!(
            es.update
                .contains("WHERE \"sync_account\" = ?9 AND \"id\" = ?10")
        );
        assert!(!es.update.contains("\"id\" = ?1,"));
        assert!(s.changes_page.ends_with("LIMIT ?3"));
        assert!(es.snapshot_after.ends_with("ORDER BY \"id\" LIMIT ?4"));
    }

    #[test]
    fn postgres_locks_rows_and_casts_placeholders() {
        let e = task();
        let s = Statements::new(Dialect::Postgres, [&e]);
        assert!(s.account_lock.ends_with(" FOR UPDATE"));
        assert!(s.entity(&e).unwrap().load.ends_with(" FOR UPDATE"));
        assert!(s.changes_page.ends_with("LIMIT CAST($3 AS BIGINT)"));
        assert!(s.key_store.contains("CAST($4 AS BIGINT)"));
    }

    #[test]
    fn an_unknown_entity_is_an_error_not_a_panic() {
        let e = task();
        let s = Statements::new(Dialect::Sqlite, []);
        assert!(matches!(s.entity(&e), Err(DbError::Invalid(_))));
    }
}
