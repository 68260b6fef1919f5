//! The sync protocol's messages: `POST /push`, `GET /changes`, `GET /snapshot`.
//!
//! These types are the contract between clients and servers; `sync-server` uses them
//! as they are, and their JSON Schemas (schemars, draft 2020-12) are published with the
//! OpenAPI document. Records travel as JSON objects keyed by wire names; patches as the
//! entity's generated patch type (see [`crate::ops`] for the operations).

mod decode;
pub use decode::{BodyError, decode_push_request};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use uuid::Uuid;

use crate::hlc::Hlc;
use crate::syncable::Record;

/// The request header carrying the model fingerprint the client was built with.
pub const FINGERPRINT_HEADER: &str = "sync-model-fingerprint";
/// The header carrying the sync protocol version a party speaks ([`PROTOCOL_VERSION`]):
/// on requests, the client's runtime (a server adds what a client of that version reads,
/// such as [`ServerRecord::dots`]); on responses, the server's (a client sends what a
/// server of that version accepts, such as [`Mutation::dot`]). A party that does not
/// send it speaks 1.2.0 or earlier.
pub const PROTOCOL_HEADER: &str = "sync-protocol";
/// The response header carrying the request id (also in the server's logs).
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The media type of error bodies (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything but the unreserved characters of RFC 3986 (section 2.3) is escaped in a
/// query value.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The request target of `GET /changes`: `/changes?limit=<limit>[&since=<token>]`, the
/// token percent-encoded (RFC 3986). The reference server's tokens are URL-safe
/// (`t2.<seq>.<tag>`), but a server may mint others: the client and the conformance
/// checker both build the target here.
pub fn changes_target(since: Option<&str>, limit: u32) -> String {
    match since {
        Some(s) => format!(
            "/changes?limit={limit}&since={}",
            percent_encoding::utf8_percent_encode(s, UNRESERVED)
        ),
        None => format!("/changes?limit={limit}"),
    }
}

/// The request target of `GET /snapshot`: `/snapshot?limit=<limit>[&cursor=<cursor>]`,
/// the cursor percent-encoded (see [`changes_target`]).
pub fn snapshot_target(cursor: Option<&str>, limit: u32) -> String {
    match cursor {
        Some(c) => format!(
            "/snapshot?limit={limit}&cursor={}",
            percent_encoding::utf8_percent_encode(c, UNRESERVED)
        ),
        None => format!("/snapshot?limit={limit}"),
    }
}

/// The path and query of `GET /snapshot` of one entity's records (`entity`, its wire
/// name), continuing at `cursor`.
pub fn entity_snapshot_target(entity: &str, cursor: Option<&str>, limit: u32) -> String {
    format!(
        "{}&entity={}",
        snapshot_target(cursor, limit),
        percent_encoding::utf8_percent_encode(entity, UNRESERVED)
    )
}

/// `POST /push`: an ordered batch of mutations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// Applied in order; each one independently (a rejected mutation does not undo the
    /// ones before it), except those of one [`Mutation::transaction`], which are applied
    /// all or none (PROTOCOL.md TXN-1).
    pub mutations: Vec<Mutation>,
}

/// What a mutation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MutationOp {
    /// A new record (or a record recreated after a delete): `record` and `clocks`.
    Create,
    /// A field-level patch: `patch`.
    Update,
    /// A tombstone: `hlc`.
    Delete,
}

impl MutationOp {
    /// The wire name: `create`, `update` or `delete` (also the client outbox's column
    /// value).
    pub fn as_str(self) -> &'static str {
        match self {
            MutationOp::Create => "create",
            MutationOp::Update => "update",
            MutationOp::Delete => "delete",
        }
    }

    /// The operation of a wire name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "create" => MutationOp::Create,
            "update" => MutationOp::Update,
            "delete" => MutationOp::Delete,
            _ => return None,
        })
    }
}

