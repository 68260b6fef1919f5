//! The log of acknowledged changes: creates and updates the server applied, kept for a
//! while so that a server restored from a backup taken before them gets them again.
//!
//! A server restored from a backup loses what it acknowledged after the backup. Records
//! it lost entirely are created again by the devices that hold them (see
//! `recreate_lost`), and deletes it lost are sent again; but an edit of a record that
//! survived the restore (or that another device created again first) exists only on the
//! devices that pulled it. The device that made it still holds the change itself, as it
//! sent it: its key and body. After a restart that names a restore
//! ([`Restart::Unknown`]), it sends those changes again, under their own keys, body and
//! dot unchanged, before anything newer of the same records:
//!
//! - a change the restored server still holds is answered from its idempotency key (keys
//!   are compacted, never deleted: PROTOCOL.md IDEM-1), and counts once;
//! - a change it lost is applied again, merged like any late change: `lww` fields by their
//!   original stamps (so an edit made since, anywhere, still wins), `union` operations
//!   again, `sum` deltas under their dot (PROTOCOL.md SUM-2), `manual` fields against the
//!   restored record;
//! - a change whose dot the restored record includes is not sent (the record holds it).
//!
//! Between the restart and the end of its snapshot, the items of the logged records wait
//! (`replay-held`): a newer item of the same record sent first would carry a later dot of
//! the same session, and the server would then take the older change's contribution for
//! one it holds. Once the snapshot and the changes after it are through, the store knows
//! each record's dots on the restored server and queues the logged changes ahead of every
//! item ([`LocalStore::replay_acknowledged`]). A record the restored server did not
//! deliver is checked: if the server still lacks it, the device creates it again from its
//! copy, which holds the logged changes; if another device created it again first (from a
//! copy that may lack them), the check's answer sends them
//! ([`LocalStore::replay_after_check`]). A later increment of the same session that
//! reached the restored server before the device noticed the restore leaves a gap in the
//! record's dots there (its dot names the session's previous dot of the record: PROTOCOL.md
//! SUM-3), so the earlier ones are sent and counted (ARCHITECTURE.md, "Dots after a
//! restore"). A change whose dot the record includes stays in the log: a later restore
//! may lose it again.

use super::*;
use crate::protocol::{DotGaps, Dots, ServerRecord};
use const_format::concatcp;
use std::collections::BTreeSet;
use std::time::Duration;
use sync_model::sql::meta;

/// How many of the changes the server acknowledged a store keeps, and for how long, so
/// that it can send them again if the server is restored from a backup taken before
/// them (see the crate README, "Retention windows and restores").
///
/// Creates and updates are kept: a record the server lost entirely is created again
/// from the device's copy, and a delete it lost is sent again, without the log; but a
/// record the server kept, or that another device created again first (the same id
/// created on two devices), needs each change sent again. A change older
/// than the window is not sent again, so a restore from a backup older than the window
/// loses the edits made between the backup and the window's start to records the server
/// still holds. Each kept change takes one row of `sync_meta` (its body, as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckLog {
    /// At most this many changes are kept; the oldest go first. `0` keeps none (and a
    /// restore then loses every acknowledged edit of a record it did not lose).
    pub max_changes: usize,
    /// Changes acknowledged longer ago than this, by the store's wall clock
    /// ([`StoreBuilder::wall_clock`]), are not sent again.
    pub max_age: Duration,
}

impl AckLog {
    /// The default number of changes kept: 10,000 (a few megabytes at most).
    pub const DEFAULT_MAX_CHANGES: usize = 10_000;
    /// The default age limit: 30 days, longer than the backup a server is usually
    /// restored from.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
}

impl Default for AckLog {
    fn default() -> Self {
        AckLog {
            max_changes: Self::DEFAULT_MAX_CHANGES,
            max_age: Self::DEFAULT_MAX_AGE,
        }
    }
}

/// The `sync_meta` keys of the log: `acked:<20-digit sequence number>`.
const PREFIX: &str = "acked:";
const SELECT_ALL: &str = concatcp!(
    "SELECT \"key\", \"value\" FROM \"",
    meta::META,
    "\" WHERE \"key\" >= 'acked:' AND \"key\" < 'acked;' ORDER BY \"key\""
);
const SELECT_LAST: &str = concatcp!(
    "SELECT \"key\" FROM \"",
    meta::META,
    "\" WHERE \"key\" >= 'acked:' AND \"key\" < 'acked;' ORDER BY \"key\" DESC LIMIT 1"
);
const DELETE_UP_TO: &str = concatcp!(
    "DELETE FROM \"",
    meta::META,
    "\" WHERE \"key\" >= 'acked:' AND \"key\" <= ?1"
);

