//! Local writes: create, update and delete, each one transaction that writes the row, its
//! sync metadata and the outbox item (coalesced with the record's last unsent item).

use super::*;
use const_format::concatcp;
use sync_model::sql::meta;

/// The outbox's own spelling of an operation ([`MutationOp::as_str`]), read back.
pub(crate) fn parse_op(s: &str) -> Result<MutationOp, StoreError> {
    MutationOp::parse(s).ok_or_else(|| StoreError::Corrupt(format!("outbox op `{s}`")))
}

/// The outbox payload of a create.
#[derive(Serialize)]
pub(crate) struct CreatePayload<'a, C> {
    pub(crate) record: &'a Record,
    pub(crate) clocks: &'a C,
    /// Kept through coalescing: see `push::CreatePayloadOwned::resend_base`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) resend_base: Option<Json>,
    /// Kept through coalescing: see `push::CreatePayloadOwned::dots`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dots: Option<Json>,
}

/// The outbox payload of an update.
#[derive(Serialize, Deserialize)]
pub(crate) struct UpdatePayload<P> {
    pub(crate) patch: P,
}

/// The outbox payload of a delete.
#[derive(Serialize)]
pub(super) struct DeletePayload {
    pub(super) hlc: Hlc,
}

pub(crate) fn to_json_string<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("sync payloads always serialise")
}

/// A stored row, read back.
pub(crate) struct Row {
    pub(crate) record: Record,
    pub(crate) clocks: String,
    pub(crate) deleted: bool,
    pub(crate) version: Option<i64>,
    /// `sync_status = 'clean'`: the row is the server's record, its base copy may be absent.
    pub(crate) clean: bool,
}

pub(crate) fn row_from_sql(entity: &Entity, r: &rusqlite::Row<'_>) -> Result<Row, StoreError> {
    let mut record = Record::new();
    let mut i = 0;
    for f in entity.synced_fields() {
        record.insert(f.name.clone(), columns::from_sql(f, r.get_ref(i)?)?);
        i += 1;
    }
    let clocks: String = r.get(i)?;
    let deleted: i64 = r.get(i + 1)?;
    let version: Option<i64> = r.get(i + 2)?;
    // `syncing`: clean, and awaiting confirmation by a snapshot (see `reset_token`).
    let clean = r
        .get_ref(i + 3)?
        .as_str()
        .is_ok_and(|s| s == "clean" || s == "syncing");
    Ok(Row {
        record,
        clocks,
        deleted: deleted != 0,
        version,
        clean,
    })
}

pub(crate) fn read_row(
    conn: &Connection,
    table: &Table,
    id: Uuid,
) -> Result<Option<Row>, StoreError> {
    let entity = table.entity;
    let mut stmt = conn.prepare_cached(&table.select_by_id)?;
    let mut rows = stmt.query([id.to_string()])?;
    match rows.next()? {
        Some(r) => Ok(Some(row_from_sql(entity, r)?)),
        None => Ok(None),
    }
}

/// The record's row if it exists and is not a tombstone.
///
/// # Errors
///
/// [`StoreError::NotFound`] if there is no such record or it is deleted; what
/// [`read_row`] returns otherwise.
pub(crate) fn read_live_row(
    conn: &Connection,
    table: &Table,
    entity: &'static str,
    id: Uuid,
) -> Result<Row, StoreError> {
    read_row(conn, table, id)?
        .filter(|r| !r.deleted)
        .ok_or(StoreError::NotFound { entity, id })
}

/// Inserts or replaces the row's data and marks it pending.
pub(crate) fn write_row(
    conn: &Connection,
    table: &Table,
    record: &Record,
    clocks: &str,
    hlc: Hlc,
    deleted: bool,
) -> Result<(), StoreError> {
    let mut args: Vec<Sql> = Vec::with_capacity(table.entity.fields.len() + 4);
    for f in table.entity.synced_fields() {
        args.push(columns::to_sql(
            f,
            record.get(&f.name).unwrap_or(&Json::Null),
        )?);
    }
    args.push(Sql::Text(clocks.to_owned()));
    args.push(Sql::Text(hlc.to_string()));
    args.push(Sql::Text("pending".into()));
    args.push(Sql::Integer(i64::from(deleted)));
    conn.prepare_cached(&table.upsert)?
        .execute(params_from_iter(args))?;
    Ok(())
}