/// One change made offline by a client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mutation {
    /// Unique per mutation; a retry sends the same key and the same body, and the server
    /// answers with the stored result. 1 to [`MAX_IDEMPOTENCY_KEY_CHARS`] characters.
    #[schemars(length(min = 1, max = 255))]
    pub idempotency_key: String,
    /// The entity's wire name.
    pub entity_type: String,
    /// The record's id.
    pub entity_id: Uuid,
    /// What to do.
    pub op: MutationOp,
    /// The server version the client's change was made against (`null` for a record the
    /// server has never acknowledged).
    #[serde(default)]
    pub base_version: Option<i64>,
    /// `create`: the whole record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Record>,
    /// `create`: the per-field clocks of the record's `lww` fields.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clocks: Option<Json>,
    /// `update`: the entity's patch (one operation per changed field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<Json>,
    /// `delete`: when the record was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlc: Option<Hlc>,
    /// `create` and `update` of an entity with `sum` fields: the mutation's [`Dot`],
    /// which names its contribution to the record's sums (PROTOCOL.md SUM-2). Sent only
    /// to servers of protocol 1.3.0 or later; not part of the idempotency hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot: Option<Dot>,
    /// `create` of a record the server lost (sent again from the device's copy): the
    /// [`Dots`] of the contributions the record's sums already include, as the server
    /// last gave them (PROTOCOL.md SUM-2). Not part of the idempotency hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dots: Option<Dots>,
    /// With [`Mutation::dots`]: the contributions below them the record lacks, as the
    /// server last gave them ([`DotGaps`], PROTOCOL.md SUM-3). Sent only to servers of
    /// protocol 1.3.2 or later; not part of the idempotency hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot_gaps: Option<DotGaps>,
    /// The idempotency keys of earlier mutations of this record whose change this one
    /// carries (at most [`MAX_REPLACED_KEYS`]): each was answered `conflict` or rejected
    /// as `unknown-record`, so nothing of it applied, and the client sends its change
    /// again here, merged with the server's record or as a create of a record the server
    /// lost. Once this mutation is applied, a retry of any of them is answered with this
    /// one's result (PROTOCOL.md IDEM-6): a device restored from a backup of its own
    /// database that sends one of them again does not merge it a second time. Sent only
    /// to servers of protocol 1.3.1 or later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<Vec<String>>,
    /// The local transaction this mutation was committed in (1 to
    /// [`MAX_TRANSACTION_ID_CHARS`] characters, opaque): the mutations of a push from the
    /// first to the last that name the same transaction (with what lies between them, the
    /// transactions overlapping them and the later mutations of their records: a unit,
    /// [`transaction_units`]) are applied all or none (PROTOCOL.md TXN-1). If
    /// one of them is answered `conflict` or rejected, nothing of the others is kept, and
    /// each of them is rejected as [`TRANSACTION_ABORTED`]. Sent only to servers of protocol
    /// 1.4.0 or later ([`TRANSACTIONS_SINCE`]); not part of the idempotency hash (a
    /// client may send a transaction too large for one push in parts, without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub transaction: Option<String>,
}

/// The units of a push that a server of protocol 1.4.0 or later applies all or none
/// (PROTOCOL.md TXN-1), as index ranges `(first, last)` into `mutations`, in order and
/// disjoint: from the first to the last mutation of a transaction of two or more,
/// widened to every such range that overlaps it and to the last mutation of every
/// record a mutation in it names (so that a record's later mutation never applies
/// ahead of an earlier one the unit's rollback undid: simulation seed 17973). A
/// mutation outside every unit (of no transaction, or of a transaction of one) applies
/// on its own.
pub fn transaction_units(mutations: &[Mutation]) -> Vec<(usize, usize)> {
    use std::collections::HashMap;
    let mut span: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut last_of_record: HashMap<(&str, Uuid), usize> = HashMap::new();
    for (n, m) in mutations.iter().enumerate() {
        if let Some(t) = m.transaction.as_deref() {
            span.entry(t).or_insert((n, n)).1 = n;
        }
        last_of_record.insert((m.entity_type.as_str(), m.entity_id), n);
    }
    // The last mutation of each transaction of two or more, by its first.
    let mut ends_from: HashMap<usize, usize> = HashMap::new();
    for (first, last) in span.into_values().filter(|(a, b)| a < b) {
        let end = ends_from.entry(first).or_insert(last);
        *end = (*end).max(last);
    }
    let mut units = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for (k, m) in mutations.iter().enumerate() {
        if let Some(unit) = current
            && k > unit.1
        {
            units.push(unit);
            current = None;
        }
        let opens = ends_from.get(&k).copied();
        current = match (current, opens) {
            (None, Some(end)) => Some((k, end)),
            (Some((a, b)), end) => Some((a, b.max(end.unwrap_or(b)))),
            (None, None) => None,
        };
        if let Some((_, b)) = &mut current {
            *b = (*b).max(last_of_record[&(m.entity_type.as_str(), m.entity_id)]);
        }
    }
    units.extend(current);
    units
}

/// The longest [`Mutation::transaction`], in characters (the client this toolkit ships
/// sends UUIDs, 36 characters).
pub const MAX_TRANSACTION_ID_CHARS: usize = 64;

/// The problem type (`https://syncgen.dev/problems/transaction-aborted`, status 409) of a
/// mutation not applied because another mutation of its transaction was answered
/// `conflict` or rejected (PROTOCOL.md TXN-1). Its `detail` names that mutation's key.
/// The answer is not stored under the mutation's key: sent again, it is applied afresh.
pub const TRANSACTION_ABORTED: &str = "transaction-aborted";

/// The most keys a mutation's [`Mutation::replaces`] may hold (more is that mutation's
/// 422): an item answered `conflict` again and again carries one more each time.
pub const MAX_REPLACED_KEYS: usize = 64;