/// The `sync_meta` key of the records whose items wait for the restart's snapshot (a
/// JSON array of `[entity, id]`).
pub(crate) const REPLAY_HELD_KEY: &str = "replay-held";

/// The `sync_meta` key of the dots a held record has on the restored server, as its
/// latest delivery since the restart gave them.
fn replay_dots_key(entity: &str, id: Uuid) -> String {
    format!("replay-dots:{entity}:{id}")
}

/// The `sync_meta` key that marks a record the restored server did not have when a
/// restart's snapshot ended, whose logged changes wait for the answer to its check
/// ([`LocalStore::replay_after_check`]).
fn replay_await_key(entity: &str, id: Uuid) -> String {
    format!("replay-await:{entity}:{id}")
}

/// A record's logged changes to send again, and its dots and gaps on the server.
type Replays = (Vec<Logged>, Option<Dots>, Option<DotGaps>);

/// One logged change, as it was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Logged {
    entity: String,
    id: Uuid,
    op: MutationOp,
    key: String,
    payload: Json,
    base_version: Option<i64>,
    /// When the server acknowledged it: the store's wall clock, milliseconds.
    at: u64,
    /// The fingerprint of the model it was made in: a change logged before a migration
    /// of the app's model is not sent again (its body has the old model's shape, which
    /// the migrations do not rewrite in the log).
    #[serde(default)]
    model: String,
    /// Its `sync_meta` key (not stored: set when the log is read).
    #[serde(skip)]
    log_key: String,
}

/// The `sync_meta` key holding, for a record whose delete the server acknowledged, the
/// log's last key then: its entries up to there are of the life the delete ended.
fn gone_key(entity: &str, id: Uuid) -> String {
    format!("acked-gone:{entity}:{id}")
}

/// Notes that the server acknowledged a delete of `entity` `id` (in the transaction that
/// records the answer): the log's changes of the record so far are never sent again.
pub(crate) fn note_acknowledged_delete(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<(), StoreError> {
    let last: Option<String> = conn
        .prepare_cached(SELECT_LAST)?
        .query_row([], |r| r.get(0))
        .optional()?;
    match last {
        Some(last) => super::meta_set(conn, &gone_key(entity, id), &last),
        None => Ok(()),
    }
}

/// The log in acknowledgement order: each entry's `sync_meta` key and the change
/// (`None` if it does not parse: written by a later runtime, say).
fn read_log(conn: &Connection) -> Result<Vec<(String, Option<Logged>)>, StoreError> {
    let mut stmt = conn.prepare_cached(SELECT_ALL)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (key, value) = row?;
        let logged = serde_json::from_str::<Logged>(&value).ok().map(|l| Logged {
            log_key: key.clone(),
            ..l
        });
        if let Some(l) = &logged
            && super::meta_get(conn, &gone_key(&l.entity, l.id))?.is_some_and(|at| key <= at)
        {
            // Of a life of the record a delete the server acknowledged ended: a record
            // created again under the same id is another life, and these are not its.
            conn.prepare_cached(DELETE_KEY)?.execute([&key])?;
            continue;
        }
        out.push((key, logged));
    }
    Ok(out)
}

const DELETE_KEY: &str = concatcp!("DELETE FROM \"", meta::META, "\" WHERE \"key\" = ?1");

/// Whether the server bounded a stamp of `item` (its answer's clock for a field the item
/// stamped is earlier than the item's stamp: the server stamps no field earlier than a
/// change it applied unless it bounded that change's stamp to its own time).
fn bounded(item: &OutboxItem, answer: &ServerRecord) -> bool {
    let stamps: Vec<(&String, &Json)> = match item.op {
        MutationOp::Create => item
            .payload
            .get("clocks")
            .and_then(Json::as_object)
            .map(|c| c.iter().collect())
            .unwrap_or_default(),
        _ => item
            .payload
            .get("patch")
            .and_then(Json::as_object)
            .map(|p| {
                p.iter()
                    .filter_map(|(f, op)| op.get("hlc").map(|h| (f, h)))
                    .collect()
            })
            .unwrap_or_default(),
    };
    let parse = |v: &Json| v.as_str().and_then(|s| s.parse::<Hlc>().ok());
    stamps.into_iter().any(|(field, stamp)| {
        match (parse(stamp), answer.clocks.get(field).and_then(parse)) {
            (Some(mine), Some(theirs)) => mine > theirs,
            _ => false,
        }
    })
}

