//! What the sync engine does to the local database: pick the next outbox items, record
//! what the server answered, apply pulled records, keep conflicts for the user.
//!
//! Each function is one transaction, so a process killed at any point resumes from a
//! consistent state: an item is `sending` only between [`LocalStore::next_batch`] and the
//! recording of its result, and [`LocalStore::recover_sending`] puts such items back in
//! the queue, to be sent again with the same idempotency key and body.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

use super::{
    ChangeKind, LocalStore, OutboxItem, OutboxStatus, StoreError, StoreEvent, Table, columns,
    enqueue, q, read_outbox, read_row, to_json_string,
};
use crate::erased::AnyPayload;
use crate::hlc::Hlc;
use crate::merge::FieldConflict;
use crate::protocol::{MutationOp, MutationResult, ServerRecord};
use crate::syncable::{Patch, Record, Syncable};

/// The outbox payload of a create, owned.
#[derive(Serialize)]
struct CreatePayloadOwned {
    record: Record,
    clocks: Json,
    /// For a record created again after the server lost it: the last version both sides
    /// knew (`{record, clocks}`), the base of a merge if another device re-creates it
    /// too. Local to the outbox: not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    resend_base: Option<Json>,
}

/// `{record, clocks}` of a base copy, for [`CreatePayloadOwned::resend_base`].
fn resend_base(record: &Record, clocks: &Json) -> Option<Json> {
    Some(serde_json::json!({ "record": record, "clocks": clocks }))
}

/// Why a sync starts over with a snapshot (see [`LocalStore::reset_token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restart {
    /// The change token is older than the server's horizon (`token-expired`).
    Collected,
    /// The server did not issue the token (`token-unknown`): restored or replaced.
    Unknown,
}

/// Where a sync of one account stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The token to pull changes from, once the first snapshot completed.
    pub change_token: Option<String>,
    /// The cursor of the next snapshot page, while a snapshot is under way.
    pub snapshot_cursor: Option<String>,
    /// The token the snapshot under way is pinned to.
    pub snapshot_token: Option<String>,
    /// When a sync last completed.
    pub last_sync_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// What happened to an outbox item after the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ItemOutcome {
    /// Applied by the server; the base copy moved to the server's record.
    Applied,
    /// The server had moved on; the generated merge combined both sides and the result
    /// was queued again.
    Merged,
    /// `manual` fields changed on both sides: the record is `conflicted` until the user
    /// resolves it; the rest of the merge was queued.
    Conflicted(Vec<String>),
    /// The server deleted the record while it was edited here: delete wins, the local
    /// edits are dropped (documented rule).
    Superseded(String),
    /// Rejected by the server; kept as a dead item with the reason.
    Dead(String),
}

/// An unresolved conflict: the record and each `manual` field both sides changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The entity's wire name.
    pub entity: String,
    /// The record's id.
    pub id: Uuid,
    /// The fields, with base, local and server values.
    pub fields: Vec<FieldConflict>,
}

/// The base copy (last server-acknowledged record).
struct Base {
    record: Record,
    clocks: Json,
    version: i64,
    server_updated_at: String,
    deleted: bool,
}

impl Base {
    fn as_server_record(&self, entity: &str, id: Uuid) -> ServerRecord {
        ServerRecord {
            entity_type: entity.to_string(),
            entity_id: id,
            version: self.version,
            server_updated_at: self.server_updated_at.clone(),
            deleted: self.deleted,
            record: self.record.clone(),
            clocks: self.clocks.clone(),
        }
    }
}

/// The pull path's statements for one entity, built once when the store opens (building
/// them per record cost more than SQLite's own work on a page of changes).
pub(super) struct PullSql {
    /// `SELECT <synced columns>, clocks, version, server_updated_at, deleted FROM base WHERE id = ?1`.
    read_base: String,
    /// Upsert of the base copy, same column order as `read_base`.
    write_base: String,
    /// Upsert of the local row: synced columns then the six metadata columns.
    put_row: String,
    /// `SELECT sync_status = 'conflicted' FROM t WHERE id = ?1`.
    conflicted: String,
    /// Copies a clean, acknowledged row into the base table unless a base exists.
    keep_base: String,
    /// Whether the entity has no rows, no base copies and no outbox items at all (the
    /// first sync of a new device): then no pulled record needs the probe.
    empty: String,
    /// What the store knows of one record (see [`Probe`]).
    probe: String,
    /// `UPDATE t SET sync_status = ?1, sync_version = COALESCE(?2, sync_version) WHERE id = ?3`.
    set_meta: String,
}

impl PullSql {
    pub(super) fn new(e: &sync_model::Entity) -> Self {
        let id = q(&e.id_field().column);
        let synced: Vec<String> = e.synced_fields().map(|f| q(&f.column)).collect();
        let upsert = |table: &str, meta: &[&str]| {
            let cols: Vec<String> = synced
                .iter()
                .cloned()
                .chain(meta.iter().map(|c| q(c)))
                .collect();
            let updates: Vec<String> = cols
                .iter()
                .filter(|c| **c != id)
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            format!(
                "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({id}) DO UPDATE SET {}",
                q(table),
                cols.join(", "),
                vec!["?"; cols.len()].join(", "),
                updates.join(", ")
            )
        };
        let base_meta = [
            "sync_clocks",
            "sync_version",
            "sync_server_updated_at",
            "sync_deleted",
        ];
        let base_table = format!("sync_base_{}", e.table);
        let base_cols: Vec<String> = synced
            .iter()
            .cloned()
            .chain(base_meta.iter().map(|c| q(c)))
            .collect();
        PullSql {
            read_base: format!(
                "SELECT {} FROM {} WHERE {id} = ?1",
                base_cols.join(", "),
                q(&base_table)
            ),
            write_base: upsert(&base_table, &base_meta),
            put_row: upsert(
                &e.table,
                &[
                    "sync_clocks",
                    "sync_updated_at",
                    "sync_status",
                    "sync_deleted",
                    "sync_version",
                    "sync_server_updated_at",
                ],
            ),
            conflicted: format!(
                "SELECT {} = 'conflicted' FROM {} WHERE {id} = ?1",
                q("sync_status"),
                q(&e.table)
            ),
            empty: format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {t}) AND NOT EXISTS (SELECT 1 FROM {base}) AND NOT EXISTS (SELECT 1 FROM \"sync_outbox\" WHERE \"entity_type\" = ?1)",
                base = q(&base_table),
                t = q(&e.table),
            ),
            probe: format!(
                "SELECT (SELECT {v} FROM {base} WHERE {id} = ?1), (SELECT {v} FROM {t} WHERE {id} = ?1), (SELECT {s} IN ('clean', 'syncing') FROM {t} WHERE {id} = ?1), EXISTS (SELECT 1 FROM \"sync_outbox\" WHERE \"entity_type\" = ?2 AND \"entity_id\" = ?1 AND \"status\" <> 'dead'), (SELECT {s} = 'syncing' FROM {t} WHERE {id} = ?1), (SELECT {at} FROM {base} WHERE {id} = ?1), (SELECT {at} FROM {t} WHERE {id} = ?1), (SELECT {d} FROM {t} WHERE {id} = ?1)",
                base = q(&base_table),
                t = q(&e.table),
                v = q("sync_version"),
                s = q("sync_status"),
                at = q("sync_server_updated_at"),
                d = q("sync_deleted"),
            ),
            keep_base: format!(
                "INSERT INTO {base} ({cols}) SELECT {cols} FROM {t} WHERE {id} = ?1 AND {v} IS NOT NULL AND {s} IN ('clean', 'syncing') ON CONFLICT ({id}) DO NOTHING",
                base = q(&base_table),
                cols = base_cols.join(", "),
                t = q(&e.table),
                v = q("sync_version"),
                s = q("sync_status"),
            ),
            set_meta: format!(
                "UPDATE {} SET {s} = ?1, {v} = COALESCE(?2, {v}) WHERE {id} = ?3",
                q(&e.table),
                s = q("sync_status"),
                v = q("sync_version"),
            ),
        }
    }
}

fn read_base(conn: &Connection, table: &Table, id: Uuid) -> Result<Option<Base>, StoreError> {
    let e = table.entity;
    let mut stmt = conn.prepare_cached(&table.pull.read_base)?;
    let mut rows = stmt.query([id.to_string()])?;
    let Some(r) = rows.next()? else {
        return Ok(None);
    };
    let mut record = Record::new();
    let mut i = 0;
    for f in e.synced_fields() {
        record.insert(f.name.clone(), columns::from_sql(f, r.get_ref(i)?)?);
        i += 1;
    }
    let clocks: String = r.get(i)?;
    let server_updated_at: Option<String> = r.get(i + 2)?;
    let deleted: i64 = r.get(i + 3)?;
    Ok(Some(Base {
        record,
        clocks: serde_json::from_str(&clocks).unwrap_or(Json::Null),
        version: r.get(i + 1)?,
        server_updated_at: server_updated_at.unwrap_or_default(),
        deleted: deleted != 0,
    }))
}

/// Before the first local change to a clean row: copies the row, which is the server's
/// record, into the base table (a no-op if a base copy exists).
///
/// The base copy of a record is only kept while it is needed: a pulled record that the
/// device has not changed is written once, to its row, and its base is the row itself.
/// Every local write to an acknowledged row calls this first, so a row with local
/// changes always has its base copy.
pub(super) fn keep_base(conn: &Connection, table: &Table, id: Uuid) -> Result<(), StoreError> {
    conn.prepare_cached(&table.pull.keep_base)?
        .execute([id.to_string()])?;
    Ok(())
}

/// What the store knows of one record, in one statement.
struct Probe {
    /// The base copy's version, if there is a base copy.
    base: Option<i64>,
    /// The row's `sync_version`.
    row_version: Option<i64>,
    /// `Some(true)` for a clean row (its own base), `None` if there is no row.
    clean: Option<bool>,
    /// Whether the record has outbox items still to send.
    pending: bool,
    /// The row awaits confirmation by the snapshot under way (`syncing`).
    unconfirmed: bool,
    /// The base copy's `server_updated_at`, if there is a base copy.
    base_at: Option<String>,
    /// The row's `sync_server_updated_at`.
    row_at: Option<String>,
    /// The row is a tombstone.
    row_deleted: bool,
}