/// A mutation's contribution to a record's `sum` fields: the `seq`-th mutation sent by
/// one session of one device's store (`session`: 16 lowercase hex digits, drawn at
/// random each time the store is opened; `seq`: from 1, increasing in queue order).
///
/// A server applies a mutation's `sum` operations only if the record's dots (`Dots`) do
/// not include its dot already, and then adds it to them; so a retry whose first delivery
/// reached the record by another way (another device sending the record again after a
/// restore lost it) counts once. A new session per opened store keeps a device whose
/// database was restored from a backup from reusing a dot (PROTOCOL.md SUM-2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dot {
    /// The store session: 16 lowercase hex digits.
    #[schemars(regex(pattern = r"^[0-9a-f]{16}$"))]
    pub session: String,
    /// The mutation's number within the session, from 1.
    #[schemars(range(min = 1))]
    pub seq: u64,
    /// The number of the same session's previous dot of the same record (0 for its
    /// first), below `seq` (protocol 1.3.2): the session made no contribution to the
    /// record numbered between the two. A server whose record includes less of the
    /// session than `prev` keeps the numbers it lacks as a gap (`dot_gaps`), so that a
    /// contribution a restore lost is counted when it is sent again, even after a later
    /// one of the same session (PROTOCOL.md SUM-3). Left out, the dot covers `seq` alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub prev: Option<u64>,
}

/// The contributions a record's `sum` fields include: the highest [`Dot::seq`] applied
/// per session. Sessions send their mutations of one record in order (a merge after a
/// conflict, which keeps the conflicted mutation's dot, lies in a gap until it comes),
/// so every dot of a session up to that number is included, except those its
/// [`DotGaps`] name (PROTOCOL.md SUM-3).
pub type Dots = std::collections::BTreeMap<String, u64>;

/// The contributions below a session's number in [`Dots`] that a record does not include
/// (PROTOCOL.md SUM-3): per session, sorted, disjoint and non-adjacent ranges
/// `[first, last]` of dot numbers, `1 <= first <= last <` the session's number, at most
/// [`MAX_DOT_GAP_RANGES`]. A record has gaps after a restore lost some of a session's
/// contributions and a later one of the same session reached it first, and, harmlessly,
/// after a device drew a dot it never sent (a transaction that did not commit, an edit
/// discarded while dead).
pub type DotGaps = std::collections::BTreeMap<String, Vec<[u64; 2]>>;

/// The most gap ranges a record keeps per session (more in a mutation's `dot_gaps` is its
/// 422). Past it a server forgets the lowest: a contribution in it, sent again, is then
/// taken for held (lost, never counted twice).
pub const MAX_DOT_GAP_RANGES: usize = 256;

impl Dot {
    /// Whether `dots` include this contribution (ignoring gaps: see [`Dot::included`]).
    pub fn included_in(&self, dots: &Dots) -> bool {
        self.included(dots, None)
    }

    /// Whether a record with `dots` and `gaps` includes this contribution: the session's
    /// number is at least this dot's, and no gap holds it.
    pub fn included(&self, dots: &Dots, gaps: Option<&DotGaps>) -> bool {
        dots.get(&self.session).is_some_and(|&seq| seq >= self.seq)
            && !gaps
                .and_then(|g| g.get(&self.session))
                .is_some_and(|ranges| ranges.iter().any(|[a, b]| (*a..=*b).contains(&self.seq)))
    }

    /// Adds this contribution to `dots`, ignoring gaps (see [`Dot::add`]).
    pub fn add_to(&self, dots: &mut Dots) {
        let seq = dots.entry(self.session.clone()).or_default();
        *seq = (*seq).max(self.seq);
    }

    /// Adds this contribution to a record's `dots` and `gaps`. The numbers from
    /// [`Dot::prev`] (exclusive) to `seq` are the session's, and none but `seq` is a
    /// contribution to the record: they leave the gaps. If `prev` is above the session's
    /// number in `dots`, the numbers between (the record lacks them) become a gap.
    pub fn add(&self, dots: &mut Dots, gaps: &mut DotGaps) {
        let cur = dots.get(&self.session).copied().unwrap_or(0);
        let from = self
            .prev
            .map_or(self.seq, |p| p.saturating_add(1))
            .min(self.seq);
        if let Some(ranges) = gaps.get_mut(&self.session) {
            *ranges = subtract_range(ranges, from, self.seq);
            if ranges.is_empty() {
                gaps.remove(&self.session);
            }
        }
        if self.seq > cur {
            if let Some(p) = self.prev.filter(|&p| p > cur && p < self.seq) {
                let ranges = gaps.entry(self.session.clone()).or_default();
                ranges.push([cur + 1, p]);
                *ranges = normalise(std::mem::take(ranges));
                let excess = ranges.len().saturating_sub(MAX_DOT_GAP_RANGES);
                ranges.drain(..excess);
            }
            dots.insert(self.session.clone(), self.seq);
        }
    }
}

/// `into` with every contribution of `from` (per session, the higher number), ignoring
/// gaps (see [`merge_dot_sets`]).
pub fn merge_dots(into: &mut Dots, from: &Dots) {
    for (session, &seq) in from {
        let s = into.entry(session.clone()).or_default();
        *s = (*s).max(seq);
    }
}