/// The records whose items wait for the restart's snapshot.
pub(crate) fn replay_held(conn: &Connection) -> Result<BTreeSet<(String, Uuid)>, StoreError> {
    Ok(super::meta_get(conn, REPLAY_HELD_KEY)?
        .and_then(|j| serde_json::from_str(&j).ok())
        .unwrap_or_default())
}

/// Notes the dots of a record a restart holds, as the restored server just delivered it
/// (in the page's transaction).
pub(crate) fn note_replay_dots(conn: &Connection, r: &ServerRecord) -> Result<(), StoreError> {
    super::meta_set(
        conn,
        &replay_dots_key(&r.entity_type, r.entity_id),
        &serde_json::to_string(&ReplayDots {
            dots: r.dots.clone().unwrap_or_default(),
            gaps: r.dot_gaps.clone().unwrap_or_default(),
        })
        .expect("dots serialise"),
    )
}

/// A held record's dots and gaps on the restored server (`replay-dots:` entries).
#[derive(Serialize, Deserialize)]
struct ReplayDots {
    dots: Dots,
    #[serde(default)]
    gaps: DotGaps,
}

impl ReplayDots {
    /// An entry's value: this shape, or the dots alone (written by a runtime before gaps).
    fn parse(value: &str) -> Option<ReplayDots> {
        serde_json::from_str(value).ok().or_else(|| {
            serde_json::from_str(value).ok().map(|dots| ReplayDots {
                dots,
                gaps: DotGaps::new(),
            })
        })
    }
}

impl LocalStore {
    /// Logs a create or update the server applied (`item`, as it was sent), in the
    /// transaction that records the answer, and drops the oldest entries past
    /// [`AckLog::max_changes`]. Checks (an empty patch) and deletes are not logged (a
    /// delete the server lost is sent again from the device's tombstone).
    ///
    /// A change the server stamped earlier than the device did (a stamp in the server's
    /// future, from a device clock running ahead, is bounded to the server's time) is
    /// not logged either: sent again later, it would be bounded to that later time, and
    /// win over edits made after it (or revive a record deleted after it).
    pub(crate) fn log_acknowledged(
        &self,
        conn: &Connection,
        item: &OutboxItem,
        answer: &ServerRecord,
    ) -> Result<(), StoreError> {
        let max = self.inner.ack_log.max_changes as u64;
        if max == 0 || item.op == MutationOp::Delete || is_check(item) || bounded(item, answer) {
            return Ok(());
        }
        let last: Option<String> = conn
            .prepare_cached(SELECT_LAST)?
            .query_row([], |r| r.get(0))
            .optional()?;
        let seq = last
            .and_then(|k| k.strip_prefix(PREFIX).and_then(|n| n.parse::<u64>().ok()))
            .unwrap_or(0)
            + 1;
        let entry = Logged {
            entity: item.entity_type.clone(),
            id: item.entity_id,
            op: item.op,
            key: item.idempotency_key.clone(),
            payload: item.payload.clone(),
            base_version: item.base_version,
            at: self.device_wall_millis(),
            model: self.inner.fingerprint.clone(),
            log_key: String::new(),
        };
        super::meta_set(
            conn,
            &format!("{PREFIX}{seq:020}"),
            &serde_json::to_string(&entry).expect("a logged change serialises"),
        )?;
        if seq > max {
            conn.prepare_cached(DELETE_UP_TO)?
                .execute([format!("{PREFIX}{:020}", seq - max)])?;
        }
        Ok(())
    }

    /// At a restart that names a restore: holds the items of every record the log
    /// holds changes of (within [`AckLog::max_age`]) until the snapshot is through, and
    /// drops the older entries.
    pub(crate) fn hold_for_replay(&self, conn: &Connection) -> Result<(), StoreError> {
        let cutoff = self
            .device_wall_millis()
            .saturating_sub(self.inner.ack_log.max_age.as_millis() as u64);
        let mut held = replay_held(conn)?;
        for (key, l) in read_log(conn)? {
            match l {
                Some(l) if l.at >= cutoff && l.model == self.inner.fingerprint => {
                    held.insert((l.entity, l.id));
                }
                _ => {
                    conn.prepare_cached(DELETE_KEY)?.execute([key])?;
                }
            }
        }
        if !held.is_empty() {
            super::meta_set(
                conn,
                REPLAY_HELD_KEY,
                &serde_json::to_string(&held).expect("JSON"),
            )?;
        }
        Ok(())
    }