impl Probe {
    fn of(conn: &Connection, table: &Table, id: Uuid) -> Result<Self, StoreError> {
        Ok(conn.prepare_cached(&table.pull.probe)?.query_row(
            params![id.to_string(), table.entity.name],
            |x| {
                Ok(Probe {
                    base: x.get(0)?,
                    row_version: x.get(1)?,
                    clean: x.get(2)?,
                    pending: x.get(3)?,
                    unconfirmed: x.get::<_, Option<bool>>(4)?.unwrap_or(false),
                    base_at: x.get(5)?,
                    row_at: x.get(6)?,
                    row_deleted: x.get::<_, Option<bool>>(7)?.unwrap_or(false),
                })
            },
        )?)
    }

    /// The last server version the store holds: the base copy's, or a clean row's.
    fn known_version(&self) -> Option<i64> {
        match self.base {
            Some(v) => Some(v),
            None => self.row_version.filter(|_| self.clean == Some(true)),
        }
    }

    /// The commit time of [`Probe::known_version`] (empty if a store of an earlier
    /// version wrote it without one).
    fn known_at(&self) -> &str {
        match self.base {
            Some(_) => self.base_at.as_deref(),
            None => self.row_at.as_deref().filter(|_| self.clean == Some(true)),
        }
        .unwrap_or("")
    }

    /// How the server's record `r` relates to the version the store holds.
    fn compare(&self, r: &ServerRecord) -> Known {
        let Some(v) = self.known_version() else {
            return Known::Older;
        };
        let at = self.known_at();
        if v < r.version {
            Known::Older
        } else if at.is_empty() || (v == r.version && at == r.server_updated_at) {
            // The same version (or, without a commit time to tell, an older record: a
            // replayed answer).
            Known::Same
        } else {
            // The server holds another version under a number the store knows, or an
            // older number: it is not the history the store followed. Within one
            // history a record's versions only grow and each has one commit time.
            Known::OtherHistory
        }
    }
}

/// How the version of a record the store holds relates to one the server sent
/// ([`Probe::compare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// The store holds nothing, or an older version.
    Older,
    /// The store holds this version (or a newer one of the same history).
    Same,
    /// The server's record is from another history than the store's: the server was
    /// restored from a backup or replaced since the store heard of the record.
    OtherHistory,
}

/// The synced fields' column values of `record`, in column order.
fn field_values(table: &Table, record: &Record) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    let mut args = Vec::with_capacity(table.entity.fields.len() + 6);
    for f in table.entity.synced_fields() {
        args.push(columns::to_sql(
            f,
            record.get(&f.name).unwrap_or(&Json::Null),
        )?);
    }
    Ok(args)
}

fn write_base(conn: &Connection, table: &Table, s: &ServerRecord) -> Result<(), StoreError> {
    let mut args = field_values(table, &s.record)?;
    args.push(rusqlite::types::Value::Text(s.clocks.to_string()));
    args.push(rusqlite::types::Value::Integer(s.version));
    args.push(rusqlite::types::Value::Text(s.server_updated_at.clone()));
    args.push(rusqlite::types::Value::Integer(i64::from(s.deleted)));
    conn.prepare_cached(&table.pull.write_base)?
        .execute(rusqlite::params_from_iter(args))?;
    Ok(())
}

/// Writes the local row with explicit sync metadata.
#[allow(clippy::too_many_arguments)]
fn put_row(
    conn: &Connection,
    table: &Table,
    record: &Record,
    clocks: &Json,
    status: &str,
    deleted: bool,
    version: i64,
    server_updated_at: &str,
) -> Result<(), StoreError> {
    use rusqlite::types::Value;
    let mut args = field_values(table, record)?;
    args.push(Value::Text(clocks_text(clocks)));
    args.push(Value::Text(latest_clock(clocks).to_string()));
    args.push(Value::Text(status.into()));
    args.push(Value::Integer(i64::from(deleted)));
    args.push(Value::Integer(version));
    args.push(Value::Text(server_updated_at.into()));
    conn.prepare_cached(&table.pull.put_row)?
        .execute(rusqlite::params_from_iter(args))?;
    Ok(())
}

/// Writes the server's record as a clean row.
fn put_server_row(conn: &Connection, table: &Table, s: &ServerRecord) -> Result<(), StoreError> {
    put_row(
        conn,
        table,
        &s.record,
        &s.clocks,
        "clean",
        s.deleted,
        s.version,
        &s.server_updated_at,
    )
}

/// The clocks as compact JSON text, as `clocks.to_string()` writes it: a map of wire
/// names to HLC strings is written directly (no escaping needed), anything else through
/// `serde_json`. Runs once per pulled record.
fn clocks_text(clocks: &Json) -> String {
    let plain = |s: &str| !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
    let Some(map) = clocks.as_object() else {
        return clocks.to_string();
    };
    let mut out = String::with_capacity(2 + map.len() * 48);
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        let Some(v) = v.as_str().filter(|v| plain(v) && plain(k)) else {
            return clocks.to_string();
        };
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(k);
        out.push_str("\":\"");
        out.push_str(v);
        out.push('"');
    }
    out.push('}');
    out
}

fn latest_clock(clocks: &Json) -> Hlc {
    clocks
        .as_object()
        .map(|m| {
            m.values()
                .filter_map(|v| v.as_str()?.parse::<Hlc>().ok())
                .max()
                .unwrap_or(Hlc::ZERO)
        })
        .unwrap_or(Hlc::ZERO)
}

fn set_row_meta(
    conn: &Connection,
    table: &Table,
    id: Uuid,
    status: &str,
    version: Option<i64>,
) -> Result<(), StoreError> {
    conn.prepare_cached(&table.pull.set_meta)?
        .execute(params![status, version, id.to_string()])?;
    Ok(())
}

/// The outbox items of one record still to be sent (not dead), in order.
fn pending_for(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<Vec<(i64, MutationOp, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT \"id\", \"op\", \"payload\" FROM \"sync_outbox\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 AND \"status\" <> 'dead'",
    )?;
    let mut rows = stmt.query(params![entity, id.to_string()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let op: String = r.get(1)?;
        out.push((r.get(0)?, super::parse_op(&op)?, r.get(2)?));
    }
    out.sort_by_key(|x| x.0);
    Ok(out)
}

/// The items of one record already handed to the network (attempted, not dead), in order.
fn sent_items_of(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<Vec<(i64, MutationOp, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT \"id\", \"op\", \"payload\" FROM \"sync_outbox\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 AND \"status\" <> 'dead' AND (\"attempt_count\" > 0 OR \"status\" <> 'pending') ORDER BY \"id\"",
    )?;
    let rows = stmt.query_map(params![entity, id.to_string()], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for r in rows {
        let (n, op, payload) = r?;
        out.push((n, super::parse_op(&op)?, payload));
    }
    Ok(out)
}

fn delete_items_of(conn: &Connection, entity: &str, id: Uuid) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM \"sync_outbox\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2",
        params![entity, id.to_string()],
    )?;
    Ok(())
}

/// The record was deleted on the server while `item` edited it: delete wins, so this item
/// and the record's later items up to its next create go. A later create (the record
/// deleted and created again here) and what follows it stay: they start a new record.
fn delete_superseded(conn: &Connection, entity: &str, item: &OutboxItem) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM \"sync_outbox\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 AND \"id\" >= ?3 AND \"id\" < COALESCE((SELECT MIN(\"id\") FROM \"sync_outbox\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 AND \"id\" > ?3 AND \"op\" = 'create'), 9223372036854775807)",
        params![entity, item.entity_id.to_string(), item.id],
    )?;
    Ok(())
}

/// Removes the base copy of a record.
fn delete_base(conn: &Connection, e: &sync_model::Entity, id: &str) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "DELETE FROM {} WHERE {} = ?1",
            q(&format!("sync_base_{}", e.table)),
            q(&e.id_field().column)
        ),
        [id],
    )?;
    Ok(())
}

/// Removes a record's row.
fn delete_row(conn: &Connection, e: &sync_model::Entity, id: &str) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "DELETE FROM {} WHERE {} = ?1",
            q(&e.table),
            q(&e.id_field().column)
        ),
        [id],
    )?;
    Ok(())
}

/// Makes a row new to the server: no version, `pending` (its create is queued).
fn unversion_row(conn: &Connection, e: &sync_model::Entity, id: &str) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "UPDATE {} SET {} = NULL, {} = 'pending' WHERE {} = ?1",
            q(&e.table),
            q("sync_version"),
            q("sync_status"),
            q(&e.id_field().column)
        ),
        [id],
    )?;
    Ok(())
}

/// An update payload (`{"patch": {...}}`) with every `lww` operation's stamp replaced by
/// the field's stamp in `clocks` (where it has one).
fn restamp(payload: &str, clocks: &Json) -> String {
    let Ok(mut p) = serde_json::from_str::<Json>(payload) else {
        return payload.to_string();
    };
    if let Some(ops) = p.get_mut("patch").and_then(Json::as_object_mut) {
        for (field, op) in ops.iter_mut() {
            if let (Some(op), Some(stamp)) = (op.as_object_mut(), clocks.get(field))
                && op.contains_key("hlc")
                && stamp
                    .as_str()
                    .is_some_and(|s| s.parse::<Hlc>().is_ok_and(|h| h != Hlc::ZERO))
            {
                op.insert("hlc".into(), stamp.clone());
            }
        }
    }
    p.to_string()
}

/// Whether a server record is the tombstone of a record the server collected: deleted,
/// with an empty record (a real record always holds its id).
fn is_collected(s: &ServerRecord) -> bool {
    s.deleted && s.record.is_empty()
}

/// The record was deleted on the server and its tombstone collected: this item and the
/// record's later items up to its next create go (delete wins), and so do its base copy
/// and conflicts; the row goes too, unless a create made here after the delete starts
/// the record again.
fn forget_collected(conn: &Connection, table: &Table, item: &OutboxItem) -> Result<(), StoreError> {
    let e = table.entity;
    let id = item.entity_id.to_string();
    delete_superseded(conn, &e.name, item)?;
    delete_base(conn, e, &id)?;
    conn.execute(
        "DELETE FROM \"sync_conflicts\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2",
        params![e.name, id],
    )?;
    if pending_for(conn, &e.name, item.entity_id)?.is_empty() {
        delete_row(conn, e, &id)
    } else {
        unversion_row(conn, e, &id)
    }
}

