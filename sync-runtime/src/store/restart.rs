//! Starting over: the change token and snapshot cursor of each account, what a restart
//! (expired token, replaced server database) asks of the server again, and the device's
//! own writes that a restored server must confirm.

use crate::protocol::{MutationOp, ServerRecord};
use const_format::concatcp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use sync_model::sql::meta;
use uuid::Uuid;

use super::*;

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

/// The `sync_meta` key of an own write the pull has not shown yet (see
/// [`record_own_write`]).
pub(crate) fn own_write_key(entity: &str, id: Uuid) -> String {
    format!("own-write:{entity}:{id}")
}

/// Notes a write the server acknowledged (`s` is the record it answered with): the
/// pulls that follow must show this version or a later one of the same history. If
/// they catch up without it, the server may have lost it (restored from a backup taken
/// before the write, with the device's change token still valid there), and the record
/// is checked ([`LocalStore::check_own_writes`]).
///
/// `fresh`: the answer is to a mutation's first delivery, so it is the record as it is
/// now (a retry, or a change sent again after a restore, may be answered from its key,
/// with the record as it was then, of whichever history). A fresh answer of a later
/// version than the own write noted before, which lacks one of that write's
/// contributions (its dots), is of another history: the server lost the earlier write
/// (restored from a backup taken before it, and another device created the record
/// again since), and a restart that names a restore follows, which sends the lost
/// write again (simulation seed 1154 under `SYNC_SIM_STRICT_RESTORES`).
pub(crate) fn record_own_write(
    conn: &Connection,
    s: &ServerRecord,
    fresh: bool,
) -> Result<(), StoreError> {
    let key = own_write_key(&s.entity_type, s.entity_id);
    if let Some(before) = super::meta_get(conn, &key)?.filter(|_| fresh) {
        let before = OwnWrite::parse(&before);
        if s.version > before.version && !dots_shown(&before, s) && !later_life(&before, s) {
            suspect_restore_everywhere(conn)?;
        }
    }
    let json = |v: Option<String>| v.unwrap_or_default();
    let dots = json(
        s.dots
            .as_ref()
            .map(|d| serde_json::to_string(d).expect("dots serialise")),
    );
    let gaps = json(
        s.dot_gaps
            .as_ref()
            .filter(|_| s.dots.is_some())
            .map(|g| serde_json::to_string(g).expect("gaps serialise")),
    );
    super::meta_set(
        conn,
        &key,
        format!("{} {} {dots} {gaps}", s.version, s.server_updated_at).trim_end(),
    )
}

/// An own write awaiting its pull: the version the server answered with, its commit
/// time, and the record's dots and gaps then (absent in entries of older runtimes).
struct OwnWrite {
    version: i64,
    at: String,
    dots: Option<crate::protocol::Dots>,
    gaps: crate::protocol::DotGaps,
}

impl OwnWrite {
    fn parse(value: &str) -> OwnWrite {
        let mut parts = value.splitn(4, ' ');
        OwnWrite {
            version: parts.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            at: parts.next().unwrap_or_default().to_string(),
            dots: parts.next().and_then(|d| serde_json::from_str(d).ok()),
            gaps: parts
                .next()
                .and_then(|g| serde_json::from_str(g).ok())
                .unwrap_or_default(),
        }
    }
}

/// Whether `r` is the own write `w` or a later version of its history: a version at
/// least as high, the same commit time at the same version, and (a record's dots only
/// grow within one history) every dot the record had then.
fn shows(w: &OwnWrite, r: &ServerRecord) -> bool {
    if r.version < w.version || (r.version == w.version && r.server_updated_at != w.at) {
        return false;
    }
    dots_shown(w, r) || later_life(w, r)
}

/// Whether `r` is of a life of the record that began after the own write `w` (deleted
/// and created again since, PROTOCOL.md SUM-4): its dots start afresh, and the write,
/// which the delete superseded, is not lost to a restore.
fn later_life(w: &OwnWrite, r: &ServerRecord) -> bool {
    r.life_since.is_some_and(|life| life > w.version)
}

/// Whether `r` includes every contribution the own write `w` included (a record's dots
/// only grow within one history).
fn dots_shown(w: &OwnWrite, r: &ServerRecord) -> bool {
    w.dots.as_ref().is_none_or(|mine| {
        let empty = crate::protocol::Dots::new();
        crate::protocol::dot_sets_include(
            r.dots.as_ref().unwrap_or(&empty),
            r.dot_gaps.as_ref(),
            mine,
            &w.gaps,
        )
    })
}

