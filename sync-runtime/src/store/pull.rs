//! Pulling: applying the server's records (changes and snapshot pages) to the rows, their
//! base copies and the outbox items still pending for them.

use crate::hlc::Hlc;
use crate::protocol::{MutationOp, ServerRecord};
use crate::syncable::Record;
use const_format::concatcp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use sync_model::sql::meta;
use uuid::Uuid;

use super::*;

/// The base copy (last server-acknowledged record).
pub(crate) struct Base {
    pub(crate) record: Record,
    pub(crate) clocks: Json,
    pub(crate) version: i64,
    pub(crate) server_updated_at: String,
    pub(crate) deleted: bool,
}

impl Base {
    pub(crate) fn as_server_record(&self, entity: &str, id: Uuid) -> ServerRecord {
        ServerRecord {
            entity_type: entity.to_string(),
            entity_id: id,
            version: self.version,
            server_updated_at: self.server_updated_at.clone(),
            deleted: self.deleted,
            record: self.record.clone(),
            clocks: self.clocks.clone(),
            dots: None,
            dot_gaps: None,
            life_since: None,
        }
    }
}

/// The pull path's statements for one entity, built once when the store opens (building
/// them per record cost more than SQLite's own work on a page of changes).
pub(crate) struct PullSql {
    /// `SELECT <synced columns>, clocks, version, server_updated_at, deleted FROM base WHERE id = ?1`.
    pub(crate) read_base: String,
    /// Upsert of the base copy, same column order as `read_base`.
    pub(crate) write_base: String,
    /// Upsert of the local row: synced columns then the six metadata columns.
    pub(crate) put_row: String,
    /// `SELECT sync_status = 'conflicted' FROM t WHERE id = ?1`.
    pub(crate) conflicted: String,
    /// Copies a clean, acknowledged row into the base table unless a base exists.
    pub(crate) keep_base: String,
    /// Whether the entity has no rows, no base copies and no outbox items at all (the
    /// first sync of a new device): then no pulled record needs the probe.
    pub(crate) empty: String,
    /// What the store knows of one record (see [`Probe`]).
    pub(crate) probe: String,
    /// `UPDATE t SET sync_status = ?1, sync_version = COALESCE(?2, sync_version) WHERE id = ?3`.
    pub(crate) set_meta: String,
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
            meta::CLOCKS,
            meta::VERSION,
            meta::SERVER_UPDATED_AT,
            meta::DELETED,
        ];
        let base_table = meta::base_table(&e.table);
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
                    meta::CLOCKS,
                    meta::UPDATED_AT,
                    meta::STATUS,
                    meta::DELETED,
                    meta::VERSION,
                    meta::SERVER_UPDATED_AT,
                ],
            ),
            conflicted: format!(
                "SELECT {} = 'conflicted' FROM {} WHERE {id} = ?1",
                q(meta::STATUS),
                q(&e.table)
            ),
            empty: format!(
                "SELECT NOT EXISTS (SELECT 1 FROM {t}) AND NOT EXISTS (SELECT 1 FROM {base}) AND NOT EXISTS (SELECT 1 FROM {outbox} WHERE \"entity_type\" = ?1)",
                outbox = q(meta::OUTBOX),
                base = q(&base_table),
                t = q(&e.table),
            ),
            probe: format!(
                "SELECT (SELECT {v} FROM {base} WHERE {id} = ?1), (SELECT {v} FROM {t} WHERE {id} = ?1), (SELECT {s} IN ('clean', 'syncing') FROM {t} WHERE {id} = ?1), EXISTS (SELECT 1 FROM {outbox} WHERE \"entity_type\" = ?2 AND \"entity_id\" = ?1 AND \"status\" <> 'dead'), (SELECT {s} = 'syncing' FROM {t} WHERE {id} = ?1), (SELECT {at} FROM {base} WHERE {id} = ?1), (SELECT {at} FROM {t} WHERE {id} = ?1), (SELECT {d} FROM {t} WHERE {id} = ?1)",
                base = q(&base_table),
                t = q(&e.table),
                v = q(meta::VERSION),
                s = q(meta::STATUS),
                at = q(meta::SERVER_UPDATED_AT),
                d = q(meta::DELETED),
                outbox = q(meta::OUTBOX),
            ),
            keep_base: format!(
                "INSERT INTO {base} ({cols}) SELECT {cols} FROM {t} WHERE {id} = ?1 AND {v} IS NOT NULL AND {s} IN ('clean', 'syncing') ON CONFLICT ({id}) DO NOTHING",
                base = q(&base_table),
                cols = base_cols.join(", "),
                t = q(&e.table),
                v = q(meta::VERSION),
                s = q(meta::STATUS),
            ),
            set_meta: format!(
                "UPDATE {} SET {s} = ?1, {v} = COALESCE(?2, {v}) WHERE {id} = ?3",
                q(&e.table),
                s = q(meta::STATUS),
                v = q(meta::VERSION),
            ),
        }
    }
}