    /// Once a restart's snapshot and the changes after it are through: queues the logged
    /// changes of each held record the restored server delivered, ahead of every item
    /// queued, with their keys, bodies and dots unchanged, rebuilds the record's row on
    /// the restored record with them on top, and releases the held records.
    /// `undelivered` are the records the server no longer has: their changes stay in the
    /// log (the device's copy holds them, and is checked and created again from it with
    /// its dots). Returns how many it queued.
    pub(crate) fn replay_acknowledged(
        &self,
        tx: &Connection,
        undelivered: &BTreeSet<(String, Uuid)>,
    ) -> Result<usize, StoreError> {
        let held = replay_held(tx)?;
        if held.is_empty() {
            return Ok(0);
        }
        let cutoff = self
            .device_wall_millis()
            .saturating_sub(self.inner.ack_log.max_age.as_millis() as u64);
        let mut per_record: BTreeMap<(String, Uuid), Vec<Logged>> = BTreeMap::new();
        let mut seen_keys = BTreeSet::new();
        for (key, l) in read_log(tx)? {
            let Some(l) = l else {
                tx.prepare_cached(DELETE_KEY)?.execute([key])?;
                continue;
            };
            let record = (l.entity.clone(), l.id);
            if !held.contains(&record) {
                // Acknowledged by the restored server (during the restart): kept.
                continue;
            }
            if undelivered.contains(&record) {
                // Of a record the server no longer has: kept, and the record is checked.
                // If the server still lacks it, the device creates it again from its
                // copy, which holds these changes (and their dots); if another device
                // created it again first, from a copy that may lack them, the check's
                // answer sends them (`replay_after_check`; simulation seeds 692, 926).
                // A record deleted here gets no check: nothing waits.
                let live = match self.table_of(&l.entity) {
                    Some(table) => super::pull::is_live(tx, table, l.id)?,
                    None => false,
                };
                if live {
                    super::meta_set(tx, &replay_await_key(&l.entity, l.id), "1")?;
                }
                continue;
            }
            // Sent again below (and logged again once acknowledged), kept (the record
            // holds it), or, outside the window, dropped.
            if l.at < cutoff
                || l.model != self.inner.fingerprint
                || !seen_keys.insert(l.key.clone())
            {
                tx.prepare_cached(DELETE_KEY)?.execute([key])?;
                continue;
            }
            per_record.entry(record).or_default().push(l);
        }
        let mut with_dots = BTreeMap::new();
        for ((entity, id), changes) in per_record {
            let noted = super::meta_get(tx, &replay_dots_key(&entity, id))?
                .and_then(|j| ReplayDots::parse(&j));
            let (dots, gaps) = match noted {
                Some(n) => (Some(n.dots), Some(n.gaps)),
                None => (None, None),
            };
            with_dots.insert((entity, id), (changes, dots, gaps));
        }
        let queued = self.queue_replays(tx, with_dots)?;
        tx.execute(
            concatcp!(
                "DELETE FROM \"",
                meta::META,
                "\" WHERE (\"key\" >= 'replay-dots:' AND \"key\" < 'replay-dots;') OR \"key\" = ?1"
            ),
            [REPLAY_HELD_KEY],
        )?;
        Ok(queued)
    }