/// The `sync_meta` key of an own write the pull has not shown yet (see
/// [`record_own_write`]).
fn own_write_key(entity: &str, id: Uuid) -> String {
    format!("own-write:{entity}:{id}")
}

/// Notes a write the server acknowledged (`s` is the record it answered with): the
/// pulls that follow must show this version or a later one. If they catch up without
/// it, the server may have lost it (restored from a backup taken before the write,
/// with the device's change token still valid there), and the record is checked
/// ([`LocalStore::check_own_writes`]).
fn record_own_write(conn: &Connection, s: &ServerRecord) -> Result<(), StoreError> {
    super::meta_set(
        conn,
        &own_write_key(&s.entity_type, s.entity_id),
        &format!("{} {}", s.version, s.server_updated_at),
    )
}

/// The payload of a check ([`LocalStore::check_own_writes`]): an update that changes
/// nothing.
const CHECK_PAYLOAD: &str = r#"{"patch":{}}"#;

/// Whether `item` is a check ([`LocalStore::check_own_writes`]).
fn is_check(item: &OutboxItem) -> bool {
    item.op == MutationOp::Update
        && item
            .payload
            .get("patch")
            .and_then(Json::as_object)
            .is_some_and(serde_json::Map::is_empty)
}

/// Whether any own write awaits its pull (one query per page, so pulls of a store that
/// has none cost nothing more).
fn has_own_writes(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM \"sync_meta\" WHERE \"key\" >= 'own-write:' AND \"key\" < 'own-write;')",
    )?
    .query_row([], |r| r.get(0))?)
}

/// A pulled record shows an own write (this version or a later one: done), or another
/// history under its version number (the server lost it).
fn confirm_own_write(
    conn: &Connection,
    r: &ServerRecord,
    other_history: &mut bool,
) -> Result<(), StoreError> {
    let key = own_write_key(&r.entity_type, r.entity_id);
    let Some(value) = super::meta_get(conn, &key)? else {
        return Ok(());
    };
    let (version, at) = value.split_once(' ').unwrap_or((value.as_str(), ""));
    let version: i64 = version.parse().unwrap_or(0);
    if r.version < version || (r.version == version && r.server_updated_at != at) {
        *other_history = true;
    }
    conn.execute("DELETE FROM \"sync_meta\" WHERE \"key\" = ?1", [key])?;
    Ok(())
}

/// The server sent records of another history than the store followed: a restart
/// under way re-sends what the server does not have (it becomes `unknown`); otherwise
/// one is due ([`LocalStore::restore_suspected`]).
fn suspect_restore(conn: &Connection, scope: &str) -> Result<(), StoreError> {
    let key = format!("resnapshot:{scope}");
    if super::meta_get(conn, &key)?.is_some() {
        super::meta_set(conn, &key, "unknown")
    } else {
        super::meta_set(conn, &format!("restore-suspected:{scope}"), "1")
    }
}

/// Moves the base to the server's record and rebuilds the local row: the server's record
/// with the still-pending local mutations on top (the base moves, the patches stay).
fn rebase_row(conn: &Connection, table: &Table, s: &ServerRecord) -> Result<(), StoreError> {
    // A server record older than the base (a replayed result of a mutation whose effect
    // was already pulled, say) must not move the record backwards: rebuild from the base.
    let probe = Probe::of(conn, table, s.entity_id)?;
    let known = probe.known_version();
    if probe.base.is_none() && known.is_some_and(|v| v > s.version) {
        // A clean row is its own base: copy it to rebuild from it.
        keep_base(conn, table, s.entity_id)?;
    }
    let newer_base = if known.is_some_and(|v| v > s.version) {
        read_base(conn, table, s.entity_id)?
            .map(|b| b.as_server_record(&table.entity.name, s.entity_id))
    } else {
        None
    };
    match &newer_base {
        Some(b) => rebase_onto(conn, table, b),
        None => {
            write_base(conn, table, s)?;
            rebase_onto(conn, table, s)
        }
    }
}

/// Rebuilds the local row on `s`, which is already the base: the server's record with
/// the still-pending local mutations on top.
fn rebase_onto(conn: &Connection, table: &Table, s: &ServerRecord) -> Result<(), StoreError> {
    let pending = pending_for(conn, &table.entity.name, s.entity_id)?;
    let conflicted: bool = conn
        .prepare_cached(&table.pull.conflicted)?
        .query_row([s.entity_id.to_string()], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    if s.deleted {
        // Deleted on the server: delete wins over edits and open conflicts of this record.
        conn.execute(
            "DELETE FROM \"sync_conflicts\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2",
            params![table.entity.name, s.entity_id.to_string()],
        )?;
        if conflicted {
            delete_items_of(conn, &table.entity.name, s.entity_id)?;
            return put_server_row(conn, table, s);
        }
    }
    if conflicted {
        return rebase_conflicted(conn, table, s, pending);
    }
    if pending.is_empty() {
        return put_server_row(conn, table, s);
    }
    let ops: Vec<(MutationOp, String)> = pending.into_iter().map(|(_, op, p)| (op, p)).collect();
    let base_record = if s.deleted && ops.first().map(|o| o.0) != Some(MutationOp::Create) {
        // Deleted on the server; a pending update cannot revive it (delete wins). Keep the
        // tombstone and let the push of those updates report the conflict.
        None
    } else {
        table
            .erased
            .rebase(&s.record, &s.clocks, &ops)
            .map_err(StoreError::Corrupt)?
    };
    match base_record {
        Some((record, clocks)) => put_row(
            conn,
            table,
            &record,
            &clocks,
            "pending",
            false,
            s.version,
            &s.server_updated_at,
        ),
        None => put_row(
            conn,
            table,
            &s.record,
            &s.clocks,
            "pending",
            true,
            s.version,
            &s.server_updated_at,
        ),
    }
}

/// Rebuilds a conflicted record's row on a newer server record: every field follows the
/// server with the pending changes on top, like any other row, except the fields the
/// user has to decide, which keep the local value; the conflict's server side moves to
/// the new record.
///
/// Before, the row kept all its old values while the base moved on, so a resolution
/// (a diff from the new base to the row) reverted every server change to the other
/// fields: increments made elsewhere were subtracted again (simulation seed 4239).
fn rebase_conflicted(
    conn: &Connection,
    table: &Table,
    s: &ServerRecord,
    pending: Vec<(i64, MutationOp, String)>,
) -> Result<(), StoreError> {
    let ops: Vec<(MutationOp, String)> = pending.into_iter().map(|(_, op, p)| (op, p)).collect();
    let Some((mut record, clocks)) = table
        .erased
        .rebase(&s.record, &s.clocks, &ops)
        .map_err(StoreError::Corrupt)?
    else {
        // A pending delete of a conflicted record (deleting discards the conflict, so
        // this is not reached through the store's API): the tombstone stands.
        return put_row(
            conn,
            table,
            &s.record,
            &s.clocks,
            "pending",
            true,
            s.version,
            &s.server_updated_at,
        );
    };
    let id = s.entity_id.to_string();
    let locals: Vec<(String, String)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT \"field\", \"local\" FROM \"sync_conflicts\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2",
        )?;
        stmt.query_map(params![table.entity.name, id], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?
    };
    for (field, local) in &locals {
        let local: Json = serde_json::from_str(local)
            .map_err(|e| StoreError::Corrupt(format!("sync_conflicts.local: {e}")))?;
        let remote = s.record.get(field).cloned().unwrap_or(Json::Null);
        conn.execute(
            "UPDATE \"sync_conflicts\" SET \"remote\" = ?1, \"remote_version\" = ?2 WHERE \"entity_type\" = ?3 AND \"entity_id\" = ?4 AND \"field\" = ?5",
            params![remote.to_string(), s.version, table.entity.name, id, field],
        )?;
        record.insert(field.clone(), local);
    }
    put_row(
        conn,
        table,
        &record,
        &clocks,
        "conflicted",
        false,
        s.version,
        &s.server_updated_at,
    )
}

/// The order of one push: see [`LocalStore::next_batch`].
struct Plan {
    /// Indices into the queue, prerequisites first; at most `max`.
    chosen: Vec<usize>,
    /// Notes for items' `last_error`: why they wait, or that they are in a cycle.
    notes: Vec<(i64, String)>,
}

#[derive(Clone, PartialEq)]
enum Mark {
    New,
    Visiting,
    Placed,
    Blocked(String),
}