/// Writes the changed columns of a live row and marks it pending.
pub(crate) fn update_columns(
    conn: &Connection,
    table: &Table,
    id: Uuid,
    record: &Record,
    changed: &[&str],
    clocks: String,
    hlc: Hlc,
) -> Result<(), StoreError> {
    let mut sql = String::with_capacity(
        table.update_head.len() + table.update_tail.len() + 24 * changed.len(),
    );
    sql.push_str(&table.update_head);
    let mut args: Vec<Sql> = Vec::with_capacity(changed.len() + 3);
    for name in changed {
        let (f, set) = table
            .entity
            .field(name)
            .zip(table.set_field.get(*name))
            .ok_or_else(|| StoreError::Corrupt(format!("patch field `{name}`")))?;
        sql.push_str(set);
        args.push(columns::to_sql(
            f,
            record.get(*name).unwrap_or(&Json::Null),
        )?);
    }
    sql.push_str(&table.update_tail);
    args.push(Sql::Text(clocks));
    args.push(Sql::Text(hlc.to_string()));
    args.push(Sql::Text(id.to_string()));
    conn.prepare_cached(&sql)?.execute(params_from_iter(args))?;
    Ok(())
}

pub(crate) fn mark_deleted(
    conn: &Connection,
    entity: &Entity,
    id: Uuid,
    hlc: Hlc,
) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "UPDATE {} SET {} = 1, {} = 'pending', {} = ?1 WHERE {} = ?2",
            q(&entity.table),
            q(meta::DELETED),
            q(meta::STATUS),
            q(meta::UPDATED_AT),
            q(&entity.id_field().column)
        ),
        params![hlc.to_string(), id.to_string()],
    )?;
    Ok(())
}

pub(crate) struct LastItem {
    pub(crate) id: i64,
    pub(crate) op: MutationOp,
    pub(crate) payload: String,
    /// Never attempted, still pending, and carrying no `sum` contribution
    /// ([`carries_contributions`]): its body may be rewritten (under a new key).
    pub(crate) mergeable: bool,
}

