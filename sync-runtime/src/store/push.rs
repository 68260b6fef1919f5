//! Sending: the next batch of outbox items (dependencies first), and what the server
//! answered for each.
//!
//! Each function is one transaction, so a process killed at any point resumes from a
//! consistent state: an item is `sending` only between [`LocalStore::next_batch`] and the
//! recording of its result, and [`LocalStore::recover_sending`] puts such items back in
//! the queue, to be sent again with the same idempotency key and body.

use crate::hlc::Hlc;
use crate::protocol::{MutationOp, MutationResult, ServerRecord};
use crate::syncable::Record;
use const_format::concatcp;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use sync_model::sql::meta;
use uuid::Uuid;

use super::*;

/// The outbox payload of a create, owned.
#[derive(Serialize)]
pub(crate) struct CreatePayloadOwned {
    pub(crate) record: Record,
    pub(crate) clocks: Json,
    /// For a record created again after the server lost it: the last version both sides
    /// knew (`{record, clocks}`), the base of a merge if another device re-creates it
    /// too. Local to the outbox: not sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) resend_base: Option<Json>,
    /// For a record created again after the server lost it: the dots its `sum` fields
    /// hold, as the server last gave them (sent as the mutation's `dots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dots: Option<crate::protocol::Dots>,
    /// With `dots`: the contributions below them the record lacks (sent as the
    /// mutation's `dot_gaps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) dot_gaps: Option<crate::protocol::DotGaps>,
}

/// Takes the server's answer to a check of a record ([`is_check`]): the record as it is
/// now. From another history (the server was restored to before the device's own write,
/// and answers with a lower version or another commit time), it replaces the device's
/// copy, pending changes on top; otherwise the base moves to it as for any answer (which
/// never moves a record back to an older version).
pub(crate) fn take_checked(
    conn: &Connection,
    table: &Table,
    server: &ServerRecord,
    known: Known,
) -> Result<(), StoreError> {
    if known == Known::OtherHistory {
        // The server lost the device's own write: a restart that names a restore
        // follows, which sends again what else it acknowledged and lost.
        suspect_restore_everywhere(conn)?;
        replace_dots(conn, server)?;
        write_base(conn, table, server)?;
        rebase_onto(conn, table, server)
    } else {
        rebase_row(conn, table, server)
    }
}

/// The member of an outbox payload that holds the item's dot (see
/// [`LocalStore::dotted`]).
pub(crate) const DOT_MEMBER: &str = "dot";

/// The member of an outbox item's body naming the transaction it was written in
/// ([`LocalStore::transaction`]): the engine sends a transaction's items in one push.
/// Kept in the body, not a column, so that no client migration is needed for it.
pub(crate) const TXN_MEMBER: &str = "txn";

/// The dot an outbox payload holds, if any (its `{"session", "seq"}`; see
/// [`LocalStore::dotted`]).
pub(crate) fn payload_dot(payload: &Json) -> Option<crate::protocol::Dot> {
    let d = payload.get(DOT_MEMBER)?;
    Some(crate::protocol::Dot {
        session: d.get("session")?.as_str()?.to_string(),
        seq: d.get("seq")?.as_u64()?,
        prev: d.get("prev").and_then(Json::as_u64),
    })
}

/// Whether `payload`'s dot is among `dots` and not in `gaps` (the server holds its `sum`
/// contributions).
pub(crate) fn dot_included(
    payload: &Json,
    dots: Option<&crate::protocol::Dots>,
    gaps: Option<&crate::protocol::DotGaps>,
) -> bool {
    match (payload_dot(payload), dots) {
        (Some(d), Some(dots)) => d.included(dots, gaps),
        _ => false,
    }
}

/// The member of an outbox payload that holds the keys whose change the item carries
/// ([`Mutation::replaces`](crate::protocol::Mutation::replaces)).
pub(crate) const REPLACES_MEMBER: &str = "replaces";

/// `payload` (an item's body as JSON text or value) with `item`'s key added to the keys
/// whose change it carries, after those `item` carried already (the oldest dropped past
/// [`MAX_REPLACED_KEYS`](crate::protocol::MAX_REPLACED_KEYS)): the item was answered
/// `conflict` or `unknown-record`, and `payload` sends its change again. It stays in
/// `item`'s transaction ([`TXN_MEMBER`]), if any: a server that did not apply the
/// transaction (PROTOCOL.md TXN-1) gets it again whole, with this change in it.
pub(crate) fn carrying(mut payload: Json, item: &OutboxItem) -> Json {
    let mut keys: Vec<Json> = item
        .payload
        .get(REPLACES_MEMBER)
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    keys.push(Json::String(item.idempotency_key.clone()));
    let excess = keys
        .len()
        .saturating_sub(crate::protocol::MAX_REPLACED_KEYS);
    keys.drain(..excess);
    if let Some(p) = payload.as_object_mut() {
        p.insert(REPLACES_MEMBER.into(), Json::Array(keys));
        if let Some(group) = item.payload.get(TXN_MEMBER) {
            p.insert(TXN_MEMBER.into(), group.clone());
        }
    }
    payload
}

/// The `sync_meta` key of a record's dots as the server last gave them.
pub(crate) fn dots_key(entity: &str, id: Uuid) -> String {
    format!("dots:{entity}:{id}")
}