/// Plans a batch over the queue `items` (in queue order). `references(item)` lists the
/// `(entity, id)` records an item points at.
///
/// Depth-first over prerequisites with an explicit stack, so a chain of any depth costs
/// no call stack; each item is visited once (O(items + references)).
fn plan_batch(
    items: &[OutboxItem],
    max: usize,
    retry_due: impl Fn(&OutboxItem) -> bool,
    references: impl Fn(&OutboxItem) -> Vec<(String, Uuid)>,
) -> Plan {
    let due = |i: &OutboxItem| match i.status {
        OutboxStatus::Pending => true,
        OutboxStatus::Failed => retry_due(i),
        OutboxStatus::Sending | OutboxStatus::Dead => false,
    };
    let own_reason = |i: &OutboxItem| match i.status {
        OutboxStatus::Dead => format!(
            "waiting: an earlier change of this {} is dead ({})",
            i.entity_type,
            i.last_error.clone().unwrap_or_default()
        ),
        _ => format!(
            "waiting: an earlier change of this {} has not gone through yet",
            i.entity_type
        ),
    };
    // Per record: its items in queue order; the latest unsent create.
    let mut previous: Vec<Option<usize>> = vec![None; items.len()];
    let mut last_of: BTreeMap<(&str, Uuid), usize> = BTreeMap::new();
    let mut creates: BTreeMap<(String, Uuid), usize> = BTreeMap::new();
    for (n, i) in items.iter().enumerate() {
        let key = (i.entity_type.as_str(), i.entity_id);
        if i.status != OutboxStatus::Sending {
            previous[n] = last_of.get(&key).copied();
        }
        last_of.insert(key, n);
        if i.op == MutationOp::Create && i.status != OutboxStatus::Sending {
            creates.insert((i.entity_type.clone(), i.entity_id), n);
        }
    }
    // An item's prerequisites: the previous item of its record (which in turn needs its
    // own), and the creates its references point at. `None` reason: same record.
    let prerequisites = |n: usize| -> Vec<(usize, Option<(String, Uuid)>)> {
        let mut out = Vec::new();
        if let Some(p) = previous[n] {
            out.push((p, None));
        }
        for r in references(&items[n]) {
            if let Some(&c) = creates.get(&r)
                && c != n
            {
                out.push((c, Some(r)));
            }
        }
        out
    };
    let mut mark = vec![Mark::New; items.len()];
    let mut chosen = Vec::new();
    let mut notes = Vec::new();
    for root in 0..items.len() {
        if chosen.len() >= max {
            break;
        }
        if mark[root] != Mark::New {
            continue;
        }
        if !due(&items[root]) {
            mark[root] = Mark::Blocked(own_reason(&items[root]));
            continue;
        }
        mark[root] = Mark::Visiting;
        let mut stack = vec![(root, prerequisites(root), 0usize)];
        while let Some((n, pre, next)) = stack.last_mut() {
            let n = *n;
            if let Mark::Blocked(_) = mark[n] {
                stack.pop();
                continue;
            }
            let Some((m, via)) = pre.get(*next).cloned() else {
                mark[n] = Mark::Placed;
                chosen.push(n);
                stack.pop();
                continue;
            };
            let waits = |why: &str| match &via {
                None => why.to_string(),
                Some((entity, id)) => format!("waiting for the create of {entity} {id} ({why})"),
            };
            match mark[m].clone() {
                Mark::Placed => *next += 1,
                Mark::Visiting => {
                    // A cycle: `m` is on the stack below. Send in queue order.
                    *next += 1;
                    let from = stack.iter().position(|(k, _, _)| *k == m).unwrap_or(0);
                    for (k, _, _) in &stack[from..] {
                        notes.push((
                            items[*k].id,
                            "dependency cycle between unsent creates: sent in queue order"
                                .to_string(),
                        ));
                    }
                }
                Mark::Blocked(why) => {
                    let reason = waits(&why);
                    notes.push((items[n].id, reason.clone()));
                    mark[n] = Mark::Blocked(reason);
                }
                Mark::New if !due(&items[m]) => {
                    let why = own_reason(&items[m]);
                    let why = match &via {
                        None => why,
                        Some(_) => items[m]
                            .last_error
                            .clone()
                            .unwrap_or_else(|| format!("{:?}", items[m].status).to_lowercase()),
                    };
                    mark[m] = Mark::Blocked(own_reason(&items[m]));
                    let reason = waits(&why);
                    notes.push((items[n].id, reason.clone()));
                    mark[n] = Mark::Blocked(reason);
                }
                Mark::New => {
                    mark[m] = Mark::Visiting;
                    let pre = prerequisites(m);
                    stack.push((m, pre, 0));
                }
            }
        }
    }
    chosen.truncate(max);
    notes.sort();
    notes.dedup();
    Plan { chosen, notes }
}

impl LocalStore {
    fn table_of(&self, entity: &str) -> Option<&Table> {
        self.inner.tables.get(entity)
    }

    /// Puts items left `sending` by a process that stopped mid-push back in the queue;
    /// they are sent again with the same idempotency key and body.
    pub(crate) fn recover_sending(&self) -> Result<usize, StoreError> {
        let conn = self.conn();
        Ok(conn.execute(
            "UPDATE \"sync_outbox\" SET \"status\" = 'pending' WHERE \"status\" = 'sending'",
            [],
        )?)
    }

