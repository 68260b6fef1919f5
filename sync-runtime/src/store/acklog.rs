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
//! - a change whose dot the restored record includes is not sent (the record holds it);
//! - a change whose stamps the server bounded (PROTOCOL.md PUSH-4: the device's clock ran
//!   ahead) is sent with the stamps the server gave it, under a new key, and only when it
//!   carries a dot the restored record lacks (simulation seeds 11631 and 24405); one
//!   without a dot is not logged.
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

/// A record's logged changes to send again, its dots and gaps on the server, and its life
/// there ([`ServerRecord::life_since`]).
type Replays = (Vec<Logged>, Option<Dots>, Option<DotGaps>, Option<i64>);

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
    /// The stamps the server gave the fields whose stamps it bounded (PROTOCOL.md
    /// PUSH-4: the device's clock ran ahead), `{field: hlc}`; absent when it bounded
    /// none. Such a change is sent again only under a new key, with these stamps in
    /// place of its own, and only when its dot tells that the restored server lacks
    /// it (see [`LocalStore::queue_replays`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    server_stamps: Option<serde_json::Map<String, Json>>,
    /// With `server_stamps`: the life of the record the change was applied in (the
    /// answer's [`ServerRecord::life_since`], PROTOCOL.md SUM-4). Dots begin again with
    /// each life, so only a record of the same life can tell by its dots that it lacks
    /// the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    life: Option<i64>,
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

/// The fields whose stamps the server bounded in `item`, with the stamps the answer
/// holds for them (its clock for a field the item stamped is earlier than the item's
/// stamp: the server stamps no field earlier than a change it applied unless it bounded
/// that change's stamp to its own time, keeping its node: PUSH-4). Empty when it bounded
/// none; `None` when a field's clock is earlier but of another node (an answer with the
/// record as it is now, whose field another device's edit stamped since): this change's
/// own stamp on the server is then unknown.
fn bounded(item: &OutboxItem, answer: &ServerRecord) -> Option<serde_json::Map<String, Json>> {
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
    let mut out = serde_json::Map::new();
    for (field, stamp) in stamps {
        let Some(theirs) = answer.clocks.get(field) else {
            continue;
        };
        match (parse(stamp), parse(theirs)) {
            (Some(mine), Some(t)) if mine > t => {
                if t.node != mine.node {
                    return None;
                }
                out.insert(field.clone(), theirs.clone());
            }
            _ => {}
        }
    }
    Some(out)
}

/// `payload` (a logged change's body) with the stamps of `stamps`' fields replaced by
/// theirs: a create's `clocks`, an update's `lww` operations' `hlc`.
fn restamped(op: MutationOp, mut payload: Json, stamps: &serde_json::Map<String, Json>) -> Json {
    match op {
        MutationOp::Create => {
            if let Some(clocks) = payload.get_mut("clocks").and_then(Json::as_object_mut) {
                for (field, stamp) in stamps {
                    if let Some(c) = clocks.get_mut(field) {
                        *c = stamp.clone();
                    }
                }
            }
        }
        _ => {
            if let Some(patch) = payload.get_mut("patch").and_then(Json::as_object_mut) {
                for (field, stamp) in stamps {
                    if let Some(h) = patch.get_mut(field).and_then(|op| op.get_mut("hlc")) {
                        *h = stamp.clone();
                    }
                }
            }
        }
    }
    payload
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
            life: r.life_since,
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
    /// The record's [`ServerRecord::life_since`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    life: Option<i64>,
}