/// `into` (with `into_gaps`) with every contribution of `from` (with `from_gaps`): per
/// session, the higher number, and as gaps the numbers neither side includes.
pub fn merge_dot_sets(into: &mut Dots, into_gaps: &mut DotGaps, from: &Dots, from_gaps: &DotGaps) {
    let empty = Vec::new();
    for (session, &seq) in from {
        let mine = into.get(session).copied().unwrap_or(0);
        let top = mine.max(seq);
        // What each side lacks up to `top`.
        let lacks = |max: u64, gaps: &Vec<[u64; 2]>| {
            let mut v = gaps.clone();
            if max < top {
                v.push([max + 1, top]);
            }
            normalise(v)
        };
        let a = lacks(mine, into_gaps.get(session).unwrap_or(&empty));
        let b = lacks(seq, from_gaps.get(session).unwrap_or(&empty));
        let both: Vec<[u64; 2]> = a
            .iter()
            .flat_map(|[a0, a1]| {
                b.iter().filter_map(move |[b0, b1]| {
                    let (lo, hi) = ((*a0).max(*b0), (*a1).min(*b1));
                    (lo <= hi).then_some([lo, hi])
                })
            })
            .filter(|[_, hi]| *hi < top)
            .collect();
        into.insert(session.clone(), top);
        if both.is_empty() {
            into_gaps.remove(session);
        } else {
            let mut both = normalise(both);
            let excess = both.len().saturating_sub(MAX_DOT_GAP_RANGES);
            both.drain(..excess);
            into_gaps.insert(session.clone(), both);
        }
    }
}

/// Whether `gaps` are well formed for `dots` (see [`DotGaps`]).
///
/// # Errors
/// The reason, if a session of `gaps` is not in `dots`, or its ranges are not sorted,
/// apart (neither overlapping nor adjacent) and within 1 to its number in `dots` less one.
pub fn check_dot_gaps(dots: &Dots, gaps: &DotGaps) -> Result<(), String> {
    for (session, ranges) in gaps {
        let Some(&max) = dots.get(session) else {
            return Err(format!(
                "`dot_gaps` names session {session}, which `dots` lacks"
            ));
        };
        if ranges.is_empty() || ranges.len() > MAX_DOT_GAP_RANGES {
            return Err(format!(
                "`dot_gaps` of session {session}: 1 to {MAX_DOT_GAP_RANGES} ranges (a session without gaps is left out)"
            ));
        }
        let mut last = 0u64;
        for (i, &[first, end]) in ranges.iter().enumerate() {
            if first == 0 || first > end || end >= max || (i > 0 && first <= last + 1) {
                return Err(format!(
                    "`dot_gaps` of session {session}: ranges must be sorted, apart, and within 1..{max}"
                ));
            }
            last = end;
        }
    }
    Ok(())
}

/// Whether a record with `dots` and `gaps` includes every contribution that one with
/// `of` and `of_gaps` includes (PROTOCOL.md SUM-3): for each session of `of`, its number
/// in `dots` is at least as high, and every number `gaps` hold up to it is one `of_gaps`
/// hold too.
pub fn dot_sets_include(dots: &Dots, gaps: Option<&DotGaps>, of: &Dots, of_gaps: &DotGaps) -> bool {
    of.iter().all(|(session, &seq)| {
        let of_lacks = of_gaps.get(session).map(Vec::as_slice).unwrap_or_default();
        dots.get(session).is_some_and(|&s| s >= seq)
            && gaps.and_then(|g| g.get(session)).is_none_or(|lacks| {
                lacks
                    .iter()
                    .all(|&[a, b]| a > seq || range_covered([a, b.min(seq)], of_lacks))
            })
    })
}

/// Whether every number of `range` (`[first, last]`) lies in one of `by` (sorted,
/// disjoint ranges, as [`DotGaps`] holds them).
pub fn range_covered(range: [u64; 2], by: &[[u64; 2]]) -> bool {
    let [mut next, last] = range;
    for &[a, b] in by {
        if a > next {
            return false;
        }
        if b >= next {
            if b >= last {
                return true;
            }
            next = b + 1;
        }
    }
    next > last
}

/// Ranges sorted, with overlapping and adjacent ones joined.
fn normalise(mut v: Vec<[u64; 2]>) -> Vec<[u64; 2]> {
    v.sort_unstable();
    let mut out: Vec<[u64; 2]> = Vec::with_capacity(v.len());
    for [a, b] in v {
        match out.last_mut() {
            Some(last) if a <= last[1].saturating_add(1) => last[1] = last[1].max(b),
            _ => out.push([a, b]),
        }
    }
    out
}

/// `ranges` without the numbers `from..=to`.
fn subtract_range(ranges: &[[u64; 2]], from: u64, to: u64) -> Vec<[u64; 2]> {
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &[a, b] in ranges {
        if b < from || a > to {
            out.push([a, b]);
            continue;
        }
        if a < from {
            out.push([a, from - 1]);
        }
        if b > to {
            out.push([to + 1, b]);
        }
    }
    out
}

/// The protocol version that added [`Dot`]s, [`ServerRecord::dots`] and
/// [`SnapshotResponse::estimated_total`].
pub const DOTS_SINCE: (u64, u64, u64) = (1, 3, 0);