    /// The sync state of `scope` (an account).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if the database fails, also when the stored `last_sync_at`
    /// is not a valid time. A scope that never synced is not an error: its state is the
    /// default.
    pub fn sync_state(&self, scope: &str) -> Result<SyncState, StoreError> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                "SELECT \"change_token\", \"snapshot_cursor\", \"snapshot_token\", \"last_sync_at\" FROM \"sync_state\" WHERE \"scope\" = ?1",
                [scope],
                |r| {
                    Ok(SyncState {
                        change_token: r.get(0)?,
                        snapshot_cursor: r.get(1)?,
                        snapshot_token: r.get(2)?,
                        last_sync_at: super::time_col(r, 3)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    /// Records a completed sync.
    pub(crate) fn record_success(&self, scope: &str) -> Result<(), StoreError> {
        {
            let conn = self.conn();
            conn.execute(
                "INSERT INTO \"sync_state\" (\"scope\", \"last_sync_at\") VALUES (?1, ?2) ON CONFLICT (\"scope\") DO UPDATE SET \"last_sync_at\" = excluded.\"last_sync_at\", \"last_error\" = NULL",
                params![scope, crate::time::now()],
            )?;
        }
        self.notify_status();
        Ok(())
    }

    /// Forgets the change token (after a 410): the next sync takes a new snapshot, and
    /// what the device holds is reconciled with it when it completes
    /// ([`LocalStore::finish_resnapshot`]).
    ///
    /// Every synced record without local changes is marked `syncing` in the same
    /// transaction; each one the snapshot delivers (or shows unchanged) is confirmed and
    /// clean again. What is still `syncing` at the end is a record the server no longer
    /// has, deleted and collected or lost in a restore: the server is asked which
    /// ([`LocalStore::finish_resnapshot`]). `why` is [`Restart::Collected`] (the token was
    /// older than the server's horizon) or [`Restart::Unknown`] (the server did not issue
    /// the token: it was restored from a backup or replaced); after `Unknown` the own
    /// writes awaiting their pull are forgotten too, since the snapshot reconciles them.
    pub(crate) fn reset_token(&self, scope: &str, why: Restart) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            "UPDATE \"sync_state\" SET \"change_token\" = NULL, \"snapshot_cursor\" = NULL, \"snapshot_token\" = NULL WHERE \"scope\" = ?1",
            [scope],
        )?;
        // Records with local changes keep their status (the user's view); the ones the
        // server had acknowledged are listed, and confirmed the same way. There are few:
        // only records edited since the last sync.
        let held_key = format!("resnapshot-held:{scope}");
        let mut held: Vec<(String, Uuid)> = super::meta_get(&tx, &held_key)?
            .map(|j| serde_json::from_str(&j).unwrap_or_default())
            .unwrap_or_default();
        for table in self.inner.tables.values() {
            tx.execute(
                &format!(
                    "UPDATE {t} SET {s} = 'syncing' WHERE {s} = 'clean' AND {d} = 0 AND {v} IS NOT NULL",
                    t = q(&table.entity.table),
                    s = q("sync_status"),
                    d = q("sync_deleted"),
                    v = q("sync_version"),
                ),
                [],
            )?;
            let mut stmt = tx.prepare(&format!(
                "SELECT {id} FROM {t} WHERE {s} NOT IN ('clean', 'syncing') AND {d} = 0 AND ({v} IS NOT NULL OR EXISTS (SELECT 1 FROM {b} WHERE {b}.{id} = {t}.{id}))",
                id = q(&table.entity.id_field().column),
                t = q(&table.entity.table),
                b = q(&format!("sync_base_{}", table.entity.table)),
                s = q("sync_status"),
                d = q("sync_deleted"),
                v = q("sync_version"),
            ))?;
            let ids: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in ids {
                if let Ok(id) = id.parse::<Uuid>() {
                    let key = (table.entity.name.clone(), id);
                    if !held.contains(&key) {
                        held.push(key);
                    }
                }
            }
        }
        super::meta_set(&tx, &held_key, &serde_json::to_string(&held).expect("JSON"))?;
        // After a restore every record the server lost is sent again when the snapshot
        // is through; otherwise own writes are still checked (a first snapshot after a
        // push must not take the records it lacks for collected).
        tx.execute(
            "DELETE FROM \"sync_meta\" WHERE \"key\" = ?1",
            [format!("restore-suspected:{scope}")],
        )?;
        if why == Restart::Unknown {
            tx.execute(
                "DELETE FROM \"sync_meta\" WHERE \"key\" >= 'own-write:' AND \"key\" < 'own-write;'",
                [],
            )?;
        }
        let key = format!("resnapshot:{scope}");
        let before = super::meta_get(&tx, &key)?;
        let why = match (before.as_deref(), why) {
            (Some("unknown"), _) | (_, Restart::Unknown) => "unknown",
            _ => "collected",
        };
        super::meta_set(&tx, &key, why)?;
        tx.commit()?;
        Ok(())
    }

    /// Whether, now that the pulls caught up, the server shows signs of a restore the
    /// change token did not reveal: it sent a record of another history than the one
    /// this store followed (a version number the store knows with another commit time,
    /// or a lower one). The engine then starts again as after a `token-unknown`
    /// ([`LocalStore::reset_token`] with [`Restart::Unknown`]): the server's records
    /// replace the device's, and what the server lost is sent again.
    pub(crate) fn restore_suspected(&self, scope: &str) -> Result<bool, StoreError> {
        let conn = self.conn();
        Ok(super::meta_get(&conn, &format!("restore-suspected:{scope}"))?.is_some())
    }

    /// Once the changes after a snapshot that followed [`LocalStore::reset_token`] are
    /// caught up (every record the server holds has been delivered since the snapshot
    /// began): the records still `syncing` are not on the server. Each is checked with
    /// the server rather than dropped or re-sent on inference ([`enqueue_check`]): the
    /// server tells a record it deleted and collected (its slim tombstone: the device
    /// drops the record) from one it never had or lost in a restore (`unknown-record`:
    /// the device creates it again), whatever the 410 said. A token can expire on a
    /// restored server too, once it collected past the token; taking every missing
    /// record for collected then would drop what the restore lost. Records with local
    /// changes the snapshot did not deliver need no check while they have items to
    /// send (those get the same answers); one with nothing to send (a conflict
    /// awaiting the user) is checked too, keeping its status. Returns how many checks
    /// it queued. A no-op unless a restart is unfinished; idempotent, and
    /// resumed by the next sync after a crash.
    pub(crate) fn finish_resnapshot(&self, scope: &str) -> Result<usize, StoreError> {
        let key = format!("resnapshot:{scope}");
        let held_key = format!("resnapshot-held:{scope}");
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if super::meta_get(&tx, &key)?.is_none() {
            return Ok(0);
        }
        let mut n = 0;
        for table in self.inner.tables.values() {
            let e = table.entity;
            let ids: Vec<String> = {
                let mut stmt = tx.prepare(&format!(
                    "SELECT {} FROM {} WHERE {} = 'syncing'",
                    q(&e.id_field().column),
                    q(&e.table),
                    q("sync_status")
                ))?;
                stmt.query_map([], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            for id in ids {
                let uuid: Uuid = id
                    .parse()
                    .map_err(|_| StoreError::Corrupt(format!("{} id `{id}`", e.table)))?;
                let row = read_row(&tx, table, uuid)?
                    .ok_or_else(|| StoreError::Corrupt(format!("{} {id} vanished", e.name)))?;
                self.enqueue_check(&tx, table, uuid, &row, row.version)?;
                n += 1;
            }
        }
        // Records with local changes the snapshot did not deliver: their own items get
        // the server's answers, but one with nothing left to send (a conflict awaiting
        // the user, say) is checked too, keeping its status.
        let held: Vec<(String, Uuid)> = super::meta_get(&tx, &held_key)?
            .map(|j| serde_json::from_str(&j).unwrap_or_default())
            .unwrap_or_default();
        for (entity, uuid) in held {
            let Some(table) = self.table_of(&entity) else {
                continue;
            };
            let Some(row) = read_row(&tx, table, uuid)? else {
                continue;
            };
            if row.deleted || !pending_for(&tx, &entity, uuid)?.is_empty() {
                continue;
            }
            let version = read_base(&tx, table, uuid)?
                .map(|b| b.version)
                .or(row.version);
            let payload = CHECK_PAYLOAD.to_string();
            enqueue(
                &tx,
                table.entity,
                uuid,
                MutationOp::Update,
                &payload,
                version,
                self.new_key(),
            )?;
            n += 1;
        }
        tx.execute(
            "DELETE FROM \"sync_meta\" WHERE \"key\" IN (?1, ?2)",
            params![key, held_key],
        )?;
        tx.commit()?;
        drop(conn);
        if n > 0 {
            self.notify_status();
        }
        Ok(n)
    }

    /// Queues a check of a clean record with the server: an update with an empty patch
    /// made against `version` (a delete, for a record the device holds deleted). The
    /// server's answer is the record as it is (unchanged, no new version), its
    /// tombstone (deleted, or collected: the device drops the record), or
    /// `unknown-record` (the server lost it: the device creates it again, see
    /// `recreate_lost`).
    fn enqueue_check(
        &self,
        tx: &Connection,
        table: &Table,
        id: Uuid,
        row: &super::Row,
        version: Option<i64>,
    ) -> Result<(), StoreError> {
        keep_base(tx, table, id)?;
        let (op, payload) = if row.deleted {
            let hlc = self.stamp();
            (
                MutationOp::Delete,
                to_json_string(&super::DeletePayload { hlc }),
            )
        } else {
            (MutationOp::Update, CHECK_PAYLOAD.to_string())
        };
        set_row_meta(tx, table, id, "pending", None)?;
        enqueue(tx, table.entity, id, op, &payload, version, self.new_key())
    }

    /// The ids of records this item's record or patch points at (`references` fields).
    fn references(&self, item: &OutboxItem) -> Vec<(String, Uuid)> {
        let Some(table) = self.table_of(&item.entity_type) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for f in table.entity.synced_fields() {
            let Some(target) = &f.references else {
                continue;
            };
            let v = match item.op {
                MutationOp::Create => item.payload.get("record").and_then(|r| r.get(&f.name)),
                MutationOp::Update => item
                    .payload
                    .get("patch")
                    .and_then(|p| p.get(&f.name))
                    .and_then(|o| o.get("set")),
                MutationOp::Delete => None,
            };
            if let Some(id) = v.and_then(Json::as_str).and_then(|s| s.parse().ok()) {
                out.push((target.clone(), id));
            }
        }
        out
    }

    /// Picks the next items to push, in order, and marks them `sending` (one attempt more).
    ///
    /// The batch is the queue in order, each item preceded by what must reach the server
    /// first, at any depth: the earlier items of its own record, and for every
    /// `references` field the unsent create of the record it points at (with, in turn,
    /// that create's own prerequisites). So a comment saved before its task, saved before
    /// its project, goes project, task, comment, whatever the batch size (the batch is a
    /// prefix of that order). An item waits while a prerequisite cannot be sent yet
    /// (failed and backing off, dead), and says why in its `last_error`; nothing else
    /// waits, so one poisoned record never blocks the queue. A cycle of references
    /// between unsent creates is sent in queue order (the server does not enforce
    /// references), and each item of it says so in its `last_error`.
    ///
    /// `retry_due(item)` says whether a failed item's backoff is over (the engine keeps
    /// the schedule, on a monotonic clock).
    pub(crate) fn next_batch(
        &self,
        max: usize,
        retry_due: impl Fn(&OutboxItem) -> bool,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let items = self.outbox()?;
        let plan = plan_batch(&items, max, retry_due, |item| self.references(item));
        let (chosen, waiting) = (plan.chosen, plan.notes);
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (id, reason) in &waiting {
            tx.execute(
                "UPDATE \"sync_outbox\" SET \"last_error\" = ?1 WHERE \"id\" = ?2 AND \"status\" <> 'dead'",
                params![reason, id],
            )?;
        }
        let mut out = Vec::new();
        for n in chosen {
            let mut item = items[n].clone();
            tx.execute(
                "UPDATE \"sync_outbox\" SET \"status\" = 'sending', \"attempt_count\" = \"attempt_count\" + 1 WHERE \"id\" = ?1",
                [item.id],
            )?;
            item.status = OutboxStatus::Sending;
            item.attempt_count += 1;
            out.push(item);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Items that were not sent after all (the network was unavailable): back to the queue,
    /// without counting the attempt.
    pub(crate) fn mark_unsent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let conn = self.conn();
        for id in ids {
            conn.execute(
                "UPDATE \"sync_outbox\" SET \"status\" = 'pending', \"attempt_count\" = MAX(\"attempt_count\" - 1, 0) WHERE \"id\" = ?1 AND \"status\" = 'sending'",
                [id],
            )?;
        }
        drop(conn);
        self.notify_status();
        Ok(())
    }

    /// Items whose attempt failed (timeout, 5xx, 429): retried after `retry_at`, or dead
    /// once they used `max_attempts`.
    pub(crate) fn mark_failed(
        &self,
        ids: &[i64],
        error: &str,
        retry_at: &str,
        max_attempts: i64,
    ) -> Result<(), StoreError> {
        let conn = self.conn();
        for id in ids {
            conn.execute(
                "UPDATE \"sync_outbox\" SET \"status\" = CASE WHEN \"attempt_count\" >= ?1 THEN 'dead' ELSE 'failed' END, \"next_attempt_at\" = ?2, \"last_error\" = ?3 WHERE \"id\" = ?4",
                params![max_attempts, retry_at, error, id],
            )?;
        }
        drop(conn);
        self.notify_status();
        Ok(())
    }

    /// Records the server's answer to one item, in one transaction.
    pub(crate) fn apply_result(
        &self,
        item: &OutboxItem,
        result: &MutationResult,
    ) -> Result<ItemOutcome, StoreError> {
        let table = self
            .table_of(&item.entity_type)
            .ok_or_else(|| StoreError::Corrupt(format!("outbox entity `{}`", item.entity_type)))?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let outcome = match result {
            MutationResult::Applied { server, .. } | MutationResult::Conflict { server, .. }
                if is_collected(server) =>
            {
                forget_collected(&tx, table, item)?;
                match result {
                    MutationResult::Applied { .. } => ItemOutcome::Applied,
                    _ => ItemOutcome::Superseded(format!(
                        "the {} was deleted on the server (and since collected); delete wins over a concurrent edit",
                        table.entity.name
                    )),
                }
            }
            MutationResult::Applied { server, .. } => {
                tx.execute("DELETE FROM \"sync_outbox\" WHERE \"id\" = ?1", [item.id])?;
                let known = Probe::of(&tx, table, server.entity_id)?.compare(server);
                if is_check(item) {
                    if known == Known::OtherHistory {
                        // The server's record is from another history (a restore): it
                        // replaces the device's copy, pending changes on top.
                        write_base(&tx, table, server)?;
                        rebase_onto(&tx, table, server)?;
                    } else {
                        rebase_row(&tx, table, server)?;
                    }
                } else {
                    if known != Known::Same {
                        record_own_write(&tx, server)?;
                    }
                    rebase_row(&tx, table, server)?;
                }
                ItemOutcome::Applied
            }
            MutationResult::Rejected { problem, .. }
                if problem.problem_type.ends_with("/unknown-record")
                    && item.op != MutationOp::Create =>
            {
                self.recreate_lost(&tx, table, item)?
            }
            MutationResult::Rejected { problem, .. } => {
                tx.execute(
                    "UPDATE \"sync_outbox\" SET \"status\" = 'dead', \"last_error\" = ?1 WHERE \"id\" = ?2",
                    params![format!("rejected by the server: {problem}"), item.id],
                )?;
                set_row_meta(&tx, table, item.entity_id, "failed", None)?;
                ItemOutcome::Dead(problem.to_string())
            }
            MutationResult::Conflict { server, fields, .. } => {
                if server.deleted {
                    delete_superseded(&tx, &table.entity.name, item)?;
                    rebase_row(&tx, table, server)?;
                    ItemOutcome::Superseded(format!(
                        "the {} was deleted on the server; delete wins over a concurrent edit",
                        table.entity.name
                    ))
                } else {
                    self.merge_conflict(&tx, table, item, server, fields)?
                }
            }
        };
        tx.commit()?;
        drop(conn);
        self.notify(StoreEvent::Changed {
            entity: item.entity_type.clone(),
            id: item.entity_id,
            change: ChangeKind::Updated,
        });
        Ok(outcome)
    }

    /// After the pulls caught up: own writes the server acknowledged and the changes
    /// since never showed ([`record_own_write`]). Either the record changed again and
    /// was collected after a delete, or the server lost the write (restored from a
    /// backup taken before it, with the device's change token still valid there). Each
    /// record is checked by the server: an update with an empty patch (a delete for a
    /// record the device holds deleted), with the version the write produced as its
    /// base. The answer tells the cases apart, as for any late mutation: the record
    /// itself (unchanged: done; from another history: it replaces the device's copy),
    /// `unknown-record` (lost: created again),
    /// or a tombstone (deleted, maybe collected: gone here too). Returns how many
    /// checks it queued.
    ///
    /// Runs before [`LocalStore::finish_resnapshot`], so a record a first snapshot did
    /// not deliver is checked rather than taken for collected.
    pub(crate) fn check_own_writes(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let left: Vec<(String, String)> = {
            let mut stmt = tx.prepare(
                "SELECT \"key\", \"value\" FROM \"sync_meta\" WHERE \"key\" >= 'own-write:' AND \"key\" < 'own-write;'",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut n = 0;
        for (key, value) in left {
            tx.execute("DELETE FROM \"sync_meta\" WHERE \"key\" = ?1", [&key])?;
            let mut parts = key.splitn(3, ':').skip(1);
            let (Some(entity), Some(id)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Some(table), Ok(id)) = (self.table_of(entity), id.parse::<Uuid>()) else {
                continue;
            };
            let version: Option<i64> = value.split(' ').next().and_then(|v| v.parse().ok());
            let Some(row) = read_row(&tx, table, id)? else {
                continue;
            };
            if !row.clean {
                // Local changes follow: their answers tell the same.
                continue;
            }
            self.enqueue_check(&tx, table, id, &row, version)?;
            n += 1;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Turns outbox item `id` into a create with `payload`, under a new key, to be sent
    /// afresh (its base version stays: see `recreate_lost`).
    fn rewrite_as_create(&self, tx: &Connection, id: i64, payload: &str) -> Result<(), StoreError> {
        tx.execute(
            "UPDATE \"sync_outbox\" SET \"op\" = 'create', \"payload\" = ?1, \"idempotency_key\" = ?2, \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL, \"last_error\" = NULL WHERE \"id\" = ?3",
            params![payload, self.new_key(), id],
        )?;
        Ok(())
    }

    /// The server does not know a record this item edits or deletes, and the record was
    /// not collected (that answer is a tombstone): the server lost it, restored from a
    /// backup taken before the record reached it. An update becomes a create of the
    /// record as this device holds it, in the item's place, under a new key; a delete is
    /// done (there is nothing left to delete).
    fn recreate_lost(
        &self,
        tx: &Connection,
        table: &Table,
        item: &OutboxItem,
    ) -> Result<ItemOutcome, StoreError> {
        let id = item.entity_id;
        let row = read_row(tx, table, id)?;
        let created_before = pending_for(tx, &table.entity.name, id)?
            .iter()
            .any(|(n, op, _)| *n < item.id && *op == MutationOp::Create);
        match (item.op, row) {
            (MutationOp::Update, Some(_)) if created_before => {
                // An earlier item of this push was turned into the create already: this
                // update goes after it, as an update, under a new key.
                tx.execute(
                    "UPDATE \"sync_outbox\" SET \"idempotency_key\" = ?1, \"base_version\" = NULL, \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL, \"last_error\" = NULL WHERE \"id\" = ?2",
                    params![self.new_key(), item.id],
                )?;
                Ok(ItemOutcome::Merged)
            }
            (MutationOp::Update, Some(row)) if !row.deleted => {
                // The record as this item left it (its later items stay, and apply on
                // top of it as they would have).
                let base = read_base(tx, table, id)?;
                let (record, clocks) = match &base {
                    Some(b) => {
                        let raw = serde_json::to_string(&item.payload).expect("JSON serialises");
                        table
                            .erased
                            .rebase(&b.record, &b.clocks, &[(item.op, raw)])
                            .map_err(StoreError::Corrupt)?
                            .unwrap_or((row.record.clone(), Json::Null))
                    }
                    None => (
                        row.record.clone(),
                        serde_json::from_str(&row.clocks).unwrap_or(Json::Null),
                    ),
                };
                let payload = to_json_string(&CreatePayloadOwned {
                    record,
                    clocks,
                    resend_base: base
                        .as_ref()
                        .and_then(|b| resend_base(&b.record, &b.clocks)),
                });
                // The create keeps the item's base version: a server that deleted the
                // record since answers with the tombstone (delete wins).
                self.rewrite_as_create(tx, item.id, &payload)?;
                // From here the record is new to the server: no base, no version.
                delete_base(tx, table.entity, &id.to_string())?;
                unversion_row(tx, table.entity, &id.to_string())?;
                Ok(ItemOutcome::Merged)
            }
            (MutationOp::Delete, Some(row)) if item.base_version.is_some() => {
                // A delete of a record the server lost (a restore): other devices that
                // hold the record will send it again, so the server must learn it is
                // deleted. The record as the device last held it is created (in the
                // item's place, with the item's base version) and deleted after it.
                let base = read_base(tx, table, id)?;
                let payload = to_json_string(&CreatePayloadOwned {
                    record: row.record.clone(),
                    clocks: serde_json::from_str(&row.clocks).unwrap_or(Json::Null),
                    resend_base: base
                        .as_ref()
                        .and_then(|b| resend_base(&b.record, &b.clocks)),
                });
                self.rewrite_as_create(tx, item.id, &payload)?;
                let delete = serde_json::to_string(&item.payload).expect("JSON serialises");
                enqueue(
                    tx,
                    table.entity,
                    id,
                    MutationOp::Delete,
                    &delete,
                    None,
                    self.new_key(),
                )?;
                delete_base(tx, table.entity, &id.to_string())?;
                unversion_row(tx, table.entity, &id.to_string())?;
                Ok(ItemOutcome::Merged)
            }
            _ => {
                // A delete of a record the server does not have (or an update of one
                // deleted here since): nothing to send.
                tx.execute("DELETE FROM \"sync_outbox\" WHERE \"id\" = ?1", [item.id])?;
                if pending_for(tx, &table.entity.name, id)?.is_empty() {
                    set_row_meta(tx, table, id, "clean", None)?;
                }
                Ok(ItemOutcome::Applied)
            }
        }
    }

    /// The server answered `conflict` to `item`: nothing of it was applied.
    ///
    /// Only this item's own effect is merged with the server's record: the item is
    /// replayed on the base copy (or, for a create, taken as the record it created) and
    /// three-way merged with the server's record; the merge, minus the `manual` fields the
    /// user must decide, replaces the item in its place in the queue, under a new key.
    /// Later items of the record stay as they are and go after it, each with its own key:
    /// some may be in this very push and answered next (applied, say), so merging the
    /// whole local row here would send their effect a second time (simulation seed
    /// 5251). The row is then rebuilt on the server's record with every pending item on
    /// top.
    fn merge_conflict(
        &self,
        tx: &Connection,
        table: &Table,
        item: &OutboxItem,
        server: &ServerRecord,
        server_fields: &[String],
    ) -> Result<ItemOutcome, StoreError> {
        let id = item.entity_id;
        let entity = &table.entity.name;
        let base = read_base(tx, table, id)?;
        let row = read_row(tx, table, id)?;
        let payload: AnyPayload = serde_json::from_value(item.payload.clone())
            .map_err(|e| StoreError::Corrupt(format!("outbox item {}: {e}", item.id)))?;
        // A replayed answer can carry a record older than the base the store already
        // holds: merge against the newer one, never move the record backwards. If that
        // is a tombstone, delete wins, as for any edit of a deleted record.
        let server = match &base {
            Some(b) if b.version > server.version => b.as_server_record(entity, id),
            _ => server.clone(),
        };
        if server.deleted {
            delete_superseded(tx, entity, item)?;
            rebase_row(tx, table, &server)?;
            return Ok(ItemOutcome::Superseded(format!(
                "the {entity} was deleted on the server; delete wins over a concurrent edit"
            )));
        }
        // A record created again after the server lost it carries the last version both
        // sides knew: merged three-way against it, so a second device doing the same does
        // not add its sums twice.
        let resend_base: Option<(Record, Json)> = item.payload.get("resend_base").and_then(|b| {
            Some((
                b.get("record")?.as_object()?.clone(),
                b.get("clocks")?.clone(),
            ))
        });
        let (merged, merged_clocks, mut conflicts) = match (item.op, &base) {
            (MutationOp::Create, _) if resend_base.is_some() => {
                let (b, _) = resend_base.expect("checked");
                let mine = payload.record.clone().unwrap_or_default();
                let mine_clocks = payload.clocks.clone().unwrap_or(Json::Null);
                table
                    .erased
                    .merge(&b, &mine, &mine_clocks, &server.record, &server.clocks)
                    .map_err(StoreError::Corrupt)?
            }
            (MutationOp::Create, _) | (_, None) => {
                // Two creates of one id, or an item with no acknowledged base: merged from
                // an empty base, field by field.
                let record = payload
                    .record
                    .or_else(|| row.as_ref().map(|r| r.record.clone()));
                let record = record.ok_or_else(|| {
                    StoreError::Corrupt(format!("outbox item {} has no record", item.id))
                })?;
                let clocks = payload.clocks.unwrap_or(Json::Null);
                table
                    .erased
                    .twin(&record, &clocks, &server.record, &server.clocks)
                    .map_err(StoreError::Corrupt)?
            }
            (op, Some(b)) => {
                let raw = serde_json::to_string(&item.payload).expect("JSON serialises");
                let (mine, mine_clocks) = table
                    .erased
                    .rebase(&b.record, &b.clocks, &[(op, raw)])
                    .map_err(StoreError::Corrupt)?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "outbox item {}: a delete answered with a conflict on a live record",
                            item.id
                        ))
                    })?;
                table
                    .erased
                    .merge(
                        &b.record,
                        &mine,
                        &mine_clocks,
                        &server.record,
                        &server.clocks,
                    )
                    .map_err(StoreError::Corrupt)?
            }
        };
        // A `manual` field the server found in conflict stays one unless both sides now
        // hold the same value: the base copy may have moved (a pull) since the item was
        // made, and a merge against it would see no conflict and push over the server's
        // value.
        for field in server_fields {
            let manual = table
                .entity
                .field(field)
                .is_some_and(|f| f.merge == sync_model::MergeStrategy::Manual);
            if !manual || conflicts.iter().any(|c| c.field == *field) {
                continue;
            }
            let mine = merged.get(field).cloned().unwrap_or(Json::Null);
            let theirs = server.record.get(field).cloned().unwrap_or(Json::Null);
            if mine != theirs {
                let op_base = item
                    .payload
                    .get("patch")
                    .and_then(|p| p.get(field))
                    .and_then(|op| op.get("base"))
                    .cloned()
                    .unwrap_or(Json::Null);
                conflicts.push(FieldConflict {
                    field: field.clone(),
                    base: op_base,
                    local: mine,
                    remote: theirs,
                });
            }
        }
        // The user decides between the server's value and their latest one.
        if let Some(row) = &row {
            for c in &mut conflicts {
                if let Some(v) = row.record.get(&c.field) {
                    c.local = v.clone();
                }
            }
        }
        write_base(tx, table, &server)?;
        // What can be pushed now: the merge, minus the fields waiting for the user.
        let mut push = merged;
        for c in &conflicts {
            if let Some(v) = server.record.get(&c.field) {
                push.insert(c.field.clone(), v.clone());
            }
        }
        // The rewritten item keeps the stamps of the edits it carries (the merged clocks),
        // not a new one: a later edit of the same field on this device, already queued
        // behind it, must still win.
        let hlc = self.stamp();
        let payload = table
            .erased
            .diff(&server.record, &push, hlc)
            .map_err(StoreError::Corrupt)?
            .map(|p| restamp(&p, &merged_clocks));
        match payload {
            Some(payload) => {
                tx.execute(
                    "UPDATE \"sync_outbox\" SET \"op\" = 'update', \"payload\" = ?1, \"idempotency_key\" = ?2, \"base_version\" = ?3, \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL, \"last_error\" = NULL WHERE \"id\" = ?4",
                    params![payload, self.new_key(), server.version, item.id],
                )?;
            }
            None => {
                tx.execute("DELETE FROM \"sync_outbox\" WHERE \"id\" = ?1", [item.id])?;
            }
        }
        let now = crate::time::now();
        for c in &conflicts {
            tx.execute(
                "INSERT INTO \"sync_conflicts\" (\"entity_type\", \"entity_id\", \"field\", \"base\", \"local\", \"remote\", \"remote_version\", \"detected_at\") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (\"entity_type\", \"entity_id\", \"field\") DO UPDATE SET \"base\" = excluded.\"base\", \"local\" = excluded.\"local\", \"remote\" = excluded.\"remote\", \"remote_version\" = excluded.\"remote_version\", \"detected_at\" = excluded.\"detected_at\"",
                params![
                    entity,
                    id.to_string(),
                    c.field,
                    c.base.to_string(),
                    c.local.to_string(),
                    c.remote.to_string(),
                    server.version,
                    now
                ],
            )?;
        }
        if !conflicts.is_empty() {
            set_row_meta(tx, table, id, "conflicted", None)?;
        }
        // The row: the server's record, the pending items on top, conflicted fields local.
        rebase_onto(tx, table, &server)?;
        if conflicts.is_empty() {
            return Ok(ItemOutcome::Merged);
        }
        Ok(ItemOutcome::Conflicted(
            conflicts.into_iter().map(|c| c.field).collect(),
        ))
    }

    /// Applies a page of pulled records and the sync state that goes with it, in one
    /// transaction: a kill between pages resumes from the last applied page.
    pub(crate) fn apply_pulled(
        &self,
        scope: &str,
        records: &[ServerRecord],
        state: &SyncState,
    ) -> Result<usize, StoreError> {
        for r in records {
            let latest = latest_clock(&r.clocks);
            if latest != Hlc::ZERO {
                self.inner.clock.observe(latest);
            }
        }
        let mut changed = Vec::new();
        {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Entities with nothing stored locally when the page began: their records are
            // written straight to their rows. (A page holds a record once: a snapshot page
            // by id, a changes page by its latest change.)
            let mut fresh: BTreeMap<&str, bool> = BTreeMap::new();
            // Records with local changes a restart is confirming (see `reset_token`).
            let held_key = format!("resnapshot-held:{scope}");
            let mut held: Option<Vec<(String, Uuid)>> = super::meta_get(&tx, &held_key)?
                .map(|j| serde_json::from_str(&j).unwrap_or_default());
            let held_before = held.as_ref().map(Vec::len);
            // Records the server sent from another history than the one this store
            // followed (see `Known::OtherHistory`), or own writes it answered for and
            // now shows otherwise: it was restored from a backup or replaced.
            let mut other_history = false;
            let own_writes = has_own_writes(&tx)?;
            for r in records {
                if let Some(h) = held.as_mut() {
                    h.retain(|(e, id)| !(*e == r.entity_type && *id == r.entity_id));
                }
                let Some(table) = self.table_of(&r.entity_type) else {
                    continue;
                };
                let empty = match fresh.get(r.entity_type.as_str()) {
                    Some(empty) => *empty,
                    None => {
                        let empty: bool = tx
                            .prepare_cached(&table.pull.empty)?
                            .query_row([&r.entity_type], |x| x.get(0))?;
                        fresh.insert(&r.entity_type, empty);
                        empty
                    }
                };
                // Written straight to the row when nothing local sits on top of it (the
                // row, if any, is clean: its own base); otherwise the base moves to it and
                // the pending changes are replayed on top.
                if own_writes {
                    confirm_own_write(&tx, r, &mut other_history)?;
                }
                let direct = empty || {
                    let probe = Probe::of(&tx, table, r.entity_id)?;
                    match probe.compare(r) {
                        Known::Same => {
                            if probe.unconfirmed {
                                // The snapshot holds what the device holds: confirmed.
                                set_row_meta(&tx, table, r.entity_id, "clean", None)?;
                            }
                            continue;
                        }
                        Known::OtherHistory => {
                            other_history = true;
                            if probe.row_deleted
                                && probe.clean == Some(true)
                                && !probe.pending
                                && !r.deleted
                                && r.server_updated_at.as_str() < probe.known_at()
                            {
                                // The device saw this record deleted after the version
                                // the server holds now: the server lost the delete (a
                                // restore). It is sent again; the tombstone stays.
                                write_base(&tx, table, r)?;
                                let payload =
                                    to_json_string(&super::DeletePayload { hlc: self.stamp() });
                                set_row_meta(&tx, table, r.entity_id, "pending", Some(r.version))?;
                                enqueue(
                                    &tx,
                                    table.entity,
                                    r.entity_id,
                                    MutationOp::Delete,
                                    &payload,
                                    Some(r.version),
                                    self.new_key(),
                                )?;
                                changed.push((r.entity_type.clone(), r.entity_id));
                                continue;
                            }
                        }
                        Known::Older => {}
                    }
                    probe.base.is_none() && probe.clean != Some(false) && !probe.pending
                };
                if direct {
                    put_server_row(&tx, table, r)?;
                } else {
                    write_base(&tx, table, r)?;
                    rebase_onto(&tx, table, r)?;
                }
                changed.push((r.entity_type.clone(), r.entity_id));
            }
            if let Some(h) = &held
                && Some(h.len()) != held_before
            {
                super::meta_set(&tx, &held_key, &serde_json::to_string(h).expect("JSON"))?;
            }
            if other_history {
                suspect_restore(&tx, scope)?;
            }
            tx.execute(
                "INSERT INTO \"sync_state\" (\"scope\", \"change_token\", \"snapshot_cursor\", \"snapshot_token\") VALUES (?1, ?2, ?3, ?4) ON CONFLICT (\"scope\") DO UPDATE SET \"change_token\" = excluded.\"change_token\", \"snapshot_cursor\" = excluded.\"snapshot_cursor\", \"snapshot_token\" = excluded.\"snapshot_token\"",
                params![scope, state.change_token, state.snapshot_cursor, state.snapshot_token],
            )?;
            tx.commit()?;
        }
        let n = changed.len();
        for (entity, id) in changed {
            self.notify(StoreEvent::Changed {
                entity,
                id,
                change: ChangeKind::Updated,
            });
        }
        Ok(n)
    }

    /// Every unresolved conflict, with base, local and server values per field.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a conflict's record id is not a UUID;
    /// [`StoreError::Sqlite`] if the database fails. A stored value that is not JSON is
    /// not an error: it reads as `null`.
    pub fn conflicts(&self) -> Result<Vec<Conflict>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT \"entity_type\", \"entity_id\", \"field\", \"base\", \"local\", \"remote\" FROM \"sync_conflicts\" ORDER BY \"entity_type\", \"entity_id\", \"field\"",
        )?;
        let mut rows = stmt.query([])?;
        let mut out: Vec<Conflict> = Vec::new();
        while let Some(r) = rows.next()? {
            let entity: String = r.get(0)?;
            let id: String = r.get(1)?;
            let id: Uuid = id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("conflict id `{id}`")))?;
            let parse = |s: String| serde_json::from_str(&s).unwrap_or(Json::Null);
            let field = FieldConflict {
                field: r.get(2)?,
                base: parse(r.get(3)?),
                local: parse(r.get(4)?),
                remote: parse(r.get(5)?),
            };
            match out.last_mut() {
                Some(c) if c.entity == entity && c.id == id => c.fields.push(field),
                _ => out.push(Conflict {
                    entity,
                    id,
                    fields: vec![field],
                }),
            }
        }
        Ok(out)
    }