pub(crate) fn last_item(
    conn: &Connection,
    entity: &Entity,
    id: Uuid,
) -> Result<Option<LastItem>, StoreError> {
    // No ORDER BY: with SQLite's STAT4 build, `ORDER BY id DESC LIMIT 1` over this index
    // makes the statement re-prepare on every execution (measured: 20% of an update).
    // A coalescing entity has very few items per record, so the last is picked here.
    let mut stmt = conn.prepare_cached(concatcp!(
        "SELECT \"id\", \"op\", \"payload\", \"status\", \"attempt_count\" FROM \"",
        meta::OUTBOX,
        "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2"
    ))?;
    let mut rows = stmt.query(params![entity.name, id.to_string()])?;
    type Found = (i64, String, String, String, i64);
    let mut last: Option<Found> = None;
    while let Some(r) = rows.next()? {
        let item_id: i64 = r.get(0)?;
        if last.as_ref().is_none_or(|l| l.0 < item_id) {
            last = Some((item_id, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
        }
    }
    last.map(|(id, op, payload, status, attempts)| {
        let op = parse_op(&op)?;
        // An item that carries the change of earlier keys (`replaces`) keeps them: it is
        // not composed either.
        let mergeable = status == "pending"
            && attempts == 0
            && !payload.contains("\"replaces\"")
            && !carries_contributions(entity, op, &payload);
        Ok(LastItem {
            id,
            op,
            payload,
            mergeable,
        })
    })
    .transpose()
}

/// Whether an outbox item adds to a `sum` field: an update with a non-zero `add`, or a
/// create with a non-zero value in a `sum` field. Such an item is never rewritten, even
/// unsent: its key must name one body in every life of the database.
///
/// A device restored from a backup of its own database (a phone restored from a cloud
/// backup) sends again the items the backup held unsent, under their keys. Another life
/// of the database may have sent them already; the same key with the same body is then
/// answered from the server's record of it (IDEM-1), counted once. Had either life
/// coalesced later edits into the item, the bodies would differ: refused as
/// `idempotency-key-reused`, and under a new key its deltas would count twice. An item
/// without contributions is safe to send again under a new key (its `lww` stamps,
/// `union` operations and `manual` bases say the same thing twice), so rewriting one
/// gives it a new key ([`LocalStore::rewrite_item`]).
pub(crate) fn carries_contributions(entity: &Entity, op: MutationOp, payload: &str) -> bool {
    let mut sums = entity
        .synced_fields()
        .filter(|f| f.merge == sync_model::MergeStrategy::Sum)
        .peekable();
    if sums.peek().is_none() || op == MutationOp::Delete {
        return false;
    }
    let Ok(payload) = serde_json::from_str::<Json>(payload) else {
        // Unreadable: never rewritten (sending it fails visibly instead).
        return true;
    };
    let nonzero = |v: Option<&Json>| v.and_then(Json::as_f64).is_some_and(|n| n != 0.0);
    sums.any(|f| match op {
        MutationOp::Create => nonzero(payload.get("record").and_then(|r| r.get(&f.name))),
        _ => nonzero(
            payload
                .get("patch")
                .and_then(|p| p.get(&f.name))
                .and_then(|o| o.get("add")),
        ),
    })
}

/// Whether an item of `op` with `payload` adds to `sum` fields, so that it carries a dot
/// (PROTOCOL.md SUM-2): a create of an entity with `sum` fields, or an update whose patch
/// has an operation on one.
pub(crate) fn takes_dot(entity: &Entity, op: MutationOp, payload: &Json) -> bool {
    let is_sum = |name: &str| {
        entity
            .field(name)
            .is_some_and(|f| f.merge == sync_model::MergeStrategy::Sum)
    };
    match op {
        MutationOp::Create => entity
            .synced_fields()
            .any(|f| f.merge == sync_model::MergeStrategy::Sum),
        MutationOp::Update => payload
            .get("patch")
            .and_then(Json::as_object)
            .is_some_and(|p| p.keys().any(|k| is_sum(k))),
        MutationOp::Delete => false,
    }
}

/// Inserts an outbox item as given (see [`LocalStore::enqueue`]).
fn insert_item(
    conn: &Connection,
    entity: &Entity,
    id: Uuid,
    op: MutationOp,
    payload: &str,
    base_version: Option<i64>,
    key: String,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        concatcp!("INSERT INTO \"", meta::OUTBOX, "\" (\"entity_type\", \"entity_id\", \"op\", \"payload\", \"idempotency_key\", \"base_version\", \"created_at\") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
    )?
    .execute(params![
        entity.name,
        id.to_string(),
        op.as_str(),
        payload,
        key,
        base_version,
        crate::time::now()
    ])?;
    Ok(())
}

impl LocalStore {
    /// Queues a mutation of record `id` under a new idempotency key, with a new dot if
    /// it adds to `sum` fields (see [`LocalStore::dotted`]).
    pub(crate) fn enqueue(
        &self,
        conn: &Connection,
        entity: &Entity,
        id: Uuid,
        op: MutationOp,
        payload: &str,
        base_version: Option<i64>,
    ) -> Result<(), StoreError> {
        let payload = self.dotted(entity, id, op, payload);
        let payload = match self.open_transaction() {
            Some(group) => with_txn(&payload, &group),
            None => payload,
        };
        insert_item(conn, entity, id, op, &payload, base_version, self.new_key())
    }

    /// Rewrites an unsent item (coalescing), under a new idempotency key: a key names
    /// one body, whichever life of the database sends it (see [`carries_contributions`]).
    /// The body is a new change, so it gets a new dot if it adds to `sum` fields: the
    /// item is its record's last, so the dot still follows every other of the record.
    /// The new dot takes the replaced dot's `prev`: the replaced one is never sent, and
    /// must not be left as a gap the server would keep (a device restored from a backup
    /// holding the replaced item sends it, and it must count as held).
    pub(crate) fn rewrite_item(
        &self,
        conn: &Connection,
        entity: &Entity,
        (id, item): (Uuid, i64),
        op: MutationOp,
        payload: &str,
    ) -> Result<(), StoreError> {
        let replaced: Option<String> = conn
            .prepare_cached(concatcp!(
                "SELECT \"payload\" FROM \"",
                meta::OUTBOX,
                "\" WHERE \"id\" = ?1"
            ))?
            .query_row([item], |r| r.get(0))
            .optional()?;
        let replaced = replaced.and_then(|p| serde_json::from_str::<Json>(&p).ok());
        let prev = replaced
            .as_ref()
            .and_then(payload_dot)
            .filter(|d| d.session == self.inner.dot_session)
            .and_then(|d| d.prev);
        let payload = self.dotted_after(entity, id, op, payload, prev);
        // The item stays in its transaction, and a transaction writing into it joins
        // that one: their changes now travel together (see `LocalStore::transaction`).
        let earlier = replaced.as_ref().and_then(payload_txn);
        let payload = match (self.open_transaction(), earlier) {
            (Some(group), Some(earlier)) if group != earlier => {
                join_transactions(conn, &earlier, &group)?;
                with_txn(&payload, &group)
            }
            (Some(group), _) | (None, Some(group)) => with_txn(&payload, &group),
            (None, None) => payload,
        };
        conn.prepare_cached(concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"op\" = ?1, \"payload\" = ?2, \"idempotency_key\" = ?3 WHERE \"id\" = ?4 AND \"status\" = 'pending' AND \"attempt_count\" = 0"))?
            .execute(params![op.as_str(), payload, self.new_key(), item])?;
        Ok(())
    }

    /// `payload` (a new item's body of record `id`) with a new dot of this session in its
    /// [`DOT_MEMBER`] (`{"session", "seq", "prev"}`) if it adds to `sum` fields
    /// ([`takes_dot`]); as it is otherwise. `prev` is the number of the session's last
    /// dot of the same record (PROTOCOL.md SUM-3).
    ///
    /// A dot is drawn when the change is queued, not when it is first sent: a device
    /// restored from a backup of its own database then sends an item the backup held
    /// unsent with the dot its other life sent it with, and the server tells from a
    /// record's dots that it holds the change already, even when the key is unknown to
    /// it (the server was restored too; simulation seed 10735). A retry, and the change
    /// sent again as a create after the server lost its record, keep the dot, and so
    /// does a merge after a conflict on a server that keeps gaps (on one that does not,
    /// it draws a new one, above the first, and the record's items queued after it draw
    /// theirs again: [`LocalStore::redot_after`]). Items of one record are
    /// sent in queue order (a later one waits behind a dead one), so a session's dots of
    /// one record reach the server in rising order, but for a merge that kept its dot,
    /// which goes after later items of its push that were applied: their `prev` names
    /// its number or one above, so the record holds it as a gap until it arrives.
    pub(crate) fn dotted(
        &self,
        entity: &Entity,
        id: Uuid,
        op: MutationOp,
        payload: &str,
    ) -> String {
        self.dotted_after(entity, id, op, payload, None)
    }

    /// [`LocalStore::dotted`] with the dot's `prev` given (`None`: the session's last
    /// dot of the record). A create's dot has `prev` 0: it begins a new life of the
    /// record (after a delete, the old life's dots are not its own).
    pub(crate) fn dotted_after(
        &self,
        entity: &Entity,
        id: Uuid,
        op: MutationOp,
        payload: &str,
        prev: Option<u64>,
    ) -> String {
        let sums = op != MutationOp::Delete
            && entity
                .synced_fields()
                .any(|f| f.merge == sync_model::MergeStrategy::Sum);
        if !sums {
            return payload.to_string();
        }
        let Ok(mut body) = serde_json::from_str::<Json>(payload) else {
            return payload.to_string();
        };
        if !takes_dot(entity, op, &body) {
            return payload.to_string();
        }
        let Some(members) = body.as_object_mut() else {
            return payload.to_string();
        };
        let prev = if op == MutationOp::Create {
            Some(0)
        } else {
            prev
        };
        let dot = self.next_dot(&entity.name, id, prev);
        members.insert(DOT_MEMBER.into(), dot_member(&dot));
        body.to_string()
    }

    /// New dots, in queue order, for the items of record `id` after outbox item `after`
    /// that hold a dot of this session, were never sent and whose dot the server's
    /// record (`dots`) does not include: the item `after` was merged after a conflict
    /// and drew a new dot of this session, and theirs must stay above it. Dots of other
    /// sessions (an earlier life of the database) need no order against it, and an
    /// included dot must stay as it is, or its contribution would count again.
    ///
    /// A record's dots keep one number per session (PROTOCOL.md SUM-2) and the numbers
    /// below it the record lacks (SUM-3), so a session's dots of one record must reach
    /// the server in rising order on a server that keeps no gaps (before protocol
    /// 1.3.2; one that does takes a lower dot late when the `prev` of those above names
    /// it or one above, which leaves it in a gap). Dots are drawn when an item is queued,
    /// and items of a record are sent in queue order; on a server without gaps a merge
    /// after a conflict is the one rewrite that needs a new dot (a later item of the same
    /// push may have been applied, its dot above the conflicted item's), and it takes
    /// the conflicted item's place, ahead of the items queued after it.
    pub(crate) fn redot_after(
        &self,
        conn: &Connection,
        table: &Table,
        id: Uuid,
        after: i64,
        dots: Option<&crate::protocol::Dots>,
        gaps: Option<&crate::protocol::DotGaps>,
    ) -> Result<(), StoreError> {
        let items = read_outbox(
            conn,
            &format!(
                "\"entity_type\" = '{}' AND \"entity_id\" = '{}' AND \"id\" > {after} AND \"attempt_count\" = 0 AND \"status\" = 'pending'",
                table.entity.name.replace('\'', "''"),
                id
            ),
        )?;
        let session = &self.inner.dot_session;
        for item in items.iter().filter(|i| {
            payload_dot(&i.payload).is_some_and(|d| d.session == *session)
                && !dot_included(&i.payload, dots, gaps)
        }) {
            self.give_dot(conn, item)?;
        }
        Ok(())
    }

    /// Stores `item` with a new dot of this session in place of any it held.
    fn give_dot(&self, conn: &Connection, item: &OutboxItem) -> Result<(), StoreError> {
        let mut payload = item.payload.clone();
        let Some(body) = payload.as_object_mut() else {
            return Ok(());
        };
        let prev = (item.op == MutationOp::Create).then_some(0);
        let dot = self.next_dot(&item.entity_type, item.entity_id, prev);
        body.insert(DOT_MEMBER.into(), dot_member(&dot));
        conn.execute(
            concatcp!(
                "UPDATE \"",
                meta::OUTBOX,
                "\" SET \"payload\" = ?1 WHERE \"id\" = ?2"
            ),
            params![to_json_string(&payload), item.id],
        )?;
        Ok(())
    }

    /// Gives every unsent item that adds to `sum` fields and holds no dot one, in queue
    /// order: items queued by a runtime that drew dots when it first sent an item (see
    /// [`LocalStore::dotted`]), or rewritten by it (a dot it drew for another key of
    /// the item, which it would have drawn again, counts as none). Run when the store opens,
    /// before anything is queued in this session. Returns how many it gave.
    pub(crate) fn dot_unsent_items(&self, conn: &Connection) -> Result<usize, StoreError> {
        let items = read_outbox(conn, "\"attempt_count\" = 0 AND \"status\" = 'pending'")?;
        let mut n = 0;
        for item in items {
            let Some(table) = self.table_of(&item.entity_type) else {
                continue;
            };
            // A dot an older runtime drew for another key of the item (it redrew those
            // when sending) counts as none.
            let stale = item
                .payload
                .get(DOT_MEMBER)
                .and_then(|d| d.get("key"))
                .and_then(Json::as_str)
                .is_some_and(|k| k != item.idempotency_key);
            if (item.payload.get(DOT_MEMBER).is_some() && !stale)
                || !takes_dot(table.entity, item.op, &item.payload)
            {
                continue;
            }
            self.give_dot(conn, &item)?;
            n += 1;
        }
        Ok(n)
    }
}

impl LocalStore {
    /// Creates a record. Creating an id whose record was deleted recreates it: the old
    /// record's fields are gone, and the server is told delete-then-create.
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Invalid`] if the value fails [`Syncable::validate`] or
    /// [`check_record`](crate::check_record); [`StoreError::Record`] if a field does not
    /// serialise to JSON; [`StoreError::AlreadyExists`] if a live record has this id;
    /// [`StoreError::Corrupt`] if the stored row of this id cannot be read back;
    /// [`StoreError::Sqlite`] if the database fails.
    pub fn create<T: Syncable>(&self, value: &T) -> Result<(), StoreError> {
        let (value, record) = self.checked_create(value)?;
        self.write(
            self.entity::<T>()?,
            value.id(),
            ChangeKind::Created,
            |tx, hlc| self.create_in(tx, hlc, &value, &record),
        )
    }

    /// `value` normalised, and its record, if it may be created (checked before the
    /// write takes the database).
    pub(crate) fn checked_create<T: Syncable>(&self, value: &T) -> Result<(T, Record), StoreError> {
        let entity = self.entity::<T>()?;
        let mut value = value.clone();
        value.normalize();
        value.validate()?;
        let record = value.to_record()?;
        crate::check_record(entity, &record)?;
        Ok((value, record))
    }

    /// `value` normalised, if it passes its own checks (before the write takes the
    /// database; its record is checked against the stored one in the write).
    pub(crate) fn checked_update<T: Syncable>(&self, value: &T) -> Result<T, StoreError> {
        self.entity::<T>()?;
        let mut value = value.clone();
        value.normalize();
        value.validate()?;
        Ok(value)
    }

    /// [`LocalStore::create`] on `tx` (an open transaction), stamped `hlc`, of a value
    /// and record from [`LocalStore::checked_create`].
    pub(crate) fn create_in<T: Syncable>(
        &self,
        tx: &Connection,
        hlc: Hlc,
        value: &T,
        record: &Record,
    ) -> Result<(), StoreError> {
        let table = self.table::<T>()?;
        let entity = table.entity;
        let id = value.id();
        let existing = read_row(tx, table, id)?;
        if let Some(row) = &existing
            && !row.deleted
        {
            return Err(StoreError::AlreadyExists {
                entity: T::ENTITY,
                id,
            });
        }
        if let Some(row) = &existing
            && row.clean
        {
            keep_base(tx, table, id)?;
        }
        let clocks = T::Clocks::all(hlc);
        write_row(tx, table, record, &to_json_string(&clocks), hlc, false)?;
        let payload = to_json_string(&CreatePayload {
            record,
            clocks: &clocks,
            resend_base: None,
            dots: None,
        });
        // Over the server's tombstone (a clean deleted row): its version, so the
        // server knows this recreate saw the delete. Over a delete of this device's
        // still to be sent: none (the create is stamped after that delete, which is
        // how the server tells it is a recreate).
        let base_version = existing.filter(|r| r.clean).and_then(|r| r.version);
        self.enqueue(tx, entity, id, MutationOp::Create, &payload, base_version)?;
        Ok(())
    }

    /// Updates a record: the store diffs it against the stored row and queues the patch.
    /// Returns `false` if nothing changed (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::Invalid`] if the value fails [`Syncable::validate`] or
    /// [`check_record`](crate::check_record); [`StoreError::NotFound`] if no live record
    /// has this id; [`StoreError::Diff`] if the value changes an `immutable` field;
    /// [`StoreError::Record`] if the stored record does not fit `T` or a field does not
    /// serialise; [`StoreError::Corrupt`] if the stored row, its clocks or the record's
    /// last outbox item cannot be read back; [`StoreError::Sqlite`] if the database fails.
    pub fn update<T: Syncable>(&self, value: &T) -> Result<bool, StoreError> {
        let value = self.checked_update(value)?;
        let mut changed = true;
        self.write(
            self.entity::<T>()?,
            value.id(),
            ChangeKind::Updated,
            |tx, hlc| {
                changed = self.update_in(tx, hlc, &value)?;
                Ok(())
            },
        )?;
        Ok(changed)
    }

    /// [`LocalStore::update`] on `tx` (an open transaction), stamped `hlc`, of a value
    /// from [`LocalStore::checked_update`]: whether anything changed.
    pub(crate) fn update_in<T: Syncable>(
        &self,
        tx: &Connection,
        hlc: Hlc,
        value: &T,
    ) -> Result<bool, StoreError> {
        let table = self.table::<T>()?;
        let entity = table.entity;
        let id = value.id();
        let row = read_live_row(tx, table, T::ENTITY, id)?;
        let old = T::from_record(&row.record)?;
        let patch = T::diff(&old, value, hlc)?;
        if patch.is_empty() {
            return Ok(false);
        }
        let mut clocks: T::Clocks = serde_json::from_str(&row.clocks)
            .map_err(|e| StoreError::Corrupt(format!("sync_clocks: {e}")))?;
        T::stamp(&mut clocks, &patch);
        if row.clean {
            keep_base(tx, table, id)?;
        }
        let record = value.to_record()?;
        crate::check_record(entity, &record)?;
        let fields = patch.fields();
        update_columns(
            tx,
            table,
            id,
            &record,
            &fields,
            to_json_string(&clocks),
            hlc,
        )?;
        // A `manual` field in conflict edited again: the user's side of the conflict is
        // the new value (a rebuild of the row keeps it, `keep_local` sends it).
        for f in &fields {
            if entity
                .field(f)
                .is_some_and(|f| f.merge == sync_model::MergeStrategy::Manual)
            {
                let v = record.get(*f).cloned().unwrap_or(Json::Null);
                tx.prepare_cached(
                    concatcp!("UPDATE \"", meta::CONFLICTS, "\" SET \"local\" = ?1 WHERE \"entity_type\" = ?2 AND \"entity_id\" = ?3 AND \"field\" = ?4"),
                )?
                .execute(params![v.to_string(), entity.name, id.to_string(), f])?;
            }
        }
        let last = if entity.outbox == OutboxMode::Coalesce {
            last_item(tx, entity, id)?.filter(|l| l.mergeable)
        } else {
            None
        };
        // A create is never rewritten by an update: the server takes a create
        // carrying a stamp its record holds for the same create sent again (a
        // retry whose key a restore lost), so edits folded into it would be dropped
        // when another life of this database sent the create first (see
        // `carries_contributions`). The update queues behind it.
        match last {
            Some(l) if l.op == MutationOp::Update => {
                let earlier: UpdatePayload<T::Patch> = serde_json::from_str(&l.payload)
                    .map_err(|e| StoreError::Corrupt(format!("outbox item {}: {e}", l.id)))?;
                let composed = UpdatePayload {
                    patch: earlier.patch.compose(patch),
                };
                self.rewrite_item(
                    tx,
                    entity,
                    (id, l.id),
                    MutationOp::Update,
                    &to_json_string(&composed),
                )?;
            }
            _ => {
                let payload = to_json_string(&UpdatePayload { patch });
                self.enqueue(tx, entity, id, MutationOp::Update, &payload, row.version)?;
            }
        }
        Ok(true)
    }

    /// Deletes a record (a tombstone until the server has it).
    ///
    /// # Errors
    /// [`StoreError::UnknownEntity`] if `T` was not registered with the builder;
    /// [`StoreError::NotFound`] if no live record has this id (also when it is already
    /// deleted); [`StoreError::Corrupt`] if the stored row or the record's last outbox
    /// item cannot be read back; [`StoreError::Sqlite`] if the database fails.
    pub fn delete<T: Syncable>(&self, id: Uuid) -> Result<(), StoreError> {
        let entity = self.entity::<T>()?;
        self.write(entity, id, ChangeKind::Deleted, |tx, hlc| {
            self.delete_in::<T>(tx, hlc, id)
        })
    }

    /// [`LocalStore::delete`] on `tx` (an open transaction), stamped `hlc`.
    pub(crate) fn delete_in<T: Syncable>(
        &self,
        tx: &Connection,
        hlc: Hlc,
        id: Uuid,
    ) -> Result<(), StoreError> {
        let table = self.table::<T>()?;
        let entity = table.entity;
        let row = read_live_row(tx, table, T::ENTITY, id)?;
        if row.clean {
            keep_base(tx, table, id)?;
        }
        let last = if entity.outbox == OutboxMode::Coalesce {
            last_item(tx, entity, id)?.filter(|l| l.mergeable)
        } else {
            None
        };
        let payload = to_json_string(&DeletePayload { hlc });
        // Deleting a conflicted record discards the conflict with it.
        tx.execute(
            concatcp!(
                "DELETE FROM \"",
                meta::CONFLICTS,
                "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2"
            ),
            params![entity.name, id.to_string()],
        )?;
        match last {
            Some(l) if l.op == MutationOp::Create => {
                // The create and the delete both go. The server may know the record
                // (a recreate, or one it lost in a restore and other devices may
                // send again), and even a create this life of the database never
                // sent may have reached it from another (a device restored from a
                // backup taken while the create waited): it must learn of the
                // delete, and a delete of a record it never had would be lost on it
                // if another device sent the record later.
                mark_deleted(tx, entity, id, hlc)?;
                self.enqueue(tx, entity, id, MutationOp::Delete, &payload, None)?;
            }
            Some(l) if l.op == MutationOp::Update => {
                mark_deleted(tx, entity, id, hlc)?;
                self.rewrite_item(tx, entity, (id, l.id), MutationOp::Delete, &payload)?;
            }
            _ => {
                mark_deleted(tx, entity, id, hlc)?;
                self.enqueue(tx, entity, id, MutationOp::Delete, &payload, row.version)?;
            }
        }
        Ok(())
    }

    /// Runs `f` in one IMMEDIATE transaction with a fresh HLC stamp, persists the clock,
    /// commits, then tells subscribers.
    pub(crate) fn write(
        &self,
        entity: &'static Entity,
        id: Uuid,
        change: ChangeKind,
        f: impl FnOnce(&rusqlite::Transaction<'_>, Hlc) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let hlc = self.stamp();
            f(&tx, hlc)?;
            tx.commit()?;
        }
        self.notify(StoreEvent::Changed {
            entity: entity.name.clone(),
            id,
            change,
            origin: ChangeOrigin::Local,
        });
        Ok(())
    }
}