/// The record's dots as the server last gave them (none if it never did).
pub(crate) fn stored_dots(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<Option<crate::protocol::Dots>, StoreError> {
    Ok(super::meta_get(conn, &dots_key(entity, id))?.and_then(|j| serde_json::from_str(&j).ok()))
}

/// The `sync_meta` key of a record's gaps as the server last gave them.
pub(crate) fn dot_gaps_key(entity: &str, id: Uuid) -> String {
    format!("dot-gaps:{entity}:{id}")
}

/// The record's gaps as the server last gave them (none if it never did).
pub(crate) fn stored_dot_gaps(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<Option<crate::protocol::DotGaps>, StoreError> {
    Ok(super::meta_get(conn, &dot_gaps_key(entity, id))?
        .and_then(|j| serde_json::from_str(&j).ok())
        .filter(|g: &crate::protocol::DotGaps| !g.is_empty()))
}

/// The `sync_meta` key of the version and life the kept dots of a record are of
/// (`"<version> <life>"`: [`ServerRecord::version`], [`ServerRecord::life_since`] or 0).
/// Absent in stores of runtimes before protocol 1.3.3 until the record's next version.
pub(crate) fn dots_at_key(entity: &str, id: Uuid) -> String {
    format!("dots-at:{entity}:{id}")
}

/// The version and life the kept dots of a record are of (see [`dots_at_key`]).
fn stored_dots_at(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<Option<(i64, i64)>, StoreError> {
    Ok(
        super::meta_get(conn, &dots_at_key(entity, id))?.and_then(|v| {
            let (version, life) = v.split_once(' ')?;
            Some((version.parse().ok()?, life.parse().ok()?))
        }),
    )
}

/// Keeps the dots of a server record, so that the device can send the record again with
/// them if the server loses it. Merged with those kept
/// ([`merge_dot_sets`](crate::protocol::merge_dot_sets)): the record may be an answer
/// from an idempotency key, as it was then, of whichever history. A later life of the
/// record ([`ServerRecord::life_since`]) replaces them; an earlier one leaves them. The
/// version they are of ([`dots_at_key`]) moves only with a record known to be current
/// ([`note_current`]), so that the next current one is still compared with them.
pub(crate) fn keep_dots(conn: &Connection, s: &ServerRecord) -> Result<(), StoreError> {
    let life = s.life_since.unwrap_or(0);
    match stored_dots_at(conn, &s.entity_type, s.entity_id)? {
        Some((_, kept_life)) if life > kept_life => replace_dots(conn, s),
        Some((_, kept_life)) if life < kept_life => Ok(()),
        Some(_) => merge_dots(conn, s),
        // Nothing kept yet: these are the record's dots. (Dots a runtime before 1.3.3
        // kept, of no known version, are merged, and compared with nothing until a
        // current record replaces them.)
        None if stored_dots(conn, &s.entity_type, s.entity_id)?.is_none() => replace_dots(conn, s),
        None => merge_dots(conn, s),
    }
}

/// Takes `s` as the record as the server holds it now (pulled, or the answer to a first
/// delivery): if it is a later version of the same life than the kept dots are of and
/// lacks one of them, the server lost a contribution it had applied (restored from a
/// backup taken before it), even though the version number moved on (another device
/// created the record again on the restored server, or wrote it since); within one life
/// of one history a record's dots only grow (PROTOCOL.md SUM-4). Returns whether it
/// lacks one. Then `s`'s dots replace those kept, unless `s` is older than them.
///
/// Lacking is never named against a server that speaks a protocol before 1.3.3 (its
/// recreated records do not say so, and their dots start afresh), for a tombstone (the
/// delete wins whatever it holds), or against dots kept by a runtime before 1.3.3
/// (their version is unknown, and they may be merged across histories).
///
/// Simulation seeds 5806, 7127, 7165 and 9650 under `SYNC_SIM_STRICT_RESTORES`: a device that
/// never learnt of a restore otherwise (its change token was replaced by a restart
/// after `token-expired`, or the retry of its write answered from its key with the
/// restored record) took a later version for newer, and lost its contributions.
pub(crate) fn note_current(conn: &Connection, s: &ServerRecord) -> Result<bool, StoreError> {
    let at = stored_dots_at(conn, &s.entity_type, s.entity_id)?;
    let life = s.life_since.unwrap_or(0);
    // A later version of the same life, or of an earlier life (within one history a
    // record's life never goes back: that is another history too).
    let later = |&(version, kept_life): &(i64, i64)| life <= kept_life && s.version > version;
    let lacks = match at {
        Some(at) if later(&at) && !s.deleted => lacks_kept(conn, s)?,
        _ => false,
    };
    match at {
        Some(at) if later(&at) || life > at.1 => replace_dots(conn, s)?,
        // Not moved on: the same version again (a snapshot of what the store holds), an
        // older one, or an earlier life at an older version.
        Some(_) => {}
        // Nothing kept, nothing to keep.
        None if s.dots.as_ref().is_none_or(|d| d.is_empty())
            && stored_dots(conn, &s.entity_type, s.entity_id)?.is_none() => {}
        None => replace_dots(conn, s)?,
    }
    Ok(lacks)
}

/// Whether the store keeps the dots of any record.
pub(crate) fn has_kept_dots(conn: &Connection) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(concatcp!(
            "SELECT EXISTS (SELECT 1 FROM \"",
            meta::META,
            "\" WHERE \"key\" >= 'dots:' AND \"key\" < 'dots;')"
        ))?
        .query_row([], |r| r.get(0))?)
}

/// Whether `s` lacks one of the dots kept (see [`note_current`]).
fn lacks_kept(conn: &Connection, s: &ServerRecord) -> Result<bool, StoreError> {
    let Some(kept) = stored_dots(conn, &s.entity_type, s.entity_id)? else {
        return Ok(false);
    };
    let speaks = super::meta_get(conn, super::open::SERVER_PROTOCOL_KEY)?
        .is_some_and(|v| crate::protocol::speaks_at_least(&v, crate::protocol::LIVES_SINCE));
    if !speaks {
        return Ok(false);
    }
    let kept_gaps = stored_dot_gaps(conn, &s.entity_type, s.entity_id)?.unwrap_or_default();
    let empty = crate::protocol::Dots::new();
    Ok(!crate::protocol::dot_sets_include(
        s.dots.as_ref().unwrap_or(&empty),
        s.dot_gaps.as_ref(),
        &kept,
        &kept_gaps,
    ))
}

fn set_dots_at(conn: &Connection, s: &ServerRecord) -> Result<(), StoreError> {
    super::meta_set(
        conn,
        &dots_at_key(&s.entity_type, s.entity_id),
        &format!("{} {}", s.version, s.life_since.unwrap_or(0)),
    )
}

/// Keeps exactly the dots of `s` (a later version, another life, or another history
/// than the kept dots are of).
pub(crate) fn replace_dots(conn: &Connection, s: &ServerRecord) -> Result<(), StoreError> {
    let (e, id) = (&s.entity_type, s.entity_id);
    let dots = s.dots.clone().unwrap_or_default();
    let gaps = s
        .dot_gaps
        .clone()
        .filter(|_| !dots.is_empty())
        .unwrap_or_default();
    if dots.is_empty() {
        // Nothing to keep, nor to compare a later version with.
        conn.prepare_cached(concatcp!(
            "DELETE FROM \"",
            meta::META,
            "\" WHERE \"key\" IN (?1, ?2, ?3)"
        ))?
        .execute([dots_key(e, id), dot_gaps_key(e, id), dots_at_key(e, id)])?;
        return Ok(());
    }
    super::meta_set(
        conn,
        &dots_key(e, id),
        &serde_json::to_string(&dots).expect("dots serialise"),
    )?;
    super::meta_set(
        conn,
        &dot_gaps_key(e, id),
        &serde_json::to_string(&gaps).expect("gaps serialise"),
    )?;
    set_dots_at(conn, s)
}

/// Merges the dots of `s` into those kept (every contribution either includes).
fn merge_dots(conn: &Connection, s: &ServerRecord) -> Result<(), StoreError> {
    let Some(dots) = s.dots.as_ref().filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    let mut all = stored_dots(conn, &s.entity_type, s.entity_id)?.unwrap_or_default();
    let mut gaps = stored_dot_gaps(conn, &s.entity_type, s.entity_id)?.unwrap_or_default();
    let before = (all.clone(), gaps.clone());
    crate::protocol::merge_dot_sets(
        &mut all,
        &mut gaps,
        dots,
        &s.dot_gaps.clone().unwrap_or_default(),
    );
    if (&all, &gaps) != (&before.0, &before.1) {
        super::meta_set(
            conn,
            &dots_key(&s.entity_type, s.entity_id),
            &serde_json::to_string(&all).expect("dots serialise"),
        )?;
        super::meta_set(
            conn,
            &dot_gaps_key(&s.entity_type, s.entity_id),
            &serde_json::to_string(&gaps).expect("gaps serialise"),
        )?;
    }
    Ok(())
}

/// `{record, clocks}` of a base copy, for [`CreatePayloadOwned::resend_base`].
pub(crate) fn resend_base(record: &Record, clocks: &Json) -> Option<Json> {
    Some(serde_json::json!({ "record": record, "clocks": clocks }))
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

/// The outbox items of one record still to be sent (not dead), in order.
pub(crate) fn pending_for(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<Vec<(i64, MutationOp, String)>, StoreError> {
    Ok(items_of(conn, entity, id)?
        .into_iter()
        .filter(|i| !i.3)
        .map(|(n, op, p, _)| (n, op, p))
        .collect())
}

/// Every outbox item of one record, dead ones included, in order, each with whether it
/// is dead: what the row shows.
pub(crate) fn items_of(
    conn: &Connection,
    entity: &str,
    id: Uuid,
) -> Result<Vec<(i64, MutationOp, String, bool)>, StoreError> {
    let mut stmt = conn.prepare_cached(concatcp!(
        "SELECT \"id\", \"op\", \"payload\", \"status\" = 'dead' FROM \"",
        meta::OUTBOX,
        "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 ORDER BY \"id\""
    ))?;
    let mut rows = stmt.query(params![entity, id.to_string()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let op: String = r.get(1)?;
        out.push((r.get(0)?, super::parse_op(&op)?, r.get(2)?, r.get(3)?));
    }
    Ok(out)
}

pub(crate) fn delete_items_of(conn: &Connection, entity: &str, id: Uuid) -> Result<(), StoreError> {
    conn.execute(
        concatcp!(
            "DELETE FROM \"",
            meta::OUTBOX,
            "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2"
        ),
        params![entity, id.to_string()],
    )?;
    Ok(())
}

/// The record was deleted on the server while `item` edited it: delete wins, so this item
/// and the record's later items up to its next create go. A later create (the record
/// deleted and created again here) and what follows it stay: they start a new record.
pub(crate) fn delete_superseded(
    conn: &Connection,
    entity: &str,
    item: &OutboxItem,
) -> Result<(), StoreError> {
    conn.execute(
        concatcp!("DELETE FROM \"", meta::OUTBOX, "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 AND \"id\" >= ?3 AND \"id\" < COALESCE((SELECT MIN(\"id\") FROM \"", meta::OUTBOX, "\" WHERE \"entity_type\" = ?1 AND \"entity_id\" = ?2 AND \"id\" > ?3 AND \"op\" = 'create'), 9223372036854775807)"),
        params![entity, item.entity_id.to_string(), item.id],
    )?;
    Ok(())
}

/// An update payload (`{"patch": {...}}`) with every `lww` operation's stamp replaced by
/// the field's stamp in `clocks` (where it has one).
pub(crate) fn restamp(payload: &str, clocks: &Json) -> String {
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
pub(crate) fn is_collected(s: &ServerRecord) -> bool {
    s.deleted && s.record.is_empty()
}

/// The record was deleted on the server and its tombstone collected: this item and the
/// record's later items up to its next create go (delete wins), and so do its base copy
/// and conflicts; the row goes too, unless a create made here after the delete starts
/// the record again.
pub(crate) fn forget_collected(
    conn: &Connection,
    table: &Table,
    item: &OutboxItem,
) -> Result<(), StoreError> {
    let e = table.entity;
    let id = item.entity_id.to_string();
    delete_superseded(conn, &e.name, item)?;
    delete_base(conn, e, &id)?;
    delete_conflicts(conn, &e.name, &id)?;
    if pending_for(conn, &e.name, item.entity_id)?.is_empty() {
        delete_row(conn, e, &id)
    } else {
        unversion_row(conn, e, &id)
    }
}

/// The order of one push: see [`LocalStore::next_batch`].
pub(crate) struct Plan {
    /// Indices into the queue, prerequisites first; at most `max`, unless that would
    /// split a transaction that has to go first (then that transaction whole).
    pub(crate) chosen: Vec<usize>,
    /// Notes for items' `last_error`: why they wait, or that they are in a cycle.
    pub(crate) notes: Vec<(i64, String)>,
}

#[derive(Clone, PartialEq)]
pub(crate) enum Mark {
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
pub(crate) fn plan_batch(
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
    // Items written in one transaction (`LocalStore::transaction`) go in one push or
    // wait together; with any in the queue, the whole queue is planned, then cut.
    let group: Vec<Option<String>> = items.iter().map(|i| payload_txn(&i.payload)).collect();
    let grouped = group.iter().any(Option::is_some);
    let limit = if grouped { usize::MAX } else { max };
    let mut mark = vec![Mark::New; items.len()];
    let mut chosen = Vec::new();
    let mut notes = Vec::new();
    for root in 0..items.len() {
        if chosen.len() >= limit {
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
                    // A cycle: `m` is on the stack below. It is cut at a reference: the
                    // closing edge if it is one, else the last reference on the cycle,
                    // never an edge between two items of one record (their order is
                    // the record's history: a delete must not go before its create).
                    // Same-record edges alone never close a cycle (they point back in
                    // the queue), so there is one. Every cut advances a frame's edge
                    // index and drops the frames above it (their items unvisited
                    // again), so the search still ends.
                    let closing_is_reference = via.is_some();
                    let from = stack.iter().position(|(k, _, _)| *k == m).unwrap_or(0);
                    for (k, _, _) in &stack[from..] {
                        notes.push((
                            items[*k].id,
                            "dependency cycle between unsent creates: sent in queue order"
                                .to_string(),
                        ));
                    }
                    let cut = if closing_is_reference {
                        None
                    } else {
                        (from..stack.len() - 1).rev().find(|&f| {
                            let (_, pre, next) = &stack[f];
                            pre.get(*next).is_some_and(|(_, via)| via.is_some())
                        })
                    };
                    match cut {
                        Some(f) => {
                            for (k, _, _) in stack.drain(f + 1..) {
                                mark[k] = Mark::New;
                            }
                            stack[f].2 += 1;
                        }
                        None => {
                            if let Some((_, _, next)) = stack.last_mut() {
                                *next += 1;
                            }
                        }
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
    if grouped {
        let placed =
            keep_transactions_whole(items, &group, &mark, &chosen, &prerequisites, &mut notes);
        chosen.retain(|&n| placed[n]);
        let cut = cut_between_transactions(&group, &chosen, max);
        chosen.truncate(cut);
    } else {
        chosen.truncate(max);
    }
    notes.sort();
    notes.dedup();
    Plan { chosen, notes }
}

/// Which items of the plan `chosen` may go, so that a transaction goes whole or not at
/// all: while one of its items waits, the others wait too, and so does what needs one
/// of them first (`prerequisites`). Notes say why on the items held back.
fn keep_transactions_whole(
    items: &[OutboxItem],
    group: &[Option<String>],
    mark: &[Mark],
    chosen: &[usize],
    prerequisites: &impl Fn(usize) -> Vec<(usize, Option<(String, Uuid)>)>,
    notes: &mut Vec<(i64, String)>,
) -> Vec<bool> {
    let mut placed = vec![false; items.len()];
    for &n in chosen {
        placed[n] = true;
    }
    let mut members: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (n, g) in group.iter().enumerate() {
        if let Some(g) = g
            && items[n].status != OutboxStatus::Sending
        {
            members.entry(g.as_str()).or_default().push(n);
        }
    }
    let mut held: Vec<Option<String>> = vec![None; items.len()];
    loop {
        let mut changed = false;
        for ms in members.values() {
            let Some(&waiting) = ms.iter().find(|&&m| !placed[m]) else {
                continue;
            };
            if !ms.iter().any(|&m| placed[m]) {
                continue;
            }
            let why = match (&mark[waiting], &held[waiting]) {
                (_, Some(why)) | (Mark::Blocked(why), None) => why.clone(),
                _ => "waiting".to_string(),
            };
            let reason = format!("waiting: another change of its transaction waits ({why})");
            for &m in ms {
                if placed[m] {
                    placed[m] = false;
                    held[m] = Some(reason.clone());
                    notes.push((items[m].id, reason.clone()));
                    changed = true;
                }
            }
        }
        for &n in chosen {
            if !placed[n] {
                continue;
            }
            if let Some((m, via)) = prerequisites(n).into_iter().find(|(m, _)| !placed[*m]) {
                let why = held[m].clone().unwrap_or_else(|| "waiting".to_string());
                let reason = match via {
                    None => format!(
                        "waiting: an earlier change of this {} waits ({why})",
                        items[n].entity_type
                    ),
                    Some((entity, id)) => {
                        format!("waiting for the create of {entity} {id} ({why})")
                    }
                };
                placed[n] = false;
                held[n] = Some(reason.clone());
                notes.push((items[n].id, reason));
                changed = true;
            }
        }
        if !changed {
            return placed;
        }
    }
}

/// Where to end a batch of about `max` items of `chosen` (in order, prerequisites
/// first) so that no transaction is split: before the first transaction the limit would
/// split, or, when that leaves nothing, after the last item of every transaction it
/// splits (a transaction larger than a batch goes in a push of its own).
fn cut_between_transactions(group: &[Option<String>], chosen: &[usize], max: usize) -> usize {
    let mut span: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (pos, &n) in chosen.iter().enumerate() {
        if let Some(g) = &group[n] {
            let e = span.entry(g.as_str()).or_insert((pos, pos));
            e.1 = pos;
        }
    }
    let split = |cut: usize| {
        span.values()
            .filter(move |(first, last)| *first < cut && *last >= cut)
    };
    let mut cut = max.min(chosen.len());
    while let Some(first) = split(cut).map(|(first, _)| *first).min() {
        cut = first;
    }
    if cut == 0 && !chosen.is_empty() {
        cut = max.min(chosen.len()).max(1);
        while let Some(last) = split(cut).map(|(_, last)| *last).max() {
            cut = last + 1;
        }
    }
    cut
}

impl LocalStore {
    pub(crate) fn table_of(&self, entity: &str) -> Option<&Table> {
        self.inner.tables.get(entity)
    }

    /// Puts items left `sending` by a process that stopped mid-push back in the queue;
    /// they are sent again with the same idempotency key and body.
    pub(crate) fn recover_sending(&self) -> Result<usize, StoreError> {
        let conn = self.conn();
        Ok(conn.execute(
            concatcp!(
                "UPDATE \"",
                meta::OUTBOX,
                "\" SET \"status\" = 'pending' WHERE \"status\" = 'sending'"
            ),
            [],
        )?)
    }

    /// Picks the next items to push, in order, and marks them `sending` (one attempt more).
    ///
    /// The batch is the queue in order, each item preceded by what must reach the server
    /// first, at any depth: the earlier items of its own record, and for every
    /// `references` field the unsent create of the record it points at (with, in turn,
    /// that create's own prerequisites). So a comment saved before its task, saved before
    /// its project, goes project, task, comment, whatever the batch size (the batch is a
    /// prefix of that order). An item waits while a prerequisite cannot be sent yet
    /// (failed and backing off, dead), and says why in its `last_error`; so do the other
    /// items of its transaction ([`LocalStore::transaction`]: a transaction goes in one
    /// push, whole), and what needs any of them first. Nothing else waits, so one
    /// poisoned record never blocks the rest of the queue. A cycle of references
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
        // Read, planned and marked in one transaction: a write committed in between
        // could otherwise add to a planned transaction or rewrite a planned item.
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut items = read_outbox(&tx, "1 = 1")?;
        // Items of records a restart holds until its snapshot is through (see
        // `LocalStore::replay_acknowledged`) are not due, nor what waits behind them.
        let held = replay_held(&tx)?;
        let mut held_ids = std::collections::HashSet::new();
        if !held.is_empty() {
            for i in &mut items {
                if matches!(i.status, OutboxStatus::Pending | OutboxStatus::Failed)
                    && held.contains(&(i.entity_type.clone(), i.entity_id))
                {
                    i.status = OutboxStatus::Failed;
                    i.last_error = Some("held: the server was restored from a backup; sent once its records are fetched again".into());
                    held_ids.insert(i.id);
                }
            }
        }
        let plan = plan_batch(
            &items,
            max,
            |i| !held_ids.contains(&i.id) && retry_due(i),
            |item| self.references(item),
        );
        let (chosen, waiting) = (plan.chosen, plan.notes);
        for (id, reason) in &waiting {
            tx.execute(
                concatcp!(
                    "UPDATE \"",
                    meta::OUTBOX,
                    "\" SET \"last_error\" = ?1 WHERE \"id\" = ?2 AND \"status\" <> 'dead'"
                ),
                params![reason, id],
            )?;
        }
        let mut out = Vec::new();
        for n in chosen {
            let mut item = items[n].clone();
            tx.execute(
                concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"status\" = 'sending', \"attempt_count\" = \"attempt_count\" + 1 WHERE \"id\" = ?1"),
                [item.id],
            )?;
            item.status = OutboxStatus::Sending;
            item.attempt_count += 1;
            out.push(item);
        }
        tx.commit()?;
        Ok(out)
    }

    /// The ids of records this item's record or patch points at (`references` fields).
    pub(crate) fn references(&self, item: &OutboxItem) -> Vec<(String, Uuid)> {
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

    /// Items that were not sent after all (the network was unavailable): back to the queue,
    /// without counting the attempt.
    pub(crate) fn mark_unsent(&self, ids: &[i64]) -> Result<(), StoreError> {
        let conn = self.conn();
        for id in ids {
            conn.execute(
                concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"status\" = 'pending', \"attempt_count\" = MAX(\"attempt_count\" - 1, 0) WHERE \"id\" = ?1 AND \"status\" = 'sending'"),
                [id],
            )?;
        }
        drop(conn);
        self.notify_status();
        Ok(())
    }

    /// An item the server answered `transaction-aborted` (PROTOCOL.md TXN-1): back in the
    /// queue, counted as delivered once. It was delivered (a delayed copy of that push
    /// may still reach the server), so its count stays at least one and a later edit
    /// folds into it under a new key that names its key in `replaces` (see
    /// `rewrite_item`), as for any item sent once; but aborts do not add up to
    /// `max_attempts` (a unit whose other items fail one push after another would
    /// otherwise leave it one transient error from dead).
    pub(crate) fn requeue_aborted(&self, id: i64) -> Result<(), StoreError> {
        self.conn().execute(
            concatcp!(
                "UPDATE \"",
                meta::OUTBOX,
                "\" SET \"status\" = 'pending', \"attempt_count\" = MAX(\"attempt_count\" - 1, 1) WHERE \"id\" = ?1 AND \"status\" = 'sending'"
            ),
            [id],
        )?;
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for id in ids {
            tx.execute(
                concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"status\" = CASE WHEN \"attempt_count\" >= ?1 THEN 'dead' ELSE 'failed' END, \"next_attempt_at\" = ?2, \"last_error\" = ?3 WHERE \"id\" = ?4"),
                params![max_attempts, retry_at, error, id],
            )?;
            // Its record is marked failed (RecordStatus::Failed), unless a conflict
            // waits for the user there.
            let of: Option<(String, String)> = tx
                .query_row(
                    concatcp!(
                        "SELECT \"entity_type\", \"entity_id\" FROM \"",
                        meta::OUTBOX,
                        "\" WHERE \"id\" = ?1"
                    ),
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((entity, record)) = of
                && let Some(table) = self.table_of(&entity)
            {
                tx.execute(
                    &format!(
                        "UPDATE {} SET {} = 'failed' WHERE {} = ?1 AND {} <> 'conflicted'",
                        q(&table.entity.table),
                        q(meta::STATUS),
                        q(&table.entity.id_field().column),
                        q(meta::STATUS)
                    ),
                    [record],
                )?;
            }
        }
        tx.commit()?;
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
        let live_before = is_live(&tx, table, item.entity_id)?;
        // Whatever the answer, it settles a record whose logged changes waited for its
        // check (see `LocalStore::replay_after_check`): only a check answered with the
        // record sends them; any other answer (a create from the device's copy, which
        // holds them; a delete; a tombstone) ends the wait.
        let awaited = super::acklog::forget_replay_await(&tx, &item.entity_type, item.entity_id)?;
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
                tx.execute(
                    concatcp!("DELETE FROM \"", meta::OUTBOX, "\" WHERE \"id\" = ?1"),
                    [item.id],
                )?;
                let probe = Probe::of(&tx, table, server.entity_id)?;
                let mut known = probe.compare(server);
                // Fresh: a first delivery (`attempt_count` counts this one) of an update or
                // a delete, answered with the record as it is now (a retry, or a change
                // sent again after a restore, may be answered from its key, with the
                // record as it was then). A create's answer is not compared: a create
                // begins a life of the record (after a delete, say), and one sent again
                // from the device's copy carries what it held.
                let fresh = item.attempt_count == 1 && item.op != MutationOp::Create;
                let lacks = fresh && note_current(&tx, server)?;
                // Whatever answer a retry gets (the record as it is now, or as it was
                // when its first delivery applied), within one history a version number
                // has one commit time: the number the store holds under another time
                // names a restore as surely as in a first answer (simulation seed 36913:
                // a retry whose first delivery the restore lost applied again and took
                // the number of an acknowledged like the restore lost too). An older
                // number in a retry's answer is no sign: it may be the record as it was.
                let reissued = item.op != MutationOp::Create
                    && known == Known::OtherHistory
                    && probe.known_version() == Some(server.version);
                if lacks || ((fresh || reissued) && known == Known::OtherHistory) {
                    // A later version lacking contributions the server held (PROTOCOL.md
                    // SUM-4), or, in an answer that is the record as it is now, another
                    // version under a number the store knows (PUSH-2): the server lost
                    // what the store saw, and a restart that names a restore follows,
                    // which sends it again (simulation seed 29539: the same version
                    // number on the restored server, after the pull that would have
                    // shown the first one failed).
                    suspect_restore_everywhere(&tx)?;
                    if !lacks {
                        replace_dots(&tx, server)?;
                    }
                    known = Known::OtherHistory;
                }
                if is_check(item) {
                    take_checked(&tx, table, server, known)?;
                } else {
                    if known != Known::Same {
                        record_own_write(&tx, server, fresh)?;
                    }
                    rebase_row(&tx, table, server)?;
                }
                if awaited {
                    // The record is on the server again: another device created it
                    // again first. This item (the record's check, or one queued before
                    // it) is in; the logged changes go next (before this one is logged).
                    self.replay_after_check(&tx, server)?;
                }
                if item.op == MutationOp::Delete {
                    super::acklog::note_acknowledged_delete(
                        &tx,
                        &item.entity_type,
                        item.entity_id,
                    )?;
                } else if !is_check(item) {
                    self.log_acknowledged(&tx, item, server)?;
                }
                ItemOutcome::Applied
            }
            MutationResult::Rejected { problem, .. }
                if problem.problem_type.ends_with("/unknown-record")
                    && item.op != MutationOp::Create =>
            {
                // Created again from the device's copy, which holds the logged changes.
                self.recreate_lost(&tx, table, item)?
            }
            MutationResult::Rejected { problem, .. } => {
                tx.execute(
                    concatcp!(
                        "UPDATE \"",
                        meta::OUTBOX,
                        "\" SET \"status\" = 'dead', \"last_error\" = ?1 WHERE \"id\" = ?2"
                    ),
                    params![format!("rejected by the server: {problem}"), item.id],
                )?;
                set_row_meta(&tx, table, item.entity_id, "failed", None)?;
                ItemOutcome::Dead(problem.to_string())
            }
            MutationResult::Conflict { server, fields, .. } => {
                if server.deleted {
                    let known = Probe::of(&tx, table, server.entity_id)?.compare(server);
                    delete_superseded(&tx, &table.entity.name, item)?;
                    if is_check(item) {
                        // Also a tombstone (simulation seed 34751).
                        take_checked(&tx, table, server, known)?;
                    } else {
                        rebase_row(&tx, table, server)?;
                    }
                    ItemOutcome::Superseded(format!(
                        "the {} was deleted on the server; delete wins over a concurrent edit",
                        table.entity.name
                    ))
                } else {
                    self.merge_conflict(&tx, table, item, server, fields)?
                }
            }
        };
        let live_after = is_live(&tx, table, item.entity_id)?;
        tx.commit()?;
        drop(conn);
        match ChangeKind::of(live_before, live_after) {
            Some(change) => self.notify(StoreEvent::Changed {
                entity: item.entity_type.clone(),
                id: item.entity_id,
                change,
                origin: ChangeOrigin::Remote,
            }),
            None => self.notify_status(),
        }
        Ok(outcome)
    }

    /// Turns outbox item `id` into a create with `payload`, under a new key, to be sent
    /// afresh (its base version stays: see `recreate_lost`).
    ///
    /// `carried`: the item whose dot the create keeps (see [`LocalStore::dotted`]), for
    /// a create that holds that item's change: if its first delivery was applied before
    /// the server lost the record, and another device sent the record again since, the
    /// server tells from the dot that the create is in the record already (PROTOCOL.md
    /// SUM-2), rather than taking it for a twin and counting its `sum` deltas again.
    pub(crate) fn rewrite_as_create(
        &self,
        tx: &Connection,
        id: i64,
        payload: CreatePayloadOwned,
        carried: Option<&OutboxItem>,
    ) -> Result<(), StoreError> {
        let key = self.new_key();
        let mut payload = serde_json::to_value(&payload).expect("JSON serialises");
        if let (Some(dot), Some(p)) = (
            carried.and_then(|i| i.payload.get(DOT_MEMBER)),
            payload.as_object_mut(),
        ) {
            p.insert(DOT_MEMBER.into(), dot.clone());
        }
        if let Some(item) = carried {
            payload = carrying(payload, item);
        }
        tx.execute(
            concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"op\" = 'create', \"payload\" = ?1, \"idempotency_key\" = ?2, \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL, \"last_error\" = NULL WHERE \"id\" = ?3"),
            params![to_json_string(&payload), key, id],
        )?;
        Ok(())
    }

    /// The server does not know a record this item edits or deletes, and the record was
    /// not collected (that answer is a tombstone): the server lost it, restored from a
    /// backup taken before the record reached it. An update becomes a create of the
    /// record as this device holds it, in the item's place, under a new key; a delete is
    /// done (there is nothing left to delete).
    pub(crate) fn recreate_lost(
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
                let payload = carrying(item.payload.clone(), item);
                tx.execute(
                    concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"idempotency_key\" = ?1, \"payload\" = ?2, \"base_version\" = NULL, \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL, \"last_error\" = NULL WHERE \"id\" = ?3"),
                    params![self.new_key(), to_json_string(&payload), item.id],
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
                // The server's copy this device holds counts this item already: its
                // first delivery was applied, its answer lost, and the record pulled
                // since with the item's dot in it. The record as the item left it is
                // that copy, not the copy plus the item's `sum` deltas again (simulation
                // seed 64302 of the runs before transactions).
                let dots = stored_dots(tx, &table.entity.name, id)?;
                let gaps = stored_dot_gaps(tx, &table.entity.name, id)?;
                let mut record = record;
                if let Some(b) = &base
                    && dot_included(&item.payload, dots.as_ref(), gaps.as_ref())
                {
                    for f in table
                        .entity
                        .synced_fields()
                        .filter(|f| f.merge == sync_model::MergeStrategy::Sum)
                    {
                        if let Some(v) = b.record.get(&f.name) {
                            record.insert(f.name.clone(), v.clone());
                        }
                    }
                }
                // The values of open conflicts are the ones the user sees: the server's
                // side of them is gone with the record, so the device's stand alone (a
                // device that still holds the other side sends it as a twin create, and
                // the conflict comes back; simulation seed 29137).
                for (field, local) in conflict_locals(tx, &table.entity.name, id)? {
                    record.insert(field, local);
                }
                let payload = CreatePayloadOwned {
                    record,
                    clocks,
                    resend_base: base
                        .as_ref()
                        .and_then(|b| resend_base(&b.record, &b.clocks)),
                    dots,
                    dot_gaps: gaps,
                };
                // The create keeps the item's base version: a server that deleted the
                // record since answers with the tombstone (delete wins).
                self.rewrite_as_create(tx, item.id, payload, Some(item))?;
                // From here the record is new to the server: no base, no version.
                delete_base(tx, table.entity, &id.to_string())?;
                unversion_row(tx, table.entity, &id.to_string())?;
                Ok(ItemOutcome::Merged)
            }
            (MutationOp::Delete, Some(_)) if created_before => {
                // An earlier item of this push was turned into the create already: the
                // delete goes after it, under a new key (as the update above).
                let payload = carrying(item.payload.clone(), item);
                tx.execute(
                    concatcp!("UPDATE \"", meta::OUTBOX, "\" SET \"idempotency_key\" = ?1, \"payload\" = ?2, \"base_version\" = NULL, \"status\" = 'pending', \"attempt_count\" = 0, \"next_attempt_at\" = NULL, \"last_error\" = NULL WHERE \"id\" = ?3"),
                    params![self.new_key(), to_json_string(&payload), item.id],
                )?;
                Ok(ItemOutcome::Merged)
            }
            // The row is this delete's tombstone (a create queued after the delete makes
            // it live again: that create sends the record, and a delete appended behind
            // it would delete the user's recreate).
            (MutationOp::Delete, Some(row))
                if row.deleted && (item.base_version.is_some() || row.version.is_some()) =>
            {
                // A delete of a record the server lost (a restore): other devices that
                // hold the record will send it again, so the server must learn it is
                // deleted. The record as the device last held it is created (in the
                // item's place, with the item's base version) and deleted after it.
                // A delete without a base version (queued on an edit made while the
                // record's create was on its way) counts too when the server had
                // acknowledged the record: the row holds a version, which the create
                // names (simulation seed 19720).
                let base = read_base(tx, table, id)?;
                let payload = CreatePayloadOwned {
                    record: row.record.clone(),
                    clocks: serde_json::from_str(&row.clocks).unwrap_or(Json::Null),
                    resend_base: base
                        .as_ref()
                        .and_then(|b| resend_base(&b.record, &b.clocks)),
                    dots: stored_dots(tx, &table.entity.name, id)?,
                    dot_gaps: stored_dot_gaps(tx, &table.entity.name, id)?,
                };
                self.rewrite_as_create(tx, item.id, payload, None)?;
                if item.base_version.is_none() {
                    tx.execute(
                        concatcp!(
                            "UPDATE \"",
                            meta::OUTBOX,
                            "\" SET \"base_version\" = ?1 WHERE \"id\" = ?2"
                        ),
                        params![row.version, item.id],
                    )?;
                }
                let delete = to_json_string(&carrying(item.payload.clone(), item));
                self.enqueue(tx, table.entity, id, MutationOp::Delete, &delete, None)?;
                delete_base(tx, table.entity, &id.to_string())?;
                unversion_row(tx, table.entity, &id.to_string())?;
                Ok(ItemOutcome::Merged)
            }
            _ => {
                // A delete of a record the server does not have (or an update of one
                // deleted here since): nothing to send.
                tx.execute(
                    concatcp!("DELETE FROM \"", meta::OUTBOX, "\" WHERE \"id\" = ?1"),
                    [item.id],
                )?;
                if pending_for(tx, &table.entity.name, id)?.is_empty() {
                    set_row_meta(tx, table, id, "clean", None)?;
                }
                Ok(ItemOutcome::Applied)
            }
        }
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

    /// A cycle through a record with a delete and a recreate queued (a `history`
    /// entity keeps every item): the record's items keep their order, whatever edge
    /// the search meets the cycle by.
    #[test]
    fn a_cycle_never_reorders_the_items_of_one_record() {
        let items = [
            item(1, "x", 1, MutationOp::Create),
            item(2, "y", 2, MutationOp::Create),
            item(3, "x", 1, MutationOp::Delete),
            item(4, "x", 1, MutationOp::Create),
        ];
        let refs: [&[(&str, u128)]; 4] = [&[("y", 2)], &[("x", 1)], &[], &[("y", 2)]];
        for max in [1, 2, 3, 100] {
            let (chosen, notes) = plan(&items, &refs, max);
            let xs: Vec<i64> = chosen.iter().copied().filter(|&i| i != 2).collect();
            assert!(xs.windows(2).all(|w| w[0] < w[1]), "{chosen:?}");
            assert!(xs.first().is_none_or(|&i| i == 1), "{chosen:?}");
            assert!(notes.iter().any(|(_, n)| n.contains("cycle")), "{notes:?}");
            if max == 100 {
                assert_eq!(chosen.len(), 4, "{chosen:?}");
            }
        }
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

    /// `item` written in transaction `group`.
    fn in_txn(mut i: OutboxItem, group: &str) -> OutboxItem {
        i.payload = serde_json::json!({ TXN_MEMBER: group });
        i
    }

    #[test]
    fn a_transaction_is_never_split_across_batches() {
        // 1 alone, then a transaction of 2, 3, 4, then 5 alone.
        let items = [
            item(1, "a", 1, MutationOp::Create),
            in_txn(item(2, "a", 2, MutationOp::Create), "t"),
            in_txn(item(3, "a", 3, MutationOp::Create), "t"),
            in_txn(item(4, "a", 4, MutationOp::Create), "t"),
            item(5, "a", 5, MutationOp::Create),
        ];
        let refs: [&[(&str, u128)]; 5] = [&[]; 5];
        // A limit inside the transaction ends the batch before it...
        assert_eq!(plan(&items, &refs, 2).0, [1]);
        assert_eq!(plan(&items, &refs, 3).0, [1]);
        assert_eq!(plan(&items, &refs, 4).0, [1, 2, 3, 4]);
        assert_eq!(plan(&items, &refs, 100).0, [1, 2, 3, 4, 5]);
        // ...and a transaction larger than a batch goes in a push of its own.
        assert_eq!(plan(&items[1..], &refs, 1).0, [2, 3, 4]);
        assert_eq!(plan(&items[1..], &refs, 2).0, [2, 3, 4]);
    }

    #[test]
    fn a_transaction_waits_whole_while_one_of_its_items_waits() {
        let mut dead = item(1, "a", 1, MutationOp::Create);
        dead.status = OutboxStatus::Dead;
        dead.last_error = Some("rejected".into());
        let items = [
            dead,
            // The transaction: an update behind the dead create, and a create of its own.
            in_txn(item(2, "a", 1, MutationOp::Update), "t"),
            in_txn(item(3, "b", 3, MutationOp::Create), "t"),
            // Needs the transaction's create first.
            item(4, "c", 4, MutationOp::Create),
            item(5, "d", 5, MutationOp::Create),
        ];
        let refs: [&[(&str, u128)]; 5] = [&[], &[], &[], &[("b", 3)], &[]];
        let (chosen, notes) = plan(&items, &refs, 100);
        assert_eq!(chosen, [5]);
        let note = |id: i64| {
            notes
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, n)| n.as_str())
        };
        assert!(
            note(3).is_some_and(
                |n| n.contains("another change of its transaction waits") && n.contains("dead")
            ),
            "{notes:?}"
        );
        assert!(
            note(4).is_some_and(|n| n.contains("waiting for the create of b")),
            "{notes:?}"
        );
    }

    #[test]
    fn a_transaction_goes_after_what_its_items_need() {
        // The transaction's task references a project queued alone, after it.
        let items = [
            in_txn(item(1, "task", 1, MutationOp::Create), "t"),
            in_txn(item(2, "comment", 2, MutationOp::Create), "t"),
            item(3, "project", 3, MutationOp::Create),
        ];
        let refs: [&[(&str, u128)]; 3] = [&[("project", 3)], &[("task", 1)], &[]];
        assert_eq!(plan(&items, &refs, 100).0, [3, 1, 2]);
        assert_eq!(plan(&items, &refs, 1).0, [3]);
        assert_eq!(plan(&items, &refs, 2).0, [3]);
        assert_eq!(plan(&items[..2], &refs, 1).0, [1, 2]);
    }
}