    /// Resolves a conflict with the local values.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no live record has this id; then, reading it, the
    /// errors of [`LocalStore::get`], and, writing it, those of [`LocalStore::resolve_with`].
    pub fn keep_local<T: Syncable>(&self, id: Uuid) -> Result<(), StoreError> {
        let local = self.get::<T>(id)?.ok_or(StoreError::NotFound {
            entity: T::ENTITY,
            id,
        })?;
        self.resolve_with(&local)
    }

    /// Resolves a conflict with the server's values.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if no live record has this id; [`StoreError::Record`] if
    /// a conflict's server value does not fit its field (a stored value that is not JSON
    /// reads as `null`); [`StoreError::Corrupt`] if any stored conflict, of any record,
    /// has an id that is not a UUID; then, reading the record, the errors of
    /// [`LocalStore::get`], and, writing it, those of [`LocalStore::resolve_with`].
    pub fn keep_server<T: Syncable>(&self, id: Uuid) -> Result<(), StoreError> {
        let table = self.table::<T>()?;
        let mut value = self.get::<T>(id)?.ok_or(StoreError::NotFound {
            entity: T::ENTITY,
            id,
        })?;
        let conflicts = self.conflicts()?;
        let fields: Vec<FieldConflict> = conflicts
            .into_iter()
            .filter(|c| c.entity == table.entity.name && c.id == id)
            .flat_map(|c| c.fields)
            .collect();
        let mut record = value.to_record()?;
        for f in fields {
            record.insert(f.field, f.remote);
        }
        value = T::from_record(&record)?;
        self.resolve_with(&value)
    }