impl ReplayDots {
    /// An entry's value: this shape, or the dots alone (written by a runtime before gaps).
    fn parse(value: &str) -> Option<ReplayDots> {
        serde_json::from_str(value).ok().or_else(|| {
            serde_json::from_str(value).ok().map(|dots| ReplayDots {
                dots,
                gaps: DotGaps::new(),
                life: None,
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
    /// future, from a device clock running ahead, is bounded to the server's time) would,
    /// sent again as it was, be bounded to that later time, and win over edits made after
    /// it (or revive a record deleted after it). It is logged with the stamps the server
    /// gave it (`server_stamps`) when it carries a dot and the server marks lives
    /// (protocol 1.3.3), and sent again with those stamps under a new key only when the
    /// restored record, of the same life, lacks that dot. Without a dot nothing could tell
    /// whether the restored server holds it under its first key, and it is not logged;
    /// nor is it when an answer's clock of another node hides its stamp on the server.
    pub(crate) fn log_acknowledged(
        &self,
        conn: &Connection,
        item: &OutboxItem,
        answer: &ServerRecord,
    ) -> Result<(), StoreError> {
        let max = self.inner.ack_log.max_changes as u64;
        if max == 0 || item.op == MutationOp::Delete || is_check(item) {
            return Ok(());
        }
        // A change whose stamps the server bounded, sent again as it was, would be
        // bounded again to a later time and could win over edits made since (or bring
        // back a record deleted since). Sent with the stamps the server gave it, it is
        // the change the server had; but that body needs a new key, and only a dot can
        // then tell whether the restored server holds it: without one, it is not
        // logged (simulation seed 24405: an increment lost with its title's stamp).
        let Some(bounded) = bounded(item, answer) else {
            return Ok(());
        };
        if !bounded.is_empty()
            && (payload_dot(&item.payload).is_none() || !self.server_marks_lives())
        {
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
            life: (!bounded.is_empty()).then_some(answer.life_since).flatten(),
            server_stamps: (!bounded.is_empty()).then_some(bounded),
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
    /// queued, with their keys, bodies and dots unchanged (a change whose stamps the
    /// server bounded: see [`LocalStore::log_acknowledged`]), rebuilds the record's row on
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
            let (dots, gaps, life) = match noted {
                Some(n) => (Some(n.dots), Some(n.gaps), n.life),
                None => (None, None, None),
            };
            with_dots.insert((entity, id), (changes, dots, gaps, life));
        }
        let queued = self.queue_replays(tx, with_dots, false)?;
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
            (
                changes,
                server.dots.clone(),
                server.dot_gaps.clone(),
                server.life_since,
            ),
        );
        self.queue_replays(tx, one, true)
    }

    /// Queues the logged `changes` of each record ahead of every item queued (ids below
    /// the lowest), leaving out those whose dot the record's `dots` on the server
    /// include, and rebuilds each record's row on its base with them on top. A change
    /// whose stamps the server bounded goes with the server's stamps under a new key, and
    /// only when the record's dots are known and of the life it was applied in (one of
    /// another life is dropped; one whose record's dots are unknown stays in the log).
    ///
    /// `other_history`: the server's record is not the one the changes were made on
    /// (another device created it again, from its copy or as a twin, after a restore
    /// lost it), so the version numbers the changes name are of the lost history. They
    /// go with no `base_version`, under new keys (a key names one body, IDEM-1): merged
    /// by their stamps (LWW-1), so an older value never overwrites the newer one of a
    /// record that happens to hold the same version number, and a `manual` field that
    /// moved since is a conflict. Dots still keep each `sum` contribution to one count.
    /// Returns how many it queued.
    fn queue_replays(
        &self,
        tx: &Connection,
        per_record: BTreeMap<(String, Uuid), Replays>,
        other_history: bool,
    ) -> Result<usize, StoreError> {
        let total: usize = per_record.values().map(|(c, ..)| c.len()).sum();
        let min_id: Option<i64> = tx.query_row(
            concatcp!("SELECT MIN(\"id\") FROM \"", meta::OUTBOX, "\""),
            [],
            |r| r.get(0),
        )?;
        // Ahead of everything queued: ids below the lowest.
        let mut next_id = min_id.unwrap_or(1).min(1) - total as i64;
        let mut queued = 0;
        for ((entity, id), (changes, dots, gaps, life)) in per_record {
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
                let (payload, key) = match &l.server_stamps {
                    None if other_history => (l.payload.clone(), self.new_key()),
                    None => (l.payload.clone(), l.key.clone()),
                    // Of another life of the record (deleted and created again since):
                    // its dots say nothing of this change, and a delete won over it.
                    Some(_) if l.life != life => {
                        tx.prepare_cached(DELETE_KEY)?.execute([&l.log_key])?;
                        continue;
                    }
                    // The restored server lacks it (its dot says so): the change as the
                    // server had it, under a new key (its body is not the one the first
                    // key was sent with).
                    Some(stamps) if dots.is_some() && self.server_marks_lives() => {
                        (restamped(l.op, l.payload.clone(), stamps), self.new_key())
                    }
                    // Without the record's dots (or from a server before lives), nothing
                    // tells: it stays in the log.
                    Some(_) => continue,
                };
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
                        to_json_string(&payload),
                        key,
                        if other_history { None } else { l.base_version },
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MINE: &str = "01a319a5e732-00000000-4d12f9ad05b24e6a";
    /// The server's bound of `MINE`: earlier, same node (PUSH-4).
    const BOUNDED: &str = "01a3185d3abb-0148ac77-4d12f9ad05b24e6a";
    /// Another device's stamp, earlier than `MINE`.
    const OTHER: &str = "01a3185d3abb-00000000-0000000000000007";

    fn item(op: MutationOp, payload: Json) -> OutboxItem {
        OutboxItem {
            id: 1,
            entity_type: "task".into(),
            entity_id: Uuid::nil(),
            op,
            payload,
            idempotency_key: "k".into(),
            base_version: Some(1),
            created_at: chrono::Utc::now(),
            attempt_count: 1,
            next_attempt_at: None,
            status: OutboxStatus::Pending,
            last_error: None,
        }
    }

    fn answer(clocks: Json) -> ServerRecord {
        ServerRecord {
            entity_type: "task".into(),
            entity_id: Uuid::nil(),
            version: 2,
            deleted: false,
            server_updated_at: "2027-01-15T08:00:00.091000Z".into(),
            record: Record::new(),
            clocks,
            dots: None,
            dot_gaps: None,
            life_since: None,
        }
    }

    #[test]
    fn a_bounded_stamp_is_the_answers_of_the_same_node() {
        let update = item(
            MutationOp::Update,
            json!({"patch": {"title": {"set": "t", "hlc": MINE}, "likes": {"add": 1}}}),
        );
        let stamps = bounded(&update, &answer(json!({"title": BOUNDED}))).unwrap();
        assert_eq!(
            stamps,
            json!({"title": BOUNDED}).as_object().unwrap().clone()
        );
        assert_eq!(
            restamped(update.op, update.payload.clone(), &stamps),
            json!({"patch": {"title": {"set": "t", "hlc": BOUNDED}, "likes": {"add": 1}}})
        );
        // Not bounded: the answer's stamp is this change's own.
        assert!(
            bounded(&update, &answer(json!({"title": MINE})))
                .unwrap()
                .is_empty()
        );
        // An earlier stamp of another device: this change's stamp is unknown.
        assert_eq!(bounded(&update, &answer(json!({"title": OTHER}))), None);
    }

    #[test]
    fn a_bounded_create_carries_the_servers_clocks() {
        let create = item(
            MutationOp::Create,
            json!({"record": {"title": "t"}, "clocks": {"title": MINE, "status": MINE}}),
        );
        let stamps = bounded(
            &create,
            &answer(json!({"title": BOUNDED, "status": BOUNDED})),
        )
        .unwrap();
        assert_eq!(
            restamped(create.op, create.payload.clone(), &stamps),
            json!({"record": {"title": "t"}, "clocks": {"title": BOUNDED, "status": BOUNDED}})
        );
    }
}