/// `payload` (an update's body of an `entity` record) with `dot` in its [`DOT_MEMBER`]
/// if it adds to `sum` fields ([`takes_dot`]); as it is otherwise. For a merge after a
/// conflict, which carries the conflicted item's contributions under its dot.
pub(crate) fn with_dot(entity: &Entity, payload: &str, dot: &crate::protocol::Dot) -> String {
    let Ok(mut body) = serde_json::from_str::<Json>(payload) else {
        return payload.to_string();
    };
    if !takes_dot(entity, MutationOp::Update, &body) {
        return payload.to_string();
    }
    let Some(members) = body.as_object_mut() else {
        return payload.to_string();
    };
    members.insert(DOT_MEMBER.into(), dot_member(dot));
    body.to_string()
}

/// A dot as an outbox payload keeps it (`{"session", "seq", "prev"}`).
pub(crate) fn dot_member(dot: &crate::protocol::Dot) -> Json {
    let mut m = serde_json::json!({"session": dot.session, "seq": dot.seq});
    if let Some(prev) = dot.prev {
        m["prev"] = prev.into();
    }
    m
}

/// `payload` (an outbox item's body) marked as a change of transaction `group` (its
/// [`TXN_MEMBER`]). Never sent as such: the engine keeps a transaction's items in one push.
pub(crate) fn with_txn(payload: &str, group: &str) -> String {
    let Ok(mut body) = serde_json::from_str::<Json>(payload) else {
        return payload.to_string();
    };
    let Some(members) = body.as_object_mut() else {
        return payload.to_string();
    };
    members.insert(TXN_MEMBER.into(), Json::String(group.to_string()));
    body.to_string()
}