/// The protocol version whose servers take [`Mutation::replaces`].
pub const REPLACES_SINCE: (u64, u64, u64) = (1, 3, 1);

/// The protocol version that added [`Dot::prev`], [`DotGaps`], [`ServerRecord::dot_gaps`]
/// and [`Mutation::dot_gaps`] (PROTOCOL.md SUM-3).
pub const GAPS_SINCE: (u64, u64, u64) = (1, 3, 2);

/// The protocol version that added [`ServerRecord::life_since`] (PROTOCOL.md SUM-4).
pub const LIVES_SINCE: (u64, u64, u64) = (1, 3, 3);

/// The protocol version whose servers apply the mutations of one transaction all or
/// none ([`Mutation::transaction`], PROTOCOL.md TXN-1).
pub const TRANSACTIONS_SINCE: (u64, u64, u64) = (1, 4, 0);

/// Whether a protocol version (`major.minor[.patch]`, as [`PROTOCOL_HEADER`] carries it)
/// is `since` or later, for example [`DOTS_SINCE`]. A missing patch number counts as 0;
/// a version that does not parse (an empty header, `x`) speaks nothing added since 1.0.
pub fn speaks_at_least(version: &str, since: (u64, u64, u64)) -> bool {
    let mut parts = version.trim().split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten(), parts.next()) {
        (Some(major), Some(minor), None) => (major, minor, 0) >= since,
        (Some(major), Some(minor), Some(Some(patch))) => (major, minor, patch) >= since,
        _ => false,
    }
}

/// `POST /push` response: one result per mutation, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PushResponse {
    /// The results.
    pub results: Vec<MutationResult>,
}

/// The server's state of one record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerRecord {
    /// The entity's wire name.
    pub entity_type: String,
    /// The record's id.
    pub entity_id: Uuid,
    /// The record's version (optimistic-concurrency token), increasing with every change.
    pub version: i64,
    /// When the server last changed it (RFC 3339).
    pub server_updated_at: String,
    /// A tombstone.
    pub deleted: bool,
    /// The record's fields (also for a tombstone: its last values).
    pub record: Record,
    /// The per-field clocks of its `lww` fields.
    pub clocks: Json,
    /// The contributions its `sum` fields include (PROTOCOL.md SUM-2), for a client of
    /// protocol 1.3.0 or later ([`PROTOCOL_HEADER`]); left out when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dots: Option<Dots>,
    /// The contributions below its `dots` it lacks ([`DotGaps`], PROTOCOL.md SUM-3), for
    /// a client of protocol 1.3.2 or later; left out when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot_gaps: Option<DotGaps>,
    /// The version this life of the record began at, when it began with a create of an id
    /// the account had deleted (over its tombstone, or after the tombstone was
    /// collected): this life includes none of an earlier life's contributions
    /// (PROTOCOL.md SUM-4). Left out on a record's first life, and for clients of
    /// protocols before 1.3.3. A client that kept a record's dots tells by it a recreate
    /// (the dots start afresh) from a restore that lost contributions (the dots lack
    /// some within one life).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub life_since: Option<i64>,
}

/// What happened to one mutation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum MutationResult {
    /// Applied (or already applied: an idempotent replay). `server` is the record now.
    Applied {
        /// The mutation's key.
        idempotency_key: String,
        /// The record after the mutation.
        server: ServerRecord,
    },
    /// Not applied: `manual` fields changed on the server to other values than the
    /// mutation's base. The client merges with the server record and pushes again.
    Conflict {
        /// The mutation's key.
        idempotency_key: String,
        /// The server's record.
        server: ServerRecord,
        /// The conflicting fields' wire names.
        fields: Vec<String>,
    },
    /// Refused and never to be retried as is (invalid data, unknown entity, a key reused
    /// with another body).
    Rejected {
        /// The mutation's key.
        idempotency_key: String,
        /// Why.
        problem: Problem,
    },
}

impl MutationResult {
    /// The mutation's idempotency key.
    pub fn idempotency_key(&self) -> &str {
        match self {
            MutationResult::Applied {
                idempotency_key, ..
            }
            | MutationResult::Conflict {
                idempotency_key, ..
            }
            | MutationResult::Rejected {
                idempotency_key, ..
            } => idempotency_key,
        }
    }
}

/// `GET /changes` response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangesResponse {
    /// Records changed after the token, in commit order, each at its latest state
    /// (tombstones included).
    pub changes: Vec<ServerRecord>,
    /// The token to ask from next (opaque).
    pub next_token: String,
    /// More changes are waiting: ask again with `next_token`.
    pub has_more: bool,
}