    /// Resolves a conflict with `merged`: the record takes these values and the change
    /// from the server's copy is queued.
    ///
    /// Items of the record already handed to the network stay in the queue with their
    /// key and body (the server may have applied them; a retry replays the stored
    /// result), and the resolution is the patch from what they make of the server's copy
    /// to `merged`; the record's other items are replaced by it.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the record is not stored, was deleted here since the
    /// conflict (the delete stands), or has no copy acknowledged by the server (it was
    /// never synced); [`StoreError::Invalid`] if
    /// `merged` fails [`Syncable::validate`] or [`check_record`](crate::check_record);
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Record`] if `merged` does not serialise or the server's copy does not
    /// fit `T`; [`StoreError::Diff`] if `merged` changes an `immutable` field of the
    /// server's copy; [`StoreError::Corrupt`] if the stored copy or an outbox item of the
    /// record cannot be read back; [`StoreError::Sqlite`] on a database error.
    pub fn resolve_with<T: Syncable>(&self, merged: &T) -> Result<(), StoreError> {
        let table = self.table::<T>()?;
        let mut value = merged.clone();
        value.normalize();
        value.validate()?;
        let id = value.id();
        let record = value.to_record()?;
        crate::check_record(table.entity, &record)?;
        self.write(table.entity, id, ChangeKind::Updated, |tx, hlc| {
            // A clean row is its own base (resolving a conflict already resolved).
            keep_base(tx, table, id)?;
            let base = read_base(tx, table, id)?.ok_or(StoreError::NotFound {
                entity: T::ENTITY,
                id,
            })?;
            // A record deleted here since the conflict: the delete stands (as for an
            // update of a deleted record), the resolution would bring it back.
            let row = read_row(tx, table, id)?
                .filter(|r| !r.deleted)
                .ok_or(StoreError::NotFound {
                    entity: T::ENTITY,
                    id,
                })?;
            let mut clocks: T::Clocks = serde_json::from_str(&row.clocks).unwrap_or_default();
            let sent = sent_items_of(tx, &table.entity.name, id)?;
            // What the server will hold once the items in flight are through: the patch
            // starts there, so nothing they carry is sent twice. (A delete in flight: the
            // resolution is moot and only the conflict goes.)
            let ops: Vec<(MutationOp, String)> = sent.iter().map(|(_, op, p)| (*op, p.clone())).collect();
            let start = table.erased.rebase(&base.record, &base.clocks, &ops).map_err(StoreError::Corrupt)?;
            // (A check of the record with the server stays: see `finish_resnapshot`.)
            tx.execute(
                "DELETE FROM \"sync_outbox\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 AND (\"status\" = 'dead' OR (\"status\" = 'pending' AND \"attempt_count\" = 0)) AND \"payload\" <> ?3",
                params![table.entity.name, id.to_string(), CHECK_PAYLOAD],
            )?;
            let checking = !pending_for(tx, &table.entity.name, id)?.is_empty();
            tx.execute(
                "DELETE FROM \"sync_conflicts\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2",
                params![table.entity.name, id.to_string()],
            )?;
            let Some((start, _)) = start else {
                return Ok(());
            };
            // Only the patch from the server's copy: manual fields carry the server's value
            // as their base, so the server applies them.
            let server_value = T::from_record(&start)?;
            let patch = T::diff(&server_value, &value, hlc)?;
            T::stamp(&mut clocks, &patch);
            let clocks = serde_json::to_value(clocks).expect("clocks serialise");
            let status = if patch.is_empty() && sent.is_empty() && !checking {
                "clean"
            } else {
                "pending"
            };
            put_row(
                tx,
                table,
                &record,
                &clocks,
                status,
                false,
                base.version,
                &base.server_updated_at,
            )?;
            if !patch.is_empty() {
                enqueue(
                    tx,
                    table.entity,
                    id,
                    MutationOp::Update,
                    &to_json_string(&super::UpdatePayload { patch }),
                    Some(base.version),
                    self.new_key(),
                )?;
            }
            Ok(())
        })
    }

    /// The items of the outbox that wait, with why (for a UI).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if an item's entity id, op, payload or status cannot be
    /// read back; [`StoreError::Sqlite`] if the database fails, also when an item's
    /// `created_at` or `next_attempt_at` is not a valid time.
    pub fn waiting(&self) -> Result<Vec<OutboxItem>, StoreError> {
        let conn = self.conn();
        read_outbox(
            &conn,
            "\"status\" <> 'dead' AND \"last_error\" LIKE 'waiting%'",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64, entity: &str, n: u128, op: MutationOp) -> OutboxItem {
        OutboxItem {
            id,
            entity_type: entity.into(),
            entity_id: Uuid::from_u128(n),
            op,
            payload: Json::Null,
            idempotency_key: format!("k{id}"),
            base_version: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            attempt_count: 0,
            next_attempt_at: None,
            status: OutboxStatus::Pending,
            last_error: None,
        }
    }

    /// `refs[i]` = the records item `i` points at.
    fn plan(
        items: &[OutboxItem],
        refs: &[&[(&str, u128)]],
        max: usize,
    ) -> (Vec<i64>, Vec<(i64, String)>) {
        let p = plan_batch(
            items,
            max,
            |_| true,
            |i| {
                let n = (i.id - 1) as usize; // ids are 1, 2, ... in queue order
                refs[n]
                    .iter()
                    .map(|(e, id)| (e.to_string(), Uuid::from_u128(*id)))
                    .collect()
            },
        );
        (p.chosen.iter().map(|&n| items[n].id).collect(), p.notes)
    }

    #[test]
    fn a_chain_of_any_depth_goes_dependencies_first_in_every_batch_size() {
        // d -> c -> b -> a, queued d, c, b, a.
        let items = [
            item(1, "d", 4, MutationOp::Create),
            item(2, "c", 3, MutationOp::Create),
            item(3, "b", 2, MutationOp::Create),
            item(4, "a", 1, MutationOp::Create),
        ];
        let refs: [&[(&str, u128)]; 4] = [&[("c", 3)], &[("b", 2)], &[("a", 1)], &[]];
        assert_eq!(plan(&items, &refs, 100).0, [4, 3, 2, 1]);
        assert_eq!(plan(&items, &refs, 1).0, [4]);
        assert_eq!(plan(&items, &refs, 2).0, [4, 3]);
    }

    #[test]
    fn a_deep_chain_needs_no_call_stack() {
        let n = 100_000u128;
        let items: Vec<OutboxItem> = (0..n)
            .map(|i| item(i as i64 + 1, "e", n - i, MutationOp::Create))
            .collect();
        let refs_owned: Vec<Vec<(&str, u128)>> = (0..n)
            .map(|i| {
                if n - i > 1 {
                    vec![("e", n - i - 1)]
                } else {
                    vec![]
                }
            })
            .collect();
        let refs: Vec<&[(&str, u128)]> = refs_owned.iter().map(Vec::as_slice).collect();
        let (chosen, _) = plan(&items, &refs, 3);
        assert_eq!(chosen, [n as i64, n as i64 - 1, n as i64 - 2]);
    }

    #[test]
    fn a_cycle_is_sent_in_queue_order_and_noted() {
        let items = [
            item(1, "a", 1, MutationOp::Create),
            item(2, "b", 2, MutationOp::Create),
        ];
        let refs: [&[(&str, u128)]; 2] = [&[("b", 2)], &[("a", 1)]];
        let (chosen, notes) = plan(&items, &refs, 100);
        assert_eq!(chosen, [2, 1]);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes.iter().all(|(_, n)| n.contains("cycle")));
    }

    #[test]
    fn a_dead_create_holds_back_its_dependents_only() {
        let mut dead = item(1, "a", 1, MutationOp::Create);
        dead.status = OutboxStatus::Dead;
        dead.last_error = Some("rejected".into());
        let items = [
            dead,
            item(2, "b", 2, MutationOp::Create),
            item(3, "c", 3, MutationOp::Create),
            item(4, "b", 2, MutationOp::Update),
        ];
        let refs: [&[(&str, u128)]; 4] = [&[], &[("a", 1)], &[], &[]];
        let (chosen, notes) = plan(&items, &refs, 100);
        assert_eq!(chosen, [3]);
        assert!(
            notes
                .iter()
                .any(|(id, n)| *id == 2 && n.contains("waiting for the create of a")),
            "{notes:?}"
        );
        assert!(
            notes
                .iter()
                .any(|(id, n)| *id == 4 && n.contains("waiting for the create of a")),
            "{notes:?}"
        );
    }

    #[test]
    fn clocks_text_is_serde_json_compact_text() {
        for v in [
            serde_json::json!({}),
            serde_json::json!({ "title": "019a1b2c3d4e-00000007-000000000000002a", "a": "x" }),
            serde_json::json!({ "quote\"d": "v" }),
            serde_json::json!({ "k": "tab\there" }),
            serde_json::json!({ "k": "back\\slash" }),
            serde_json::json!({ "k": 1 }),
            serde_json::json!(null),
        ] {
            assert_eq!(super::clocks_text(&v), v.to_string());
        }
    }
}