/// The transaction an outbox item's body belongs to, if any.
pub(crate) fn payload_txn(payload: &Json) -> Option<String> {
    payload.get(TXN_MEMBER)?.as_str().map(str::to_string)
}

/// Moves every item of transaction `from` into transaction `into`.
pub(crate) fn join_transactions(
    conn: &Connection,
    from: &str,
    into: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(concatcp!(
        "UPDATE \"",
        meta::OUTBOX,
        "\" SET \"payload\" = json_set(\"payload\", '$.",
        TXN_MEMBER,
        "', ?2) WHERE json_extract(\"payload\", '$.",
        TXN_MEMBER,
        "') = ?1"
    ))?
    .execute(params![from, into])?;
    Ok(())
}

impl LocalStore {
    /// Takes the transaction mark off the items of transactions `groups`: they reached
    /// the server (or must go in parts), and what of them is sent from here on goes on
    /// its own.
    pub(crate) fn end_transactions(
        &self,
        groups: &std::collections::BTreeSet<String>,
    ) -> Result<(), StoreError> {
        if groups.is_empty() {
            return Ok(());
        }
        let conn = self.conn();
        for group in groups {
            conn.prepare_cached(concatcp!(
                "UPDATE \"",
                meta::OUTBOX,
                "\" SET \"payload\" = json_remove(\"payload\", '$.",
                TXN_MEMBER,
                "') WHERE json_extract(\"payload\", '$.",
                TXN_MEMBER,
                "') = ?1"
            ))?
            .execute([group])?;
        }
        Ok(())
    }
}