/// `GET /snapshot` response: one page of the data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotResponse {
    /// Records of this page, tombstones included (so that a client holding a record
    /// deleted before the snapshot's token learns of the delete).
    pub records: Vec<ServerRecord>,
    /// The cursor of the next page, while `has_more`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// More pages follow.
    pub has_more: bool,
    /// The change token the snapshot is pinned to: once every page is read, continue with
    /// `GET /changes?since=token` with the last page's token. Every change after it is
    /// delivered there, every change before it is in the pages, none in both. A later
    /// page's token may differ from the first's and continue at the same place
    /// (PROTOCOL.md SNAP-1: the reference server's also names the newest change it saw).
    pub token: String,
    /// On the first page (no `cursor`): about how many records the whole snapshot holds,
    /// tombstones included, for a progress bar; an estimate (SNAP-3). For clients of
    /// protocol 1.3.0 or later ([`PROTOCOL_HEADER`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_total: Option<u64>,
}

/// An error body (RFC 9457, `application/problem+json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    /// A URI reference identifying the problem type.
    #[serde(rename = "type")]
    #[schemars(extend("format" = "uri-reference"))]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code (100 to 599).
    #[schemars(range(min = 100, max = 599))]
    pub status: u16,
    /// What happened in this occurrence, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request id of this occurrence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// A JSON Pointer (RFC 6901) to the member at fault, when one is: in a push result,
    /// into that result's mutation (`/record/priority`); in a problem response, into the
    /// request body (`/mutations/0/idempotency_key`). An extension member, as RFC 9457
    /// section 3.2 allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl Problem {
    /// A problem of a syncgen type (`https://syncgen.dev/problems/<kind>`).
    pub fn new(kind: &str, title: &str, status: u16, detail: impl Into<String>) -> Self {
        Problem {
            problem_type: format!("https://syncgen.dev/problems/{kind}"),
            title: title.to_string(),
            status,
            detail: Some(detail.into()),
            instance: None,
            pointer: None,
        }
    }

    /// The problem with [`Problem::pointer`] set.
    #[must_use]
    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }
}

/// The version of the sync protocol (the wire messages, their rules and the reference
/// server's behaviour the document describes), apart from any model's fingerprint: the
/// OpenAPI document gives it in `info.x-syncgen-protocol` and `GET /health` answers it.
/// Its changes are listed in `PROTOCOL.md` at the repository's root.
pub const PROTOCOL_VERSION: &str = "1.4.0";

/// The most mutations one `POST /push` may hold (`maxItems` of `PushRequest.mutations`
/// in the OpenAPI document); more is 413. A server may accept fewer per push, also with
/// 413; clients send at most their `batch_size` (100 by default).
pub const MAX_PUSH_MUTATIONS: usize = 500;

/// The reference server's default limit on a push body, in bytes (4 MiB); a larger body
/// is 413. A body limit is a deployment's choice, so the document states this default
/// in words rather than as a schema constraint.
pub const DEFAULT_MAX_PUSH_BODY_BYTES: usize = 4 << 20;

/// The most records a page of `GET /changes` or `GET /snapshot` may hold: the `limit`
/// query parameter is 1 to this. A server may serve fewer per page.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// The longest idempotency key a mutation may carry, in characters (keys are
/// UUIDs in the client this toolkit ships, 36 characters). At most 1,020 bytes in UTF-8,
/// within every supported database's index key limit (PostgreSQL's is about 2,700).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// The form of the reference server's change tokens, as the OpenAPI document gives it
/// (`since`): `t3.<seq>.<seen>.<tag>` or `t2.<seq>.<tag>` (sequence numbers of 1 to 18
/// digits, a tag of 16 hex digits), or the legacy `t1.<seq>`. `seen` is the newest change
/// the server had shown when it issued the token (PROTOCOL.md FEED-2; from protocol
/// 1.3.1). Clients treat tokens as opaque.
pub const CHANGE_TOKEN_PATTERN: &str = r"^(t1\.[0-9]{1,18}|t2\.[0-9]{1,18}\.[0-9a-fA-F]{16}|t3\.[0-9]{1,18}\.[0-9]{1,18}\.[0-9a-fA-F]{16})$";

/// The form of the reference server's snapshot cursors (`cursor`): the pinned token with
/// an `s` for its `t` (`s3.<seq>.<seen>.<tag>`, `s2.<seq>.<tag>` or legacy `s1.<seq>`),
/// the entity's index (1 to 9 digits), and the last id of the page (a hyphenated UUID,
/// empty at an entity's start).
pub const SNAPSHOT_CURSOR_PATTERN: &str = r"^(s1\.[0-9]{1,18}|s2\.[0-9]{1,18}\.[0-9a-fA-F]{16}|s3\.[0-9]{1,18}\.[0-9]{1,18}\.[0-9a-fA-F]{16})\.[0-9]{1,9}\.([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$";