/// The payload of a check ([`LocalStore::check_own_writes`]): an update that changes
/// nothing.
pub(crate) const CHECK_PAYLOAD: &str = r#"{"patch":{}}"#;

/// Whether `item` is a check ([`LocalStore::check_own_writes`]).
pub(crate) fn is_check(item: &OutboxItem) -> bool {
    item.op == MutationOp::Update
        && item
            .payload
            .get("patch")
            .and_then(Json::as_object)
            .is_some_and(serde_json::Map::is_empty)
}

/// Whether any own write awaits its pull (one query per page, so pulls of a store that
/// has none cost nothing more).
pub(crate) fn has_own_writes(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(concatcp!(
            "SELECT EXISTS (SELECT 1 FROM \"",
            meta::META,
            "\" WHERE \"key\" >= 'own-write:' AND \"key\" < 'own-write;')"
        ))?
        .query_row([], |r| r.get(0))?)
}

/// A pulled record shows an own write (this version or a later one: done), or another
/// history under its version number (the server lost it).
pub(crate) fn confirm_own_write(
    conn: &Connection,
    r: &ServerRecord,
    other_history: &mut bool,
) -> Result<(), StoreError> {
    let key = own_write_key(&r.entity_type, r.entity_id);
    let Some(value) = super::meta_get(conn, &key)? else {
        return Ok(());
    };
    if !shows(&OwnWrite::parse(&value), r) {
        *other_history = true;
    }
    conn.execute(
        concatcp!("DELETE FROM \"", meta::META, "\" WHERE \"key\" = ?1"),
        [key],
    )?;
    Ok(())
}

/// Where the fetch of an entity's records after a migration stands (see
/// [`LocalStore::refetch_next`]).
const REFETCH_CURSOR_KEY: &str = meta::REFETCH_CURSOR_KEY;

/// After a page of `entity` fetched again (in the page's transaction): its next page,
/// or, after its last, the next entity.
pub(crate) fn refetch_advance(
    conn: &Connection,
    entity: &str,
    next_cursor: Option<&str>,
) -> Result<(), StoreError> {
    if let Some(cursor) = next_cursor {
        let value = serde_json::to_string(&(entity, cursor)).expect("JSON");
        return super::meta_set(conn, REFETCH_CURSOR_KEY, &value);
    }
    let names: Vec<String> = super::meta_get(conn, meta::REFETCH_KEY)?
        .map(|l| serde_json::from_str(&l).unwrap_or_default())
        .unwrap_or_default();
    let rest: Vec<String> = names.into_iter().filter(|n| n != entity).collect();
    let delete = concatcp!("DELETE FROM \"", meta::META, "\" WHERE \"key\" = ?1");
    conn.execute(delete, [REFETCH_CURSOR_KEY])?;
    if rest.is_empty() {
        conn.execute(delete, [meta::REFETCH_KEY])?;
        Ok(())
    } else {
        super::meta_set(
            conn,
            meta::REFETCH_KEY,
            &serde_json::to_string(&rest).expect("JSON"),
        )
    }
}

/// The server sent records of another history than the store followed: a restart
/// under way re-sends what the server does not have (it becomes `unknown`); a restart
/// that names a restore is due unless one is under way already
/// ([`LocalStore::restore_suspected`]): it also sends again the changes the server
/// acknowledged and lost (see `LocalStore::replay_acknowledged`).
pub(crate) fn suspect_restore(conn: &Connection, scope: &str) -> Result<(), StoreError> {
    let key = format!("resnapshot:{scope}");
    match super::meta_get(conn, &key)?.as_deref() {
        Some("unknown") => Ok(()),
        Some(_) => {
            super::meta_set(conn, &key, "unknown")?;
            super::meta_set(conn, &format!("restore-suspected:{scope}"), "1")
        }
        None => super::meta_set(conn, &format!("restore-suspected:{scope}"), "1"),
    }
}

/// [`suspect_restore`] for every account the store syncs (the answer to a push, which
/// names none, showed another history).
pub(crate) fn suspect_restore_everywhere(conn: &Connection) -> Result<(), StoreError> {
    let scopes: Vec<String> = conn
        .prepare_cached(concatcp!("SELECT \"scope\" FROM \"", meta::STATE, "\""))?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if scopes.is_empty() {
        // No pull has begun yet (the store pushed first): the first one to end names
        // the restore (simulation seed 1154 under `SYNC_SIM_STRICT_RESTORES`).
        return super::meta_set(conn, RESTORE_SUSPECTED_ANYWHERE, "1");
    }
    for scope in scopes {
        suspect_restore(conn, &scope)?;
    }
    Ok(())
}

