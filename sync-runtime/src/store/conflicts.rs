//! Conflicts: merging a `conflict` answer, and the user's resolutions.

use crate::erased::AnyPayload;
use crate::merge::FieldConflict;
use crate::protocol::{MutationOp, ServerRecord};
use crate::syncable::{Patch, Record, Syncable};
use const_format::concatcp;
use rusqlite::{Connection, params};
use serde_json::Value as Json;
use sync_model::sql::meta;
use uuid::Uuid;

use super::*;

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

/// Rebuilds a conflicted record's row on a newer server record: every field follows the
/// server with the pending changes on top, like any other row, except the fields the
/// user has to decide, which keep the local value; the conflict's server side moves to
/// the new record.
///
/// Before, the row kept all its old values while the base moved on, so a resolution
/// (a diff from the new base to the row) reverted every server change to the other
/// fields: increments made elsewhere were subtracted again (simulation seed 4239).
pub(crate) fn rebase_conflicted(
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
    for (field, local) in conflict_locals(conn, &table.entity.name, s.entity_id)? {
        let remote = s.record.get(&field).cloned().unwrap_or(Json::Null);
        conn.execute(
            concatcp!("UPDATE \"", meta::CONFLICTS, "\" SET \"remote\" = ?1, \"remote_version\" = ?2 WHERE \"entity_type\" = ?3 AND \"entity_id\" = ?4 AND \"field\" = ?5"),
            params![remote.to_string(), s.version, table.entity.name, id, field],
        )?;
        record.insert(field, local);
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

/// The local side of each open conflict of a record: `(field, value)`, the values the
/// row shows until the user resolves them.
///
/// # Errors
/// [`StoreError::Corrupt`] if a stored value is not JSON; [`StoreError::Sqlite`].
pub(crate) fn conflict_locals(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<Vec<(String, Json)>, StoreError> {
    let mut stmt = conn.prepare_cached(concatcp!(
        "SELECT \"field\", \"local\" FROM \"",
        meta::CONFLICTS,
        "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2"
    ))?;
    let rows: Vec<(String, String)> = stmt
        .query_map(params![entity, id.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(field, local)| {
            let local = serde_json::from_str(&local)
                .map_err(|e| StoreError::Corrupt(format!("sync_conflicts.local: {e}")))?;
            Ok((field, local))
        })
        .collect()
}

impl LocalStore {
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
    pub(crate) fn merge_conflict(
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
        let answer = server;
        let server = match &base {
            Some(b) if b.version > answer.version => b.as_server_record(entity, id),
            _ => answer.clone(),
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
        // Two creates of one id merge from an empty base: against the record the answer
        // carries, even when the store holds a newer one, so that a copy of this database
        // restored from a backup (the item still unsent there) makes the same merge as
        // the life that sent it, under the same key (see `merge_key`). Its patch applies
        // to the newer record on the server as to any.
        // The merge against that base sends only what changed here since; the changes
        // the base holds are the server's only if its record descends from the base.
        // One a twin create began on the restored server (simulation seed 56547: a like
        // lost), or another device created again from an older copy, lacks some: the
        // device's logged changes of the record whose dots it does not include go again
        // ahead of everything queued, each under its own dot, as when a check finds
        // such a record ([`LocalStore::replay_after_check`]). Dots tell which it holds;
        // to a server that does not speak them, nothing goes again (lost, never counted
        // twice).
        let resending = resend_base.is_some();
        if resending && self.server_speaks_dots() {
            self.replay_after_check(tx, answer)?;
        }
        let twin = item.op == MutationOp::Create && resend_base.is_none();
        let against = if twin { answer } else { &server };
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
                    .twin(&record, &clocks, &against.record, &against.clocks)
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
            let theirs = against.record.get(field).cloned().unwrap_or(Json::Null);
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
        if resending {
            // The dots kept for the record are the server's record's, not the lost
            // history's: until the changes sent again are acknowledged, the record lacks
            // them (a second restore must not take them for held).
            replace_dots(tx, answer)?;
        }
        write_base(tx, table, &server)?;
        // What can be pushed now: the merge, minus the fields waiting for the user.
        let mut push = merged;
        for c in &conflicts {
            if let Some(v) = against.record.get(&c.field) {
                push.insert(c.field.clone(), v.clone());
            }
        }
        // Deleted on this device since the item was queued (its delete, not dead, waits
        // behind it, the items being sent one push at a time; a recreate may follow):
        // the delete wins over the server's edit as over a local one, and there is
        // nothing left for the user to decide about that life of the record. The merge
        // goes with the server's values for those fields (simulation seeds 463 and
        // 6140, pushes of one mutation).
        let deleted_after = items_of(tx, entity, id)?
            .iter()
            .any(|(n, op, _, dead)| *n > item.id && *op == MutationOp::Delete && !dead);
        if deleted_after {
            conflicts.clear();
        }
        // The server's record holds this item's `sum` contributions already (its first
        // delivery was applied, lost in a restore, and the record sent again): the
        // merge carries none of them, or they would count twice under a new dot.
        if dot_included(
            &item.payload,
            answer.dots.as_ref(),
            answer.dot_gaps.as_ref(),
        ) || dot_included(
            &item.payload,
            server.dots.as_ref(),
            server.dot_gaps.as_ref(),
        ) {
            for f in table
                .entity
                .synced_fields()
                .filter(|f| f.merge == sync_model::MergeStrategy::Sum)
            {
                if let Some(v) = against.record.get(&f.name) {
                    push.insert(f.name.clone(), v.clone());
                }
            }
        }
        // The rewritten item keeps the stamps of the edits it carries (the merged clocks),
        // not a new one: a later edit of the same field on this device, already queued
        // behind it, must still win.
        let hlc = self.stamp();
        let payload = table
            .erased
            .diff(&against.record, &push, hlc)
            .map_err(StoreError::Corrupt)?
            .map(|p| restamp(&p, &merged_clocks))
            .map(|p| {
                // The merge carries the item's change: once applied, the server answers a
                // retry of the item's key with its result (IDEM-6).
                let p: Json = serde_json::from_str(&p).expect("a patch payload is JSON");
                carrying(p, item).to_string()
            });
        // Its dot. A dot names a contribution: the merge carries the item's, so on a
        // server that keeps gaps (PROTOCOL.md SUM-3) it keeps the item's dot, and the
        // record's later items keep theirs. A copy of this database restored from a
        // backup taken before this merge sends the item, and those later items, with
        // the same dots, and the server tells which of them it holds (simulation seed
        // 51226: the merge under a new dot, applied with `prev` 0, made the server take
        // a later item's old dot, sent by the restored copy, for held; its like was
        // lost). An item applied ahead of the merge, its dot above the merge's, left
        // the merge's number in a gap (its `prev` names the item's dot or one above).
        // A dot without `prev` (queued by a runtime before protocol 1.3.2) leaves no gap
        // for itself when a later item goes first: it takes a new one.
        let keep_dot = self
            .server_takes_gaps()
            .then(|| payload_dot(&item.payload))
            .flatten()
            .filter(|d| d.prev.is_some());
        let payload = match (payload, keep_dot) {
            (Some(p), Some(dot)) => Some(with_dot(table.entity, &p, &dot)),
            (payload, _) => self.merge_dot(
                tx,
                table,
                id,
                item,
                payload,
                server.dots.as_ref(),
                server.dot_gaps.as_ref(),
            )?,
        };
        match payload {
            Some(payload) => {
                tx.execute(
                    concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"op\" = 'update', \"payload\" = ?1, \"idempotency_key\" = ?2, \"base_version\" = ?3, \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL, \"last_error\" = NULL WHERE \"id\" = ?4"),
                    params![payload, merge_key(&item.idempotency_key, against.version), against.version, item.id],
                )?;
            }
            None => {
                tx.execute(
                    concatcp!("DELETE FROM \"", meta::OUTBOX, "\" WHERE \"id\" = ?1"),
                    [item.id],
                )?;
            }
        }
        let now = crate::time::now();
        for c in &conflicts {
            tx.execute(
                concatcp!("INSERT INTO \"", meta::CONFLICTS, "\" (\"entity_type\", \"entity_id\", \"field\", \"base\", \"local\", \"remote\", \"remote_version\", \"detected_at\") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (\"entity_type\", \"entity_id\", \"field\") DO UPDATE SET \"base\" = excluded.\"base\", \"local\" = excluded.\"local\", \"remote\" = excluded.\"remote\", \"remote_version\" = excluded.\"remote_version\", \"detected_at\" = excluded.\"detected_at\""),
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

    /// The dot of the merge of outbox `item` (of record `id`) after a `conflict`, for a
    /// merge that does not keep the item's own (the item holds none, or the server
    /// keeps no gaps), in `payload` (the merge's body; `None`: nothing left to send).
    ///
    /// On a server that keeps gaps (PROTOCOL.md SUM-3) the new dot's `prev` is the last
    /// number this opening of the store drew for the record, at least that of every
    /// other item of the record it queued: those arriving after the merge lie in the
    /// gap it leaves. On one that does not, a record keeps one number per session, and
    /// a session's dots of one record must arrive in rising order: the record's later
    /// items not sent yet draw new dots above the merge's ([`LocalStore::redot_after`]).
    #[allow(clippy::too_many_arguments)]
    fn merge_dot(
        &self,
        tx: &Connection,
        table: &Table,
        id: Uuid,
        item: &OutboxItem,
        payload: Option<String>,
        dots: Option<&crate::protocol::Dots>,
        gaps: Option<&crate::protocol::DotGaps>,
    ) -> Result<Option<String>, StoreError> {
        if self.server_takes_gaps() {
            return Ok(
                payload.map(|p| self.dotted_after(table.entity, id, MutationOp::Update, &p, None))
            );
        }
        // It takes the item's `prev`, or the highest dot of this session among the
        // record's other items that keep theirs (sent before, logged edits sent again
        // after a restore, or dead ones a retry may bring back: `redot_after` leaves
        // them as they are).
        let session = &self.inner.dot_session;
        let kept_below = read_outbox(
            tx,
            &format!(
                "\"entity_type\" = '{}' AND \"entity_id\" = '{}' AND \"id\" <> {} AND (\"attempt_count\" > 0 OR \"id\" < {} OR \"status\" = 'dead')",
                table.entity.name.replace('\'', "''"),
                id,
                item.id,
                item.id
            ),
        )?
        .iter()
        .filter_map(|i| payload_dot(&i.payload))
        .filter(|d| d.session == *session)
        .map(|d| d.seq)
        .max();
        // (Without a `prev` of this session's, the session's last dot of the record is
        // taken, which is at least as high.)
        let prev = payload_dot(&item.payload)
            .filter(|d| d.session == *session)
            .and_then(|d| d.prev)
            .map(|p| p.max(kept_below.unwrap_or(0)));
        let payload =
            payload.map(|p| self.dotted_after(table.entity, id, MutationOp::Update, &p, prev));
        self.redot_after(tx, table, id, item.id, dots, gaps)?;
        Ok(payload)
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
            concatcp!("SELECT \"entity_type\", \"entity_id\", \"field\", \"base\", \"local\", \"remote\" FROM \"", meta::CONFLICTS, "\" ORDER BY \"entity_type\", \"entity_id\", \"field\""),
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
    /// result), and so do unsent items that add to `sum` fields (frozen from the start:
    /// a device restored from a backup of its own database holds them unsent though its
    /// other life sent them, and their deltas under a new key and dot would count
    /// twice). The resolution is the patch from what the kept items make of the
    /// server's copy to `merged`; the record's other items are replaced by it.
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
            let row = read_live_row(tx, table, T::ENTITY, id)?;
            let mut clocks: T::Clocks = serde_json::from_str(&row.clocks).unwrap_or_default();
            let (kept, dropped) = resolution_keeps(tx, table.entity, id)?;
            // What the server will hold once the kept items are through: the patch
            // starts there, so nothing they carry is sent twice. (A delete in flight: the
            // resolution is moot and only the conflict goes.)
            let ops: Vec<(MutationOp, String)> =
                kept.iter().map(|(_, op, p)| (*op, p.clone())).collect();
            let start = table
                .erased
                .rebase(&base.record, &base.clocks, &ops)
                .map_err(StoreError::Corrupt)?;
            for item in dropped {
                tx.execute(
                    concatcp!("DELETE FROM \"", meta::OUTBOX, "\" WHERE \"id\" = ?1"),
                    [item],
                )?;
            }
            let checking = !pending_for(tx, &table.entity.name, id)?.is_empty();
            tx.execute(
                concatcp!(
                    "DELETE FROM \"",
                    meta::CONFLICTS,
                    "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2"
                ),
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
            let status = if patch.is_empty() && kept.is_empty() && !checking {
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
                self.enqueue(
                    tx,
                    table.entity,
                    id,
                    MutationOp::Update,
                    &to_json_string(&super::UpdatePayload { patch }),
                    Some(base.version),
                )?;
            }
            Ok(())
        })
    }
}

/// Outbox items as (id, op, body), in queue order.
type KeptItems = Vec<(i64, MutationOp, String)>;

/// The items of record `id` a conflict resolution keeps (their id, op and body, in
/// queue order), and those it drops (ids). Kept: items handed to the network and not
/// dead, and unsent items that add to `sum` fields ([`carries_contributions`]: their
/// key names one body in every life of the database, simulation seed 54226 of the runs
/// before transactions). A check of the record with the server stays without being
/// counted as either (see `finish_resnapshot`). Dropped: the rest (dead items, unsent
/// ones without contributions), which the resolution's patch replaces.
fn resolution_keeps(
    conn: &Connection,
    entity: &Entity,
    id: Uuid,
) -> Result<(KeptItems, Vec<i64>), StoreError> {
    let mut stmt = conn.prepare_cached(concatcp!(
        "SELECT \"id\", \"op\", \"payload\", \"status\", \"attempt_count\" FROM \"",
        meta::OUTBOX,
        "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 ORDER BY \"id\""
    ))?;
    let mut rows = stmt.query(params![entity.name, id.to_string()])?;
    let (mut kept, mut dropped) = (Vec::new(), Vec::new());
    while let Some(r) = rows.next()? {
        let (n, op, payload, status, attempts): (i64, String, String, String, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        let op = parse_op(&op)?;
        let sent = status != "dead" && (attempts > 0 || status != "pending");
        if payload == CHECK_PAYLOAD && !sent {
            continue;
        }
        if sent || (status != "dead" && carries_contributions(entity, op, &payload)) {
            kept.push((n, op, payload));
        } else {
            dropped.push(n);
        }
    }
    Ok((kept, dropped))
}

/// The idempotency key of the merge of an item answered `conflict` against the server's
/// record at `version`: derived from the item's key (a name-based UUID, RFC 9562 version
/// 5), not drawn at random.
///
/// A device restored from a backup of its own database sends again the items the backup
/// held unsent; another life of the database may have sent one already, been answered
/// `conflict` and pushed the merge. The restored device gets the same answer (the
/// server's stored result) and makes the same merge under the same key, which the
/// server answers from its record of the first (counted once); under a new key its
/// `sum` deltas would count twice (simulation with `SYNC_SIM_DEVICE_RESTORES=1`).
pub(crate) fn merge_key(key: &str, version: i64) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("syncgen/merge/{key}/{version}").as_bytes(),
    )
    .to_string()
}
