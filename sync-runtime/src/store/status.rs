//! What a UI shows: the outbox, the sync status and its subscriptions, and retrying dead
//! items.

use super::*;
use const_format::concatcp;
use sync_model::sql::meta;

pub(crate) fn read_outbox(conn: &Connection, filter: &str) -> Result<Vec<OutboxItem>, StoreError> {
    let sql = format!(
        "SELECT \"id\", \"entity_type\", \"entity_id\", \"op\", \"payload\", \"idempotency_key\", \"base_version\", \"created_at\", \"attempt_count\", \"next_attempt_at\", \"status\", \"last_error\" FROM \"{outbox}\" WHERE {filter} ORDER BY \"id\"",
        outbox = meta::OUTBOX
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let payload: String = r.get(4)?;
        let entity_id: String = r.get(2)?;
        let op: String = r.get(3)?;
        let status: String = r.get(10)?;
        out.push(OutboxItem {
            id: r.get(0)?,
            entity_type: r.get(1)?,
            entity_id: entity_id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("outbox entity id `{entity_id}`")))?,
            op: parse_op(&op)?,
            payload: serde_json::from_str(&payload)
                .map_err(|e| StoreError::Corrupt(format!("outbox payload: {e}")))?,
            idempotency_key: r.get(5)?,
            base_version: r.get(6)?,
            created_at: time_col_required(r, 7)?,
            attempt_count: r.get(8)?,
            next_attempt_at: time_col(r, 9)?,
            status: OutboxStatus::parse(&status)?,
            last_error: r.get(11)?,
        });
    }
    Ok(out)
}

pub(crate) fn status<'a>(
    conn: &Connection,
    entities: impl Iterator<Item = &'a Entity>,
    engine: EngineState,
    progress: Option<PullProgress>,
) -> Result<SyncStatus, StoreError> {
    let mut pending_by_entity = BTreeMap::new();
    let mut pending_records = Vec::new();
    {
        let mut seen = std::collections::HashSet::new();
        let mut stmt = conn.prepare_cached(concatcp!(
            "SELECT \"entity_type\", \"entity_id\" FROM \"",
            meta::OUTBOX,
            "\" WHERE \"status\" IN ('pending', 'sending', 'failed') ORDER BY \"id\""
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (entity, id): (String, String) = (r.get(0)?, r.get(1)?);
            *pending_by_entity.entry(entity.clone()).or_insert(0u64) += 1;
            let id: Uuid = id
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("outbox entity id `{id}`")))?;
            if seen.insert((entity.clone(), id)) {
                pending_records.push((entity, id));
            }
        }
    }
    let pending: i64 = conn.query_row(
        concatcp!(
            "SELECT COUNT(*) FROM \"",
            meta::OUTBOX,
            "\" WHERE \"status\" IN ('pending', 'sending', 'failed')"
        ),
        [],
        |r| r.get(0),
    )?;
    let mut conflicted = Vec::new();
    for e in entities {
        let sql = format!(
            "SELECT {} FROM {} WHERE {} = 'conflicted' ORDER BY 1",
            q(&e.id_field().column),
            q(&e.table),
            q(meta::STATUS)
        );
        let mut stmt = conn.prepare_cached(&sql)?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?;
        for id in ids {
            let id = id?;
            conflicted.push((
                e.name.clone(),
                id.parse()
                    .map_err(|_| StoreError::Corrupt(format!("id `{id}`")))?,
            ));
        }
    }
    Ok(SyncStatus {
        pending: pending as u64,
        failed: read_outbox(conn, "\"status\" = 'failed'")?,
        dead: read_outbox(conn, "\"status\" = 'dead'")?,
        conflicted,
        last_sync_at: conn.query_row(
            concatcp!("SELECT MAX(\"last_sync_at\") FROM \"", meta::STATE, "\""),
            [],
            |r| time_col(r, 0),
        )?,
        oldest_pending_at: conn.query_row(
            concatcp!(
                "SELECT MIN(\"created_at\") FROM \"",
                meta::OUTBOX,
                "\" WHERE \"status\" IN ('pending', 'sending', 'failed')"
            ),
            [],
            |r| time_col(r, 0),
        )?,
        retries: conn.query_row(
            concatcp!(
                "SELECT COALESCE(SUM(MAX(\"attempt_count\" - 1, 0)), 0) FROM \"",
                meta::OUTBOX,
                "\" WHERE \"status\" IN ('pending', 'sending', 'failed')"
            ),
            [],
            |r| r.get::<_, i64>(0),
        )? as u64,
        engine,
        progress,
        pending_by_entity,
        pending_records,
    })
}

impl LocalStore {
    /// Every outbox item, in queue order.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if an item's entity id, op, payload or status cannot be
    /// read back; [`StoreError::Sqlite`] if the database fails, also when an item's
    /// `created_at` or `next_attempt_at` is not a valid time.
    pub fn outbox(&self) -> Result<Vec<OutboxItem>, StoreError> {
        let conn = self.conn();
        read_outbox(&conn, "1 = 1")
    }