/// The `sync_meta` key of a restore suspected before any account's pull began (see
/// [`suspect_restore_everywhere`]): it counts for whichever account pulls first.
const RESTORE_SUSPECTED_ANYWHERE: &str = "restore-suspected-anywhere";

impl LocalStore {
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
                concatcp!("SELECT \"change_token\", \"snapshot_cursor\", \"snapshot_token\", \"last_sync_at\" FROM \"", meta::STATE, "\" WHERE \"scope\" = ?1"),
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
                concatcp!("INSERT INTO \"", meta::STATE, "\" (\"scope\", \"last_sync_at\") VALUES (?1, ?2) ON CONFLICT (\"scope\") DO UPDATE SET \"last_sync_at\" = excluded.\"last_sync_at\", \"last_error\" = NULL"),
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
            concatcp!("UPDATE \"", meta::STATE, "\" SET \"change_token\" = NULL, \"snapshot_cursor\" = NULL, \"snapshot_token\" = NULL WHERE \"scope\" = ?1"),
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
                    s = q(meta::STATUS),
                    d = q(meta::DELETED),
                    v = q(meta::VERSION),
                ),
                [],
            )?;
            let mut stmt = tx.prepare(&format!(
                "SELECT {id} FROM {t} WHERE {s} NOT IN ('clean', 'syncing') AND {d} = 0 AND ({v} IS NOT NULL OR EXISTS (SELECT 1 FROM {b} WHERE {b}.{id} = {t}.{id}))",
                id = q(&table.entity.id_field().column),
                t = q(&table.entity.table),
                b = q(&meta::base_table(&table.entity.table)),
                s = q(meta::STATUS),
                d = q(meta::DELETED),
                v = q(meta::VERSION),
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
        // push must not take the records it lacks for collected). A restore suspected
        // before this restart (during another one, say) counts as named.
        let suspected = super::meta_get(&tx, &format!("restore-suspected:{scope}"))?.is_some()
            || super::meta_get(&tx, RESTORE_SUSPECTED_ANYWHERE)?.is_some();
        tx.execute(
            concatcp!("DELETE FROM \"", meta::META, "\" WHERE \"key\" IN (?1, ?2)"),
            [
                format!("restore-suspected:{scope}"),
                RESTORE_SUSPECTED_ANYWHERE.to_string(),
            ],
        )?;
        if why == Restart::Unknown || suspected {
            tx.execute(
                concatcp!(
                    "DELETE FROM \"",
                    meta::META,
                    "\" WHERE \"key\" >= 'own-write:' AND \"key\" < 'own-write;'"
                ),
                [],
            )?;
        }
        let key = format!("resnapshot:{scope}");
        let before = super::meta_get(&tx, &key)?;
        let why = match (before.as_deref(), why) {
            (Some("unknown"), _) | (_, Restart::Unknown) => "unknown",
            _ => "collected",
        };
        if why == "unknown" || suspected {
            // A restore (known before this restart began again, or now): what it lost
            // is sent again once the snapshot is in (idempotent: the held set grows).
            self.hold_for_replay(&tx)?;
        }
        let why = if suspected { "unknown" } else { why };
        super::meta_set(&tx, &key, why)?;
        tx.commit()?;
        Ok(())
    }

    /// The next page to fetch again after a client migration that added fields or
    /// entities: the entity (its wire name) and the cursor within its snapshot. The
    /// migration leaves the entities' names under [`meta::REFETCH_KEY`] (a JSON array);
    /// the engine fetches each one's records with a snapshot of that entity alone, so
    /// that the values newer devices set in the new fields (and the records of a new
    /// entity) reach this device, and each page goes through
    /// [`LocalStore::apply_page`] with [`Page::Refetched`]. `None` when nothing is
    /// left to fetch. Names the store does not register are skipped.
    ///
    /// [`Page::Refetched`]: super::pull::Page::Refetched
    pub(crate) fn refetch_next(&self) -> Result<Option<(String, Option<String>)>, StoreError> {
        let conn = self.conn();
        let Some(list) = super::meta_get(&conn, meta::REFETCH_KEY)? else {
            return Ok(None);
        };
        let names: Vec<String> = serde_json::from_str(&list).unwrap_or_default();
        let Some(entity) = names
            .into_iter()
            .find(|n| self.inner.tables.values().any(|t| t.entity.name == *n))
        else {
            conn.execute(
                concatcp!("DELETE FROM \"", meta::META, "\" WHERE \"key\" = ?1"),
                [meta::REFETCH_KEY],
            )?;
            return Ok(None);
        };
        // The cursor is kept with the entity it pages through: one of another (an
        // entity since dropped) is not this one's.
        let cursor = super::meta_get(&conn, REFETCH_CURSOR_KEY)?
            .and_then(|c| serde_json::from_str::<(String, String)>(&c).ok())
            .filter(|(of, _)| *of == entity)
            .map(|(_, c)| c);
        Ok(Some((entity, cursor)))
    }

    /// Starts the fetch of `entity` again from its first page (its snapshot's pinned
    /// token expired: 410; or the server refused the cursor).
    pub(crate) fn refetch_restart(&self) -> Result<(), StoreError> {
        self.conn().execute(
            concatcp!("DELETE FROM \"", meta::META, "\" WHERE \"key\" = ?1"),
            [REFETCH_CURSOR_KEY],
        )?;
        Ok(())
    }

    /// Gives up fetching `entity` again: the server refuses to snapshot it (it no
    /// longer serves it). Its records stay as they are.
    pub(crate) fn refetch_skip(&self, entity: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        refetch_advance(&tx, entity, None)?;
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
        Ok(
            super::meta_get(&conn, &format!("restore-suspected:{scope}"))?.is_some()
                || super::meta_get(&conn, RESTORE_SUSPECTED_ANYWHERE)?.is_some(),
        )
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
        // The records the server no longer has: not delivered since the restart.
        let held: Vec<(String, Uuid)> = super::meta_get(&tx, &held_key)?
            .map(|j| serde_json::from_str(&j).unwrap_or_default())
            .unwrap_or_default();
        let mut undelivered: std::collections::BTreeSet<(String, Uuid)> =
            held.iter().cloned().collect();
        let mut syncing: Vec<(&Table, Vec<String>)> = Vec::new();
        for table in self.inner.tables.values() {
            let e = table.entity;
            let mut stmt = tx.prepare(&format!(
                "SELECT {} FROM {} WHERE {} = 'syncing'",
                q(&e.id_field().column),
                q(&e.table),
                q(meta::STATUS)
            ))?;
            let ids: Vec<String> = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for id in &ids {
                if let Ok(id) = id.parse() {
                    undelivered.insert((e.name.clone(), id));
                }
            }
            syncing.push((table, ids));
        }
        // (The replay rebuilds delivered records only: what is `syncing` stays so.)
        let mut n = self.replay_acknowledged(&tx, &undelivered)?;
        for (table, ids) in syncing {
            let e = table.entity;
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
        // the server's answers, and each is checked too, keeping its status, after its
        // items. One with nothing left to send (a conflict awaiting the user, say) needs
        // it; so does one whose items never went out when a resolution of its conflict
        // drops them (`resolve_with` keeps checks): it would otherwise stay on the
        // device as synced, on a server that lost it (simulation seed 9952, once items
        // waited for a restart's snapshot).
        for (entity, uuid) in held {
            let Some(table) = self.table_of(&entity) else {
                continue;
            };
            let Some(row) = read_row(&tx, table, uuid)? else {
                continue;
            };
            if row.deleted
                || pending_for(&tx, &entity, uuid)?
                    .iter()
                    .any(|(_, op, p)| *op == MutationOp::Update && p == CHECK_PAYLOAD)
            {
                continue;
            }
            let version = read_base(&tx, table, uuid)?
                .map(|b| b.version)
                .or(row.version);
            let payload = CHECK_PAYLOAD.to_string();
            self.enqueue(
                &tx,
                table.entity,
                uuid,
                MutationOp::Update,
                &payload,
                version,
            )?;
            n += 1;
        }
        tx.execute(
            concatcp!("DELETE FROM \"", meta::META, "\" WHERE \"key\" IN (?1, ?2)"),
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
    pub(crate) fn enqueue_check(
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
        self.enqueue(tx, table.entity, id, op, &payload, version)
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
            let mut stmt = tx.prepare(concatcp!(
                "SELECT \"key\", \"value\" FROM \"",
                meta::META,
                "\" WHERE \"key\" >= 'own-write:' AND \"key\" < 'own-write;'"
            ))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?
        };
        let mut n = 0;
        for (key, value) in left {
            tx.execute(
                concatcp!("DELETE FROM \"", meta::META, "\" WHERE \"key\" = ?1"),
                [&key],
            )?;
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
}