/// A JSON Pointer (RFC 6901) from its reference tokens: `["record", "a/b"]` is
/// `/record/a~1b` (`~` is written `~0`, `/` is written `~1`).
pub fn json_pointer<I, S>(tokens: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = String::new();
    for t in tokens {
        out.push('/');
        out.push_str(&t.as_ref().replace('~', "~0").replace('/', "~1"));
    }
    out
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.title, self.status)?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_units_span_overlapping_transactions_and_later_edits_of_their_records() {
        let m = |t: Option<&str>, record: u128| Mutation {
            idempotency_key: "k".into(),
            entity_type: "task".into(),
            entity_id: Uuid::from_u128(record),
            op: MutationOp::Delete,
            base_version: None,
            record: None,
            clocks: None,
            patch: None,
            hlc: None,
            dot: None,
            dots: None,
            dot_gaps: None,
            replaces: None,
            transaction: t.map(str::to_string),
        };
        // T U - T U | V | W - W | X - X - Y - Y, every mutation of its own record.
        let layout = [
            Some("T"),
            Some("U"),
            None,
            Some("T"),
            Some("U"),
            Some("V"),
            Some("W"),
            None,
            Some("W"),
            Some("X"),
            None,
            Some("Y"),
            Some("X"),
            Some("Y"),
        ];
        let ms: Vec<Mutation> = layout
            .iter()
            .enumerate()
            .map(|(k, t)| m(*t, k as u128))
            .collect();
        assert_eq!(transaction_units(&ms), [(0, 4), (6, 8), (9, 13)]);
        assert!(transaction_units(&[m(Some("alone"), 1), m(None, 2)]).is_empty());
        // A later mutation of a record the unit names joins it, and so on from there.
        let ms = [
            m(Some("T"), 1),
            m(Some("T"), 2),
            m(None, 3),
            m(None, 2),
            m(None, 4),
            m(None, 3),
            m(None, 5),
        ];
        assert_eq!(transaction_units(&ms), [(0, 5)]);
    }

    #[test]
    fn json_pointers_escape_tilde_and_slash() {
        assert_eq!(
            json_pointer(["mutations", "0", "record"]),
            "/mutations/0/record"
        );
        assert_eq!(json_pointer(["a/b", "c~d"]), "/a~1b/c~0d");
        assert_eq!(json_pointer(Vec::<String>::new()), "");
    }

    #[test]
    fn what_a_version_added_from_that_version_on() {
        assert!(speaks_at_least("1.3.0", DOTS_SINCE));
        assert!(speaks_at_least("1.3", DOTS_SINCE));
        assert!(speaks_at_least("1.10.2", DOTS_SINCE));
        assert!(speaks_at_least("2.0.0", DOTS_SINCE));
        assert!(!speaks_at_least("1.2.0", DOTS_SINCE));
        assert!(!speaks_at_least("0.9", DOTS_SINCE));
        assert!(!speaks_at_least("x", DOTS_SINCE));
        assert!(!speaks_at_least("1.3.x", DOTS_SINCE));
        assert!(speaks_at_least(PROTOCOL_VERSION, DOTS_SINCE));
        assert!(speaks_at_least("1.3.1", REPLACES_SINCE));
        assert!(speaks_at_least("1.4", REPLACES_SINCE));
        assert!(!speaks_at_least("1.3", REPLACES_SINCE));
        assert!(!speaks_at_least("1.3.0", REPLACES_SINCE));
        assert!(speaks_at_least(PROTOCOL_VERSION, REPLACES_SINCE));
        assert!(speaks_at_least(PROTOCOL_VERSION, TRANSACTIONS_SINCE));
    }

    #[test]
    fn a_dot_is_included_up_to_its_sessions_number() {
        let d = |seq| Dot {
            session: "00000000000000aa".into(),
            seq,
            prev: None,
        };
        let mut dots = Dots::new();
        assert!(!d(1).included_in(&dots));
        d(3).add_to(&mut dots);
        d(2).add_to(&mut dots);
        assert_eq!(dots["00000000000000aa"], 3);
        assert!(d(3).included_in(&dots) && d(1).included_in(&dots));
        assert!(!d(4).included_in(&dots));
        let mut other = Dots::from([("00000000000000aa".into(), 5), ("b".into(), 1)]);
        merge_dots(&mut other, &dots);
        assert_eq!(other["00000000000000aa"], 5);
    }

    const S: &str = "00000000000000aa";

    fn dot(prev: u64, seq: u64) -> Dot {
        Dot {
            session: S.into(),
            seq,
            prev: Some(prev),
        }
    }

    /// The ARCHITECTURE.md example: a restored record holds the session up to 3; its
    /// item 8 (previous: 7) arrives before items 5 and 7, sent again.
    #[test]
    fn a_later_dot_arriving_first_leaves_a_gap_that_the_earlier_ones_fill() {
        let (mut dots, mut gaps) = (Dots::from([(S.into(), 3)]), DotGaps::new());
        dot(7, 8).add(&mut dots, &mut gaps);
        assert_eq!(dots[S], 8);
        assert_eq!(gaps[S], vec![[4, 7]]);
        assert!(dot(7, 8).included(&dots, Some(&gaps)));
        assert!(!dot(3, 5).included(&dots, Some(&gaps)));
        assert!(!dot(5, 7).included(&dots, Some(&gaps)));
        assert!(dot(0, 2).included(&dots, Some(&gaps)));
        check_dot_gaps(&dots, &gaps).unwrap();
        dot(3, 5).add(&mut dots, &mut gaps);
        assert_eq!(gaps[S], vec![[6, 7]]);
        assert!(dot(3, 5).included(&dots, Some(&gaps)));
        dot(5, 7).add(&mut dots, &mut gaps);
        assert!(gaps.is_empty(), "{gaps:?}");
        assert!(dot(5, 7).included(&dots, Some(&gaps)));
        // A dot in order leaves no gap; one without `prev` neither.
        dot(8, 12).add(&mut dots, &mut gaps);
        Dot {
            session: S.into(),
            seq: 20,
            prev: None,
        }
        .add(&mut dots, &mut gaps);
        assert!(gaps.is_empty() && dots[S] == 20);
    }

    #[test]
    fn merged_dot_sets_lack_only_what_both_lack() {
        let mut a = Dots::from([(S.into(), 10)]);
        let mut a_gaps = DotGaps::from([(S.into(), vec![[2, 4], [7, 8]])]);
        let b = Dots::from([(S.into(), 6), ("bb".into(), 2)]);
        let b_gaps = DotGaps::from([(S.into(), vec![[3, 5]])]);
        merge_dot_sets(&mut a, &mut a_gaps, &b, &b_gaps);
        assert_eq!((a[S], a["bb"]), (10, 2));
        assert_eq!(a_gaps[S], vec![[3, 4], [7, 8]]);
        check_dot_gaps(&a, &a_gaps).unwrap();
        // The other way round: what `b` lacks above its number counts as lacking.
        let mut b2 = b.clone();
        let mut b2_gaps = b_gaps.clone();
        merge_dot_sets(
            &mut b2,
            &mut b2_gaps,
            &Dots::from([(S.into(), 10)]),
            &DotGaps::from([(S.into(), vec![[2, 4], [7, 8]])]),
        );
        assert_eq!(b2_gaps[S], vec![[3, 4], [7, 8]]);
    }

    #[test]
    fn a_range_is_covered_only_by_ranges_holding_all_of_it() {
        let by = [[2, 4], [5, 9], [12, 12]];
        assert!(range_covered([2, 9], &by));
        assert!(range_covered([12, 12], &by));
        assert!(!range_covered([1, 3], &by));
        assert!(!range_covered([8, 12], &by));
        assert!(!range_covered([3, 3], &[]));
    }

    #[test]
    fn a_set_includes_another_when_it_reaches_further_and_lacks_nothing_the_other_has() {
        let dots =
            |v: &[(&str, u64)]| -> Dots { v.iter().map(|(s, n)| (s.to_string(), *n)).collect() };
        let gaps = |v: &[(&str, [u64; 2])]| -> DotGaps {
            let mut g = DotGaps::new();
            for (s, r) in v {
                g.entry(s.to_string()).or_default().push(*r);
            }
            g
        };
        let none = DotGaps::new();
        // Reaching further, no gaps: includes.
        assert!(dot_sets_include(
            &dots(&[("a", 5)]),
            None,
            &dots(&[("a", 3)]),
            &none
        ));
        // Short of a session's number, or without the session: lacks.
        assert!(!dot_sets_include(
            &dots(&[("a", 2)]),
            None,
            &dots(&[("a", 3)]),
            &none
        ));
        assert!(!dot_sets_include(
            &dots(&[("b", 9)]),
            None,
            &dots(&[("a", 1)]),
            &none
        ));
        // A gap over a number the other holds: lacks it.
        let g = gaps(&[("a", [2, 3])]);
        assert!(!dot_sets_include(
            &dots(&[("a", 5)]),
            Some(&g),
            &dots(&[("a", 3)]),
            &none
        ));
        // ... unless the other lacks it too, or the gap lies above the other's number.
        assert!(dot_sets_include(
            &dots(&[("a", 5)]),
            Some(&g),
            &dots(&[("a", 4)]),
            &gaps(&[("a", [1, 3])])
        ));
        assert!(dot_sets_include(
            &dots(&[("a", 5)]),
            Some(&g),
            &dots(&[("a", 1)]),
            &none
        ));
        // Nothing is included by everything.
        assert!(dot_sets_include(&Dots::new(), None, &Dots::new(), &none));
    }

    #[test]
    fn malformed_gaps_are_refused() {
        let dots = Dots::from([(S.into(), 10)]);
        for bad in [
            vec![[0, 2]],
            vec![[3, 2]],
            vec![[2, 10]],
            vec![[2, 4], [5, 6]],
            vec![[5, 6], [2, 3]],
        ] {
            assert!(
                check_dot_gaps(&dots, &DotGaps::from([(S.into(), bad.clone())])).is_err(),
                "{bad:?}"
            );
        }
        assert!(check_dot_gaps(&Dots::new(), &DotGaps::from([(S.into(), vec![[1, 1]])])).is_err());
        assert!(check_dot_gaps(&dots, &DotGaps::from([(S.into(), vec![])])).is_err());
        check_dot_gaps(&dots, &DotGaps::from([(S.into(), vec![[1, 1], [3, 9]])])).unwrap();
    }
}