    /// What a UI shows: pending count, failed and dead items, conflicts, last sync.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a failed or dead outbox item, or the id of a conflicted
    /// record, cannot be read back; [`StoreError::Sqlite`] if the database fails, also
    /// when a stored time is not valid.
    pub fn status(&self) -> Result<SyncStatus, StoreError> {
        let conn = self.conn();
        let progress = *self
            .inner
            .pull_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        status(&conn, self.entities(), self.engine_state(), progress)
    }

    /// Records how far a snapshot got ([`SyncStatus::progress`]; `None` when none is
    /// pulled), and tells the status watchers. The
    /// [`SyncEngine`](crate::engine::SyncEngine) calls this after every snapshot page.
    pub fn set_pull_progress(&self, progress: Option<PullProgress>) {
        let old = std::mem::replace(
            &mut *self
                .inner
                .pull_progress
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
            progress,
        );
        if old != progress {
            self.notify_status();
        }
    }

    /// What the sync engine is doing ([`SyncStatus::engine`]).
    pub fn engine_state(&self) -> EngineState {
        self.inner
            .engine_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records what the sync engine is doing, and tells the status watchers if it
    /// changed. The [`SyncEngine`](crate::engine::SyncEngine) calls this at the start and
    /// end of every run; another engine (a custom one) may too.
    pub fn set_engine_state(&self, state: EngineState) {
        let changed = {
            let mut s = self
                .inner
                .engine_state
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let changed = *s != state;
            *s = state;
            changed
        };
        if changed {
            self.notify_status();
        }
    }

    /// Puts every dead item back in the queue (after the user fixed the cause).
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] if the database fails.
    pub fn retry_dead(&self) -> Result<usize, StoreError> {
        let n = {
            let conn = self.conn();
            conn.execute(
                concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL WHERE \"status\" = 'dead'"),
                [],
            )?
        };
        self.notify_status();
        Ok(n)
    }

    /// Drops every dead item (the user chose not to send them after all) and rebuilds
    /// each record they belonged to: the server's version of it (its base copy) with the
    /// changes still queued on top, clean if none are. A record the server never
    /// acknowledged (no base copy) and whose create was dropped is removed from the
    /// device, with what was still queued for it. Returns how many items were dropped.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if a dead item or a record's base copy cannot be read
    /// back; [`StoreError::Sqlite`] if the database fails (nothing is dropped then).
    pub fn discard_dead(&self) -> Result<usize, StoreError> {
        let mut events = Vec::new();
        let n = {
            let mut conn = self.conn();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let dead = read_outbox(&tx, "\"status\" = 'dead'")?;
            let mut records = Vec::new();
            for item in &dead {
                tx.execute(
                    concatcp!("DELETE FROM \"", meta::OUTBOX, "\" WHERE \"id\" = ?1"),
                    [item.id],
                )?;
                let key = (item.entity_type.clone(), item.entity_id);
                if !records.contains(&key) {
                    records.push(key);
                }
            }
            for (entity, id) in records {
                let Some(table) = self.table_of(&entity) else {
                    continue;
                };
                let before = is_live(&tx, table, id)?;
                match read_base(&tx, table, id)? {
                    Some(base) => rebase_onto(&tx, table, &base.as_server_record(&entity, id))?,
                    None => {
                        let left = pending_for(&tx, &entity, id)?;
                        if left
                            .first()
                            .is_some_and(|(_, op, _)| *op == MutationOp::Create)
                        {
                            set_row_meta(&tx, table, id, "pending", None)?;
                        } else {
                            delete_items_of(&tx, &entity, id)?;
                            delete_row(&tx, table.entity, &id.to_string())?;
                        }
                    }
                }
                if let Some(change) = ChangeKind::of(before, is_live(&tx, table, id)?) {
                    events.push(StoreEvent::Changed {
                        entity,
                        id,
                        change,
                        origin: ChangeOrigin::Local,
                    });
                }
            }
            tx.commit()?;
            dead.len()
        };
        for e in events {
            self.notify(e);
        }
        self.notify_status();
        Ok(n)
    }

    /// Events after each commit.
    pub fn subscribe(&self) -> Subscription<StoreEvent> {
        let (tx, rx) = mpsc::channel();
        self.on_event(move |e| tx.send(e.clone()).is_ok());
        Subscription { rx }
    }

    /// Calls `f` with every event after its commit, until it returns `false`.
    pub(crate) fn on_event(&self, f: impl Fn(&StoreEvent) -> bool + Send + 'static) {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(f));
    }

    /// The [`SyncStatus`] after each commit that may change it.
    pub fn watch_status(&self) -> Subscription<SyncStatus> {
        let (tx, rx) = mpsc::channel();
        self.inner
            .status_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(tx);
        Subscription { rx }
    }

    pub(crate) fn notify_status(&self) {
        let mut watchers = self
            .inner
            .status_watchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if watchers.is_empty() {
            return;
        }
        if let Ok(s) = self.status() {
            watchers.retain(|w| w.send(s.clone()).is_ok());
        }
    }

    pub(crate) fn notify(&self, event: StoreEvent) {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s(&event));
        self.notify_status();
    }
}