    /// The answer to a check of `server`'s record, which a restart found lost and whose
    /// logged changes it kept for this answer (see [`LocalStore::replay_acknowledged`];
    /// the caller took the mark, `replay-await:`): the server has the record again because
    /// another device created it again first, from a copy that may lack this device's
    /// acknowledged changes. Queues those changes (all but the ones whose dot the
    /// record includes) ahead of every item, as after a restart, and rebuilds the row.
    /// Returns how many it queued.
    pub(crate) fn replay_after_check(
        &self,
        tx: &Connection,
        server: &ServerRecord,
    ) -> Result<usize, StoreError> {
        let (entity, id) = (server.entity_type.clone(), server.entity_id);
        if server.deleted {
            return Ok(0);
        }
        let cutoff = self
            .device_wall_millis()
            .saturating_sub(self.inner.ack_log.max_age.as_millis() as u64);
        let mut changes = Vec::new();
        let mut seen_keys = BTreeSet::new();
        for (key, l) in read_log(tx)? {
            let Some(l) = l else { continue };
            if l.entity != entity || l.id != id {
                continue;
            }
            // As in `replay_acknowledged`.
            if l.at >= cutoff
                && l.model == self.inner.fingerprint
                && seen_keys.insert(l.key.clone())
            {
                changes.push(l);
            } else {
                tx.prepare_cached(DELETE_KEY)?.execute([key])?;
            }
        }
        let mut one = BTreeMap::new();
        one.insert(
            (entity, id),
            (changes, server.dots.clone(), server.dot_gaps.clone()),
        );
        self.queue_replays(tx, one)
    }

    /// Queues the logged `changes` of each record ahead of every item queued (ids below
    /// the lowest), leaving out those whose dot the record's `dots` on the server
    /// include, and rebuilds each record's row on its base with them on top. Returns
    /// how many it queued.
    fn queue_replays(
        &self,
        tx: &Connection,
        per_record: BTreeMap<(String, Uuid), Replays>,
    ) -> Result<usize, StoreError> {
        let total: usize = per_record.values().map(|(c, _, _)| c.len()).sum();
        let min_id: Option<i64> = tx.query_row(
            concatcp!("SELECT MIN(\"id\") FROM \"", meta::OUTBOX, "\""),
            [],
            |r| r.get(0),
        )?;
        // Ahead of everything queued: ids below the lowest.
        let mut next_id = min_id.unwrap_or(1).min(1) - total as i64;
        let mut queued = 0;
        for ((entity, id), (changes, dots, gaps)) in per_record {
            let Some(table) = self.table_of(&entity) else {
                continue;
            };
            let row = read_row(tx, table, id)?;
            if row.as_ref().is_none_or(|r| r.deleted) {
                // Deleted since (here or on the server): a delete wins over these edits.
                for l in &changes {
                    tx.prepare_cached(DELETE_KEY)?.execute([&l.log_key])?;
                }
                continue;
            }
            let mut any = false;
            for l in changes {
                if dot_included(&l.payload, dots.as_ref(), gaps.as_ref()) {
                    // The restored record holds it (applied before the backup, or carried
                    // by a copy another device sent again): nothing to send, and it stays
                    // in the log, for a later restore that loses it (simulation seed 264
                    // under `SYNC_SIM_STRICT_RESTORES`).
                    continue;
                }
                // Logged again once acknowledged.
                tx.prepare_cached(DELETE_KEY)?.execute([&l.log_key])?;
                let inserted = tx
                    .prepare_cached(concatcp!(
                        "INSERT OR IGNORE INTO \"",
                        meta::OUTBOX,
                        "\" (\"id\", \"entity_type\", \"entity_id\", \"op\", \"payload\", \"idempotency_key\", \"base_version\", \"created_at\", \"attempt_count\") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)"
                    ))?
                    .execute(params![
                        next_id,
                        entity,
                        id.to_string(),
                        l.op.as_str(),
                        to_json_string(&l.payload),
                        l.key,
                        l.base_version,
                        crate::time::now()
                    ])?;
                if inserted > 0 {
                    any = true;
                    queued += 1;
                }
                next_id += 1;
            }
            if !any {
                continue;
            }
            // The row: the restored record (its base) with the changes on top.
            if read_base(tx, table, id)?.is_none() {
                keep_base(tx, table, id)?;
            }
            if let Some(base) = read_base(tx, table, id)? {
                let mut s = base.as_server_record(&entity, id);
                s.dots = dots;
                s.dot_gaps = gaps;
                if let Err(e) = rebase_onto(tx, table, &s) {
                    // The row stays as it was until the answers move it; a change that
                    // does not apply here is answered by the server all the same.
                    tracing::warn!(%entity, %id, error = %e, "could not show changes sent again after a restore on their record");
                }
            }
        }
        Ok(queued)
    }
}

/// Drops the mark that `entity` `id`'s logged changes wait for its check's answer;
/// whether it was there.
pub(crate) fn forget_replay_await(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(DELETE_KEY)?
        .execute([replay_await_key(entity, id)])?
        > 0)
}