pub(crate) fn read_base(
    conn: &Connection,
    table: &Table,
    id: Uuid,
) -> Result<Option<Base>, StoreError> {
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
pub(crate) fn keep_base(conn: &Connection, table: &Table, id: Uuid) -> Result<(), StoreError> {
    conn.prepare_cached(&table.pull.keep_base)?
        .execute([id.to_string()])?;
    Ok(())
}

/// What the store knows of one record, in one statement.
pub(crate) struct Probe {
    /// The base copy's version, if there is a base copy.
    pub(crate) base: Option<i64>,
    /// The row's `sync_version`.
    pub(crate) row_version: Option<i64>,
    /// `Some(true)` for a clean row (its own base), `None` if there is no row.
    pub(crate) clean: Option<bool>,
    /// Whether the record has outbox items still to send.
    pub(crate) pending: bool,
    /// The row awaits confirmation by the snapshot under way (`syncing`).
    pub(crate) unconfirmed: bool,
    /// The base copy's `server_updated_at`, if there is a base copy.
    pub(crate) base_at: Option<String>,
    /// The row's `sync_server_updated_at`.
    pub(crate) row_at: Option<String>,
    /// The row is a tombstone.
    pub(crate) row_deleted: bool,
}

impl Probe {
    pub(crate) fn of(conn: &Connection, table: &Table, id: Uuid) -> Result<Self, StoreError> {
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
    pub(crate) fn known_version(&self) -> Option<i64> {
        match self.base {
            Some(v) => Some(v),
            None => self.row_version.filter(|_| self.clean == Some(true)),
        }
    }

    /// The commit time of [`Probe::known_version`] (empty if a store of an earlier
    /// version wrote it without one).
    pub(crate) fn known_at(&self) -> &str {
        match self.base {
            Some(_) => self.base_at.as_deref(),
            None => self.row_at.as_deref().filter(|_| self.clean == Some(true)),
        }
        .unwrap_or("")
    }

    /// How the server's record `r` relates to the version the store holds.
    pub(crate) fn compare(&self, r: &ServerRecord) -> Known {
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
pub(crate) enum Known {
    /// The store holds nothing, or an older version.
    Older,
    /// The store holds this version (or a newer one of the same history).
    Same,
    /// The server's record is from another history than the store's: the server was
    /// restored from a backup or replaced since the store heard of the record.
    OtherHistory,
}

/// The synced fields' column values of `record`, in column order.
pub(crate) fn field_values(
    table: &Table,
    record: &Record,
) -> Result<Vec<rusqlite::types::Value>, StoreError> {
    let mut args = Vec::with_capacity(table.entity.fields.len() + 6);
    for f in table.entity.synced_fields() {
        args.push(columns::to_sql(
            f,
            record.get(&f.name).unwrap_or(&Json::Null),
        )?);
    }
    Ok(args)
}

/// Whether the device holds the record live (a row that is not a tombstone).
pub(crate) fn is_live(conn: &Connection, table: &Table, id: Uuid) -> Result<bool, StoreError> {
    Ok(read_row(conn, table, id)?.is_some_and(|r| !r.deleted))
}

pub(crate) fn write_base(
    conn: &Connection,
    table: &Table,
    s: &ServerRecord,
) -> Result<(), StoreError> {
    let mut args = field_values(table, &s.record)?;
    args.push(rusqlite::types::Value::Text(s.clocks.to_string()));
    args.push(rusqlite::types::Value::Integer(s.version));
    args.push(rusqlite::types::Value::Text(s.server_updated_at.clone()));
    args.push(rusqlite::types::Value::Integer(i64::from(s.deleted)));
    conn.prepare_cached(&table.pull.write_base)?
        .execute(rusqlite::params_from_iter(args))?;
    super::push::keep_dots(conn, s)
}

/// Writes the local row with explicit sync metadata.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_row(
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
pub(crate) fn put_server_row(
    conn: &Connection,
    table: &Table,
    s: &ServerRecord,
) -> Result<(), StoreError> {
    super::push::keep_dots(conn, s)?;
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
pub(crate) fn clocks_text(clocks: &Json) -> String {
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

pub(crate) fn latest_clock(clocks: &Json) -> Hlc {
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

pub(crate) fn set_row_meta(
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

/// Removes the base copy of a record.
pub(crate) fn delete_base(
    conn: &Connection,
    e: &sync_model::Entity,
    id: &str,
) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "DELETE FROM {} WHERE {} = ?1",
            q(&meta::base_table(&e.table)),
            q(&e.id_field().column)
        ),
        [id],
    )?;
    Ok(())
}

/// Removes a record's row.
pub(crate) fn delete_row(
    conn: &Connection,
    e: &sync_model::Entity,
    id: &str,
) -> Result<(), StoreError> {
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

/// Drops every open conflict of record `id` of `entity`.
pub(crate) fn delete_conflicts(
    conn: &Connection,
    entity: &str,
    id: &str,
) -> Result<(), StoreError> {
    conn.execute(
        concatcp!(
            "DELETE FROM \"",
            meta::CONFLICTS,
            "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2"
        ),
        params![entity, id],
    )?;
    Ok(())
}

/// Makes a row new to the server: no version, `pending` (its create is queued).
///
/// The record's open conflicts go with its version: they were between this device's value
/// and a server version that no longer exists (a restored server lost it), so there is no
/// remote side left to keep or resolve against. If another device still holds its copy and
/// sends it again, the two creates meet as twin creates and conflict afresh.
pub(crate) fn unversion_row(
    conn: &Connection,
    e: &sync_model::Entity,
    id: &str,
) -> Result<(), StoreError> {
    delete_conflicts(conn, &e.name, id)?;
    conn.execute(
        &format!(
            "UPDATE {} SET {} = NULL, {} = 'pending' WHERE {} = ?1",
            q(&e.table),
            q(meta::VERSION),
            q(meta::STATUS),
            q(&e.id_field().column)
        ),
        [id],
    )?;
    Ok(())
}

/// Moves the base to the server's record and rebuilds the local row: the server's record
/// with the still-pending local mutations on top (the base moves, the patches stay).
pub(crate) fn rebase_row(
    conn: &Connection,
    table: &Table,
    s: &ServerRecord,
) -> Result<(), StoreError> {
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
pub(crate) fn rebase_onto(
    conn: &Connection,
    table: &Table,
    s: &ServerRecord,
) -> Result<(), StoreError> {
    let all = items_of(conn, &table.entity.name, s.entity_id)?;
    let conflicted: bool = conn
        .prepare_cached(&table.pull.conflicted)?
        .query_row([s.entity_id.to_string()], |r| r.get(0))
        .optional()?
        .unwrap_or(false);
    if s.deleted {
        // Deleted on the server: delete wins over edits and open conflicts of this record.
        conn.execute(
            concatcp!(
                "DELETE FROM \"",
                meta::CONFLICTS,
                "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2"
            ),
            params![table.entity.name, s.entity_id.to_string()],
        )?;
        if conflicted {
            delete_items_of(conn, &table.entity.name, s.entity_id)?;
            return put_server_row(conn, table, s);
        }
    }
    // Dead items stay visible on the row (marked failed) until they are retried or
    // discarded: the user's edit does not vanish because another device's arrived.
    // Items whose dot the server's record includes are in it already (their responses
    // were lost, or they died after the server applied them): not replayed on top, or
    // their `sum` deltas would show twice.
    let dead = !s.deleted && all.iter().any(|i| i.3);
    let pending: Vec<(i64, MutationOp, String)> = all
        .into_iter()
        .filter(|i| !(s.deleted && i.3))
        .map(|(n, op, p, _)| (n, op, p))
        .collect();
    let pending: Vec<(i64, MutationOp, String)> = match &s.dots {
        Some(dots) => pending
            .into_iter()
            .filter(|(_, _, p)| {
                serde_json::from_str::<Json>(p)
                    .map_or(true, |p| !dot_included(&p, Some(dots), s.dot_gaps.as_ref()))
            })
            .collect(),
        None => pending,
    };
    // (A conflicted row shows them too, under the conflict's local values.)
    if conflicted {
        return rebase_conflicted(conn, table, s, pending);
    }
    if pending.is_empty() {
        return put_server_row(conn, table, s);
    }
    let status = if dead { "failed" } else { "pending" };
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
            status,
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

/// What a page of records comes with, and so what applying it records besides them.
pub(crate) enum Page<'a> {
    /// A page of changes or of a snapshot: the sync state that follows it.
    Pulled(&'a SyncState),
    /// A page of an entity's records fetched again after a migration gave it new
    /// fields ([`LocalStore::refetch_next`]): the cursor of its next page, if any. A
    /// record at the version the device holds is written again all the same: the
    /// device holds it without the new fields' values.
    Refetched {
        entity: &'a str,
        next_cursor: Option<&'a str>,
    },
}

impl LocalStore {
    /// Applies a page of pulled records and the sync state that goes with it, in one
    /// transaction: a kill between pages resumes from the last applied page.
    pub(crate) fn apply_pulled(
        &self,
        scope: &str,
        records: &[ServerRecord],
        state: &SyncState,
    ) -> Result<usize, StoreError> {
        self.apply_page(scope, records, Page::Pulled(state))
    }

    /// [`LocalStore::apply_pulled`] for every kind of [`Page`].
    pub(crate) fn apply_page(
        &self,
        scope: &str,
        records: &[ServerRecord],
        page: Page<'_>,
    ) -> Result<usize, StoreError> {
        let refetching = matches!(page, Page::Refetched { .. });
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
            let mut held: Option<Vec<(String, Uuid)>> = match refetching {
                true => None,
                false => super::meta_get(&tx, &held_key)?
                    .map(|j| serde_json::from_str(&j).unwrap_or_default()),
            };
            let held_before = held.as_ref().map(Vec::len);
            // Records the server sent from another history than the one this store
            // followed (see `Known::OtherHistory`), or own writes it answered for and
            // now shows otherwise: it was restored from a backup or replaced.
            let mut other_history = false;
            let own_writes = has_own_writes(&tx)?;
            // Whether the store kept any record's dots (one query per page; a store
            // that kept none reads nothing per record for records without dots).
            let kept_any = super::push::has_kept_dots(&tx)?;
            // Records whose acknowledged changes wait to be sent again after a restore:
            // their dots on the restored server (see `LocalStore::replay_acknowledged`).
            let replaying = match refetching {
                true => Default::default(),
                false => replay_held(&tx)?,
            };
            for r in records {
                if let Some(h) = held.as_mut() {
                    h.retain(|(e, id)| !(*e == r.entity_type && *id == r.entity_id));
                }
                if !replaying.is_empty()
                    && replaying.contains(&(r.entity_type.clone(), r.entity_id))
                {
                    note_replay_dots(&tx, r)?;
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
                // A later version that lacks contributions the store saw the server
                // hold: another history under higher numbers (PROTOCOL.md SUM-4). Also
                // when the store holds this version already (the answer to a retry,
                // from its key, brought it).
                if !refetching
                    && (kept_any || r.dots.is_some())
                    && super::push::note_current(&tx, r)?
                {
                    other_history = true;
                }
                let mut live_before = false;
                let direct = empty || {
                    let probe = Probe::of(&tx, table, r.entity_id)?;
                    live_before = probe.clean.is_some() && !probe.row_deleted;
                    match probe.compare(r) {
                        Known::Same if refetching => {}
                        Known::Same => {
                            if probe.unconfirmed {
                                // The snapshot holds what the device holds: confirmed.
                                set_row_meta(&tx, table, r.entity_id, "clean", None)?;
                            }
                            continue;
                        }
                        Known::OtherHistory => {
                            other_history = true;
                            // The dots kept are of the history the server lost.
                            super::push::replace_dots(&tx, r)?;
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
                                self.enqueue(
                                    &tx,
                                    table.entity,
                                    r.entity_id,
                                    MutationOp::Delete,
                                    &payload,
                                    Some(r.version),
                                )?;
                                changed.push((r.entity_type.clone(), r.entity_id, None));
                                continue;
                            }
                        }
                        Known::Older => {}
                    }
                    probe.base.is_none() && probe.clean != Some(false) && !probe.pending
                };
                let live_after = if direct {
                    put_server_row(&tx, table, r)?;
                    !r.deleted
                } else {
                    write_base(&tx, table, r)?;
                    rebase_onto(&tx, table, r)?;
                    is_live(&tx, table, r.entity_id)?
                };
                changed.push((
                    r.entity_type.clone(),
                    r.entity_id,
                    ChangeKind::of(live_before, live_after),
                ));
            }
            if let Some(h) = &held
                && Some(h.len()) != held_before
            {
                super::meta_set(&tx, &held_key, &serde_json::to_string(h).expect("JSON"))?;
            }
            if other_history {
                suspect_restore(&tx, scope)?;
            }
            match page {
                Page::Pulled(state) => {
                    tx.execute(
                        concatcp!("INSERT INTO \"", meta::STATE, "\" (\"scope\", \"change_token\", \"snapshot_cursor\", \"snapshot_token\") VALUES (?1, ?2, ?3, ?4) ON CONFLICT (\"scope\") DO UPDATE SET \"change_token\" = excluded.\"change_token\", \"snapshot_cursor\" = excluded.\"snapshot_cursor\", \"snapshot_token\" = excluded.\"snapshot_token\""),
                        params![scope, state.change_token, state.snapshot_cursor, state.snapshot_token],
                    )?;
                }
                Page::Refetched {
                    entity,
                    next_cursor,
                } => super::restart::refetch_advance(&tx, entity, next_cursor)?,
            }
            tx.commit()?;
        }
        let n = changed.len();
        for (entity, id, change) in changed {
            match change {
                Some(change) => self.notify(StoreEvent::Changed {
                    entity,
                    id,
                    change,
                    origin: ChangeOrigin::Remote,
                }),
                None => self.notify_status(),
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {

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
