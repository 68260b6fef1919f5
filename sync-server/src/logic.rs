//! The protocol, written once for every database: push, changes, snapshot.
//!
//! # Change tokens never skip a late commit
//!
//! Every change to an account's data takes the next number of that account's counter
//! (`sync_accounts.last_seq`) and writes it to `sync_changes` in the same transaction.
//! The counter row is locked for the whole transaction (`SELECT ... FOR UPDATE` in
//! PostgreSQL; SQLite has one writer at a time), so the transactions of one account commit
//! in the order of their numbers: no change with a smaller number can become visible
//! after a larger one. A pull that read up to N has therefore seen every change <= N, and
//! the next pull from N misses nothing, however many servers share the database.
//!
//! # Snapshots are pinned
//!
//! The first snapshot page fixes a token T (the account's counter). Pages hold the
//! records (tombstones included, until collected) whose last change is <= T; a record changed after T is left out and comes from
//! `GET /changes?since=T` instead. So every change is delivered exactly once: in a page
//! if it is <= T, by `changes` if it is > T.

use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use sync_model::Entity;
use sync_runtime::protocol::{Mutation, MutationOp, MutationResult, Problem, ServerRecord};
use uuid::Uuid;

use sync_runtime::erased::PatchOutcome;
use sync_runtime::time;

use crate::db::{Arg, DbError, Tx, decode, encode, ph, q, sel};
use crate::registry;
use crate::{ServerError, State};

/// Idempotency keys in flight for longer than this are considered abandoned (the server
/// that held them died) and may be taken over.
const IN_FLIGHT_TIMEOUT_SECS: i64 = 60;

fn hash(m: &Mutation) -> String {
    let bytes = serde_json::to_vec(m).expect("mutations serialise");
    hex::encode(Sha256::digest(&bytes))
}

fn rejected(
    key: &str,
    status: u16,
    kind: &str,
    title: &str,
    detail: impl Into<String>,
) -> MutationResult {
    MutationResult::Rejected {
        idempotency_key: key.to_string(),
        problem: Problem::new(kind, title, status, detail),
    }
}

fn ts_type(d: sync_model::sql::Dialect) -> &'static str {
    sync_model::sql::scalar_type(sync_model::ScalarType::Timestamp, d)
}

/// The column type of sequence numbers and versions (`BIGINT`; SQLite's `INTEGER`).
fn big_type(d: sync_model::sql::Dialect) -> &'static str {
    d.big_int_type()
}

/// What the idempotency table says about a key before the mutation is processed.
enum KeyState {
    /// Unknown key: process the mutation.
    New,
    /// Answer with this (a replay of the stored result, or a 422 for a reused key).
    Answer(MutationResult),
    /// Left `in_flight` by a server that stopped mid-request, long enough ago to take
    /// over: process the mutation and overwrite the row.
    Abandoned,
    /// `in_flight` and recent: the whole push answers 409.
    InFlight,
}

/// Looks the key up (the caller holds the account's lock, so no other request of this
/// account can insert or change it until the transaction ends).
async fn key_state(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    request_hash: &str,
) -> Result<KeyState, ServerError> {
    let d = tx.dialect();
    let rows = tx
        .query(
            &format!(
                "SELECT {}, {}, {}, {}, {} FROM {} WHERE {} = {} AND {} = {}",
                sel(d, "request_hash"),
                sel(d, "state"),
                sel(d, "response_body"),
                sel(d, "created_at"),
                sel(d, "response_status"),
                q(d, "sync_idempotency"),
                q(d, "sync_account"),
                ph(d, 1, "TEXT"),
                q(d, "idempotency_key"),
                ph(d, 2, "TEXT"),
            ),
            &[
                Arg::Text(account.into()),
                Arg::Text(m.idempotency_key.clone()),
            ],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(KeyState::New);
    };
    let stored_hash = row[0].as_str().unwrap_or_default();
    let status = row[4].as_i64().unwrap_or(200);
    if row[1].as_str() == Some("compacted")
        && stored_hash == request_hash
        && status != 200
        && status != 409
    {
        // Rejected long ago, and the reason was compacted away. Nothing of it was
        // applied, so it is evaluated again: its reason may no longer hold (a record
        // unknown then, created since), and a reason given again is exact, where "it
        // was rejected" alone would leave the client nothing to act on.
        return Ok(KeyState::New);
    }
    if row[1].as_str() == Some("compacted") && stored_hash == request_hash {
        // Processed long ago; its stored result was compacted away, its outcome kept
        // (`response_status`). The mutation counts once: the answer is that outcome with
        // the record as it is now.
        return Ok(KeyState::Answer(
            current_answer(state, tx, account, m, status).await?,
        ));
    }
    if matches!(row[1].as_str(), Some("done" | "compacted")) {
        if stored_hash != request_hash {
            return Ok(KeyState::Answer(rejected(
                &m.idempotency_key,
                422,
                "idempotency-key-reused",
                "Idempotency key reused with a different request",
                format!(
                    "idempotency key `{}` was first used with another mutation; a retry must send the same body, and a new mutation needs a new key",
                    m.idempotency_key
                ),
            )));
        }
        let body = row[2].as_str().unwrap_or("null");
        let result: MutationResult = serde_json::from_str(body)
            .map_err(|e| DbError::Invalid(format!("stored result: {e}")))?;
        return Ok(KeyState::Answer(result));
    }
    // `in_flight`: written by a server that claimed keys in a transaction of their own.
    let created = row[3]
        .as_str()
        .and_then(time::canonical_lenient)
        .unwrap_or_default();
    let stale = time::parse(&created)
        .map(|t| (state.now() - t).num_seconds() > IN_FLIGHT_TIMEOUT_SECS)
        .unwrap_or(false);
    Ok(if stale && stored_hash == request_hash {
        KeyState::Abandoned
    } else {
        KeyState::InFlight
    })
}

/// A tombstone for a record the server no longer holds because garbage collection
/// removed it: `deleted`, with an empty `record` (a real record always holds its id), so
/// the client drops the record and whatever it still meant to send for it.
fn collected(e: &Entity, id: Uuid, version: i64) -> ServerRecord {
    ServerRecord {
        entity_type: e.name.clone(),
        entity_id: id,
        version,
        server_updated_at: String::new(),
        deleted: true,
        record: sync_runtime::Record::new(),
        clocks: Json::Object(serde_json::Map::new()),
    }
}

/// Whether a record this server does not hold was collected: deleted here, and its
/// tombstone removed by garbage collection. Garbage collection keeps the change-log row
/// of every delete (a slim tombstone: ids, version and commit time, no record), so this
/// is exact. A record this server never held (never created, or lost when the database
/// was restored from a backup taken before it reached it) has none: 422
/// `unknown-record`, and the client creates it again. (Telling the two apart by version
/// numbers alone would take a record a restore lost for one collected, once a later
/// collection moved the horizon past its versions, and drop it everywhere.)
async fn collected_before(
    tx: &mut Tx<'_>,
    account: &str,
    e: &Entity,
    id: Uuid,
    base_version: Option<i64>,
) -> Result<bool, ServerError> {
    if base_version.is_none() {
        return Ok(false);
    }
    Ok(last_delete(tx, account, e, id).await?.is_some())
}

/// The slim tombstone of the record's last delete, if the change log holds one: its
/// version and commit time.
async fn last_delete(
    tx: &mut Tx<'_>,
    account: &str,
    e: &Entity,
    id: Uuid,
) -> Result<Option<(i64, Option<String>)>, ServerError> {
    let d = tx.dialect();
    let uuid_ty = sync_model::sql::scalar_type(sync_model::ScalarType::Uuid, d);
    let true_lit = d.bool_literal(true);
    let rows = tx
        .query(
            &format!(
                "SELECT {}, {} FROM {} WHERE {} = {} AND {} = {} AND {} = {} AND {} = {true_lit} ORDER BY {} DESC LIMIT 1",
                sel(d, "version"),
                sel(d, "committed_at"),
                q(d, "sync_changes"),
                q(d, "sync_account"),
                ph(d, 1, "TEXT"),
                q(d, "entity_type"),
                ph(d, 2, "TEXT"),
                q(d, "entity_id"),
                ph(d, 3, uuid_ty),
                q(d, "deleted"),
                q(d, "seq"),
            ),
            &[
                Arg::Text(account.into()),
                Arg::Text(e.name.clone()),
                Arg::Text(id.to_string()),
            ],
        )
        .await?;
    Ok(rows.first().map(|r| {
        (
            r[0].as_i64().unwrap_or(0),
            r[1].as_str().and_then(time::canonical_lenient),
        )
    }))
}

/// Whether a create of a record this server deleted and collected was made before that
/// delete: it names no version or an older one than the delete's, and its latest stamp
/// is no later than the delete's commit time (the server bounds stamps to its own
/// clock, so a stamp made after the delete is later). A retry whose first delivery a
/// restore lost, say; the delete wins, as it would over the tombstone.
async fn made_before_collected_delete(
    tx: &mut Tx<'_>,
    account: &str,
    e: &Entity,
    m: &Mutation,
    clocks: &Json,
) -> Result<bool, ServerError> {
    let Some((version, deleted_at)) = last_delete(tx, account, e, m.entity_id).await? else {
        return Ok(false);
    };
    if m.base_version.is_some_and(|b| b >= version) {
        return Ok(false);
    }
    let deleted_at = deleted_at
        .and_then(|t| time::parse(&t))
        .map(|t| t.timestamp_millis());
    Ok(match (latest_stamp(clocks), deleted_at) {
        (Some(stamp), Some(at)) => i64::try_from(stamp.millis).unwrap_or(i64::MAX) <= at,
        _ => false,
    })
}

/// A delete of a record deleted and collected already: done.
fn applied_collected(key: &str, e: &Entity, m: &Mutation) -> MutationResult {
    MutationResult::Applied {
        idempotency_key: key.to_string(),
        server: collected(e, m.entity_id, m.base_version.unwrap_or(0)),
    }
}

/// The answer to a mutation whose stored result was compacted, from the outcome kept
/// (`status`: 200 applied, 409 conflict; a rejection is evaluated again, see
/// `key_state`): the record as it is now (or its
/// collected tombstone). A conflict is answered as a conflict with the current record, so
/// the client merges again; nothing of it was applied.
async fn current_answer(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    status: i64,
) -> Result<MutationResult, ServerError> {
    let Some(ops) = state.entities.get(&m.entity_type) else {
        return Ok(rejected(
            &m.idempotency_key,
            422,
            "unknown-entity",
            "Unknown entity type",
            format!("entity type `{}` is not served here", m.entity_type),
        ));
    };
    let e = ops.model();
    let server = match load(tx, e, account, m.entity_id).await? {
        Some(cur) => server_record(e, m.entity_id, cur),
        None => collected(e, m.entity_id, m.base_version.unwrap_or(0)),
    };
    Ok(if status == 409 {
        MutationResult::Conflict {
            idempotency_key: m.idempotency_key.clone(),
            server,
            fields: Vec::new(),
        }
    } else {
        MutationResult::Applied {
            idempotency_key: m.idempotency_key.clone(),
            server,
        }
    })
}

/// Stores a mutation's result under its key, in the transaction that applied it.
async fn store_result(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    request_hash: &str,
    result: &MutationResult,
) -> Result<(), ServerError> {
    let d = tx.dialect();
    let ts = ts_type(d);
    let expires = time::format(state.now() + state.config.idempotency_retention);
    let body = serde_json::to_string(result).expect("results serialise");
    // The outcome's kind outlives the stored result (see `current_answer`).
    let status = match result {
        MutationResult::Applied { .. } => 200,
        MutationResult::Conflict { .. } => 409,
        MutationResult::Rejected { problem, .. } => i64::from(problem.status),
    };
    tx.execute(
        &format!(
            "INSERT INTO {t} ({a}, {k}, {h}, {s}, {rs}, {rb}, {c}, {e}) VALUES ({p1}, {p2}, {p3}, 'done', {status}, {p4}, {p5}, {p6}) ON CONFLICT ({a}, {k}) DO UPDATE SET {h} = excluded.{h}, {s} = 'done', {rs} = excluded.{rs}, {rb} = excluded.{rb}, {c} = excluded.{c}, {e} = excluded.{e}",
            t = q(d, "sync_idempotency"),
            a = q(d, "sync_account"),
            k = q(d, "idempotency_key"),
            h = q(d, "request_hash"),
            s = q(d, "state"),
            rs = q(d, "response_status"),
            rb = q(d, "response_body"),
            c = q(d, "created_at"),
            e = q(d, "expires_at"),
            p1 = ph(d, 1, "TEXT"),
            p2 = ph(d, 2, "TEXT"),
            p3 = ph(d, 3, "TEXT"),
            p4 = ph(d, 4, "TEXT"),
            p5 = ph(d, 5, ts),
            p6 = ph(d, 6, ts),
        ),
        &[
            Arg::Text(account.into()),
            Arg::Text(m.idempotency_key.clone()),
            Arg::Text(request_hash.into()),
            Arg::Text(body),
            Arg::Text(state.now_text()),
            Arg::Text(expires),
        ],
    )
    .await?;
    Ok(())
}

/// Processes a push: every mutation in order, each with its idempotency check, its
/// change and its stored result, all in one transaction that holds the account's lock
/// from the start.
///
/// One commit per request, not two per mutation: the commits (each an fsync) were the
/// largest cost of a push. Holding the account's lock first serialises the pushes of one
/// account (their changes were serialised by that lock already) and orders the locks, so
/// two servers handling retries of the same keys cannot deadlock: the second waits, then
/// finds the keys done and replays their results. A server error rolls the whole request
/// back; the client retries it with the same keys, and nothing was applied twice.
///
/// Returns the results, and the key at which processing stopped if a key is still
/// marked in flight by another server (the results before it are committed).
pub(crate) async fn push_batch(
    state: &State,
    account: &str,
    mutations: &[Mutation],
) -> Result<(Vec<MutationResult>, Option<String>), ServerError> {
    let mut tx = state.db.begin().await?;
    let first_seq = lock_account(&mut tx, account).await?;
    let mut last_seq = first_seq;
    let mut results = Vec::with_capacity(mutations.len());
    let mut in_flight = None;
    for m in mutations {
        let request_hash = hash(m);
        match key_state(state, &mut tx, account, m, &request_hash).await? {
            KeyState::Answer(result) => results.push(result),
            KeyState::InFlight => {
                in_flight = Some(m.idempotency_key.clone());
                break;
            }
            KeyState::New | KeyState::Abandoned => {
                let result = match apply(state, &mut tx, account, m, &mut last_seq).await {
                    Ok(result) => result,
                    // A value that does not fit its column: this mutation's own problem,
                    // answered like any rejection (nothing of it was written: `write`
                    // encodes every value before its first statement).
                    Err(ServerError::BadRecord(msg)) => rejected(
                        &m.idempotency_key,
                        422,
                        "invalid-record",
                        "Invalid record",
                        msg,
                    ),
                    Err(e) => return Err(e),
                };
                store_result(state, &mut tx, account, m, &request_hash, &result).await?;
                results.push(result);
            }
        }
    }
    if last_seq != first_seq {
        save_seq(&mut tx, account, last_seq).await?;
    }
    tx.commit().await?;
    Ok((results, in_flight))
}

/// A record as stored.
struct Stored {
    record: sync_runtime::Record,
    clocks: Json,
    version: i64,
    deleted: bool,
    server_updated_at: String,
}

async fn load(
    tx: &mut Tx<'_>,
    e: &Entity,
    account: &str,
    id: Uuid,
) -> Result<Option<Stored>, ServerError> {
    let d = tx.dialect();
    let id_col = &e.id_field().column;
    let cols = record_columns(d, e);
    let lock = d.row_lock();
    let sql = format!(
        "SELECT {} FROM {} WHERE {} = {} AND {} = {}{lock}",
        cols.join(", "),
        q(d, &e.table),
        q(d, "sync_account"),
        ph(d, 1, "TEXT"),
        q(d, id_col),
        ph(
            d,
            2,
            sync_model::sql::scalar_type(sync_model::ScalarType::Uuid, d)
        ),
    );
    let rows = tx
        .query(
            &sql,
            &[Arg::Text(account.into()), Arg::Text(id.to_string())],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(stored_from_row(d, e, row)?))
}

fn stored_from_row(
    d: sync_model::sql::Dialect,
    e: &Entity,
    row: Vec<Json>,
) -> Result<Stored, ServerError> {
    let mut it = row.into_iter();
    let mut record = sync_runtime::Record::new();
    for f in e.synced_fields() {
        let v = it.next().unwrap_or(Json::Null);
        record.insert(f.name.clone(), decode(d, f, v)?);
    }
    let clocks = match it.next().unwrap_or(Json::Null) {
        Json::String(s) if d.json_reads_as_text() => serde_json::from_str(&s).unwrap_or(Json::Null),
        other => other,
    };
    let version = it.next().and_then(|v| v.as_i64()).unwrap_or(0);
    let deleted = match it.next().unwrap_or(Json::Null) {
        Json::Bool(b) => b,
        Json::Number(n) => n.as_i64() != Some(0),
        _ => false,
    };
    let server_updated_at = it
        .next()
        .and_then(|v| v.as_str().and_then(time::canonical_lenient))
        .unwrap_or_default();
    Ok(Stored {
        record,
        clocks,
        version,
        deleted,
        server_updated_at,
    })
}

fn server_record(e: &Entity, id: Uuid, s: Stored) -> ServerRecord {
    ServerRecord {
        entity_type: e.name.clone(),
        entity_id: id,
        version: s.version,
        server_updated_at: s.server_updated_at,
        deleted: s.deleted,
        record: s.record,
        clocks: s.clocks,
    }
}

/// Locks the account's counter and returns its current value.
async fn lock_account(tx: &mut Tx<'_>, account: &str) -> Result<i64, ServerError> {
    let d = tx.dialect();
    tx.execute(
        &format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING",
            q(d, "sync_accounts"),
            q(d, "sync_account"),
            ph(d, 1, "TEXT"),
            q(d, "sync_account")
        ),
        &[Arg::Text(account.into())],
    )
    .await?;
    let lock = d.row_lock();
    let rows = tx
        .query(
            &format!(
                "SELECT {} FROM {} WHERE {} = {}{lock}",
                sel(d, "last_seq"),
                q(d, "sync_accounts"),
                q(d, "sync_account"),
                ph(d, 1, "TEXT")
            ),
            &[Arg::Text(account.into())],
        )
        .await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0))
}

/// Writes the record and its change under the next sequence number.
#[allow(clippy::too_many_arguments)]
async fn write(
    tx: &mut Tx<'_>,
    e: &Entity,
    account: &str,
    id: Uuid,
    record: &sync_runtime::Record,
    clocks: &Json,
    version: i64,
    deleted: bool,
    last_seq: &mut i64,
    exists: bool,
    ts: &str,
) -> Result<String, ServerError> {
    // The account's counter is locked by the caller's transaction; the new value is
    // written once, when the push's mutations are done.
    let seq = *last_seq + 1;
    let d = tx.dialect();
    let ts = ts.to_string();
    let mut cols = Vec::new();
    let mut args = Vec::new();
    let mut types = Vec::new();
    for f in e.synced_fields() {
        cols.push(q(d, &f.column));
        args.push(
            encode(f, record.get(&f.name).unwrap_or(&Json::Null))
                .map_err(ServerError::BadRecord)?,
        );
        types.push(sync_model::sql::column_type(&f.ty, d));
    }
    let json_ty = d.json_type();
    let big = big_type(d);
    let boolean = sync_model::sql::scalar_type(sync_model::ScalarType::Bool, d);
    for (c, a, t) in [
        ("sync_clocks", Arg::Text(clocks.to_string()), json_ty),
        ("sync_version", Arg::Int(version), big),
        ("sync_seq", Arg::Int(seq), big),
        ("sync_server_updated_at", Arg::Text(ts.clone()), ts_type(d)),
        ("sync_deleted", Arg::Bool(deleted), boolean),
    ] {
        cols.push(q(d, c));
        args.push(a);
        types.push(t);
    }
    let id_col = q(d, &e.id_field().column);
    let account_col = q(d, "sync_account");
    if exists {
        let sets: Vec<String> = cols
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (c, _))| **c != id_col)
            .map(|(i, (c, t))| format!("{c} = {}", ph(d, i + 1, t)))
            .collect();
        let n = args.len();
        args.push(Arg::Text(account.into()));
        args.push(Arg::Text(id.to_string()));
        let uuid_ty = sync_model::sql::scalar_type(sync_model::ScalarType::Uuid, d);
        tx.execute(
            &format!(
                "UPDATE {} SET {} WHERE {account_col} = {} AND {id_col} = {}",
                q(d, &e.table),
                sets.join(", "),
                ph(d, n + 1, "TEXT"),
                ph(d, n + 2, uuid_ty)
            ),
            &args,
        )
        .await?;
    } else {
        cols.push(account_col);
        args.push(Arg::Text(account.into()));
        types.push("TEXT");
        let phs: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(i, t)| ph(d, i + 1, t))
            .collect();
        tx.execute(
            &format!(
                "INSERT INTO {} ({}) VALUES ({})",
                q(d, &e.table),
                cols.join(", "),
                phs.join(", ")
            ),
            &args,
        )
        .await?;
    }
    let uuid_ty = sync_model::sql::scalar_type(sync_model::ScalarType::Uuid, d);
    tx.execute(
        &format!(
            "INSERT INTO {} ({}, {}, {}, {}, {}, {}, {}) VALUES ({}, {}, {}, {}, {}, {}, {})",
            q(d, "sync_changes"),
            q(d, "sync_account"),
            q(d, "seq"),
            q(d, "entity_type"),
            q(d, "entity_id"),
            q(d, "version"),
            q(d, "deleted"),
            q(d, "committed_at"),
            ph(d, 1, "TEXT"),
            ph(d, 2, big),
            ph(d, 3, "TEXT"),
            ph(d, 4, uuid_ty),
            ph(d, 5, big),
            ph(d, 6, boolean),
            ph(d, 7, ts_type(d)),
        ),
        &[
            Arg::Text(account.into()),
            Arg::Int(seq),
            Arg::Text(e.name.clone()),
            Arg::Text(id.to_string()),
            Arg::Int(version),
            Arg::Bool(deleted),
            Arg::Text(ts.clone()),
        ],
    )
    .await?;
    *last_seq = seq;
    Ok(ts)
}

/// Stores the account's counter after a push wrote changes up to `seq`.
async fn save_seq(tx: &mut Tx<'_>, account: &str, seq: i64) -> Result<(), ServerError> {
    let d = tx.dialect();
    let big = big_type(d);
    tx.execute(
        &format!(
            "UPDATE {} SET {} = {} WHERE {} = {}",
            q(d, "sync_accounts"),
            q(d, "last_seq"),
            ph(d, 1, big),
            q(d, "sync_account"),
            ph(d, 2, "TEXT")
        ),
        &[Arg::Int(seq), Arg::Text(account.into())],
    )
    .await?;
    Ok(())
}

async fn apply(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    last_seq: &mut i64,
) -> Result<MutationResult, ServerError> {
    let key = &m.idempotency_key;
    let Some(ops) = state.entities.get(&m.entity_type) else {
        let known: Vec<&str> = state.entities.keys().map(String::as_str).collect();
        return Ok(rejected(
            key,
            422,
            "unknown-entity",
            "Unknown entity type",
            format!(
                "entity type `{}` is not served here; known: {}",
                m.entity_type,
                known.join(", ")
            ),
        ));
    };
    let e = ops.model();
    let current = load(tx, e, account, m.entity_id).await?;
    // A record's versions stay above every version a client saw, even when this
    // database lost some (restored from a backup): a version number never names two
    // states of one record, so clients can tell the states apart.
    let seen = m.base_version.unwrap_or(0).max(0);
    let applied = |stored: Stored| MutationResult::Applied {
        idempotency_key: key.clone(),
        server: server_record(e, m.entity_id, stored),
    };
    match m.op {
        MutationOp::Create => {
            let Some(record) = m.record.clone() else {
                return Ok(rejected(
                    key,
                    422,
                    "invalid-mutation",
                    "Invalid mutation",
                    "a create needs `record`",
                ));
            };
            if record.get(&e.id_field().name).and_then(Json::as_str)
                != Some(m.entity_id.to_string().as_str())
            {
                return Ok(rejected(
                    key,
                    422,
                    "invalid-mutation",
                    "Invalid mutation",
                    "the record's id is not `entity_id`",
                ));
            }
            let (record, clocks) = match registry::check_record(
                ops,
                record,
                m.clocks.clone(),
                state.max_stamp_millis(),
            ) {
                Ok(v) => v,
                Err(msg) => {
                    return Ok(rejected(key, 422, "invalid-record", "Invalid record", msg));
                }
            };
            match current {
                Some(cur)
                    if !cur.deleted
                        && m.base_version.is_none()
                        && shares_stamp(&clocks, &cur.clocks) =>
                {
                    // This very create is in the record already: its first delivery was
                    // applied and lost in a restore, and another device that held the
                    // record sent it again. (A stamp names one event of one device: a
                    // field still carrying the create's stamp came from it.) Taking it
                    // for a twin would count its `sum` values twice.
                    Ok(applied(cur))
                }
                Some(cur) if !cur.deleted => {
                    // The same id created on two devices (an app's fixed per-user
                    // record, say): a conflict listing the fields that differ. The
                    // client merges the two creates field by field, as two concurrent
                    // updates from an empty base, and pushes the result as an update;
                    // even identical twins go that way, since a `sum` counts both
                    // creates. (A retry of the same create carries the same key and is
                    // answered from the idempotency record before this point.)
                    let fields: Vec<String> = record
                        .iter()
                        .filter(|(k, v)| cur.record.get(*k) != Some(*v))
                        .map(|(k, _)| k.clone())
                        .collect();
                    Ok(MutationResult::Conflict {
                        idempotency_key: key.clone(),
                        server: server_record(e, m.entity_id, cur),
                        fields,
                    })
                }
                Some(cur)
                    if cur.deleted
                        && m.base_version != Some(cur.version)
                        && (m.base_version.is_some_and(|b| b < cur.version)
                            || latest_stamp(&clocks) <= latest_stamp(&cur.clocks)) =>
                {
                    // A create over a tombstone from a device that did not see the
                    // delete: it last saw the record (live, or an earlier tombstone) at
                    // an earlier version (it sends again what a restore lost, say), or
                    // the create was made before the delete (stamped no later: a retry
                    // whose first delivery a restore lost). The delete wins, as over any
                    // concurrent edit. A recreate is a create after the delete: from a
                    // device that saw this tombstone (it carries its version), or, with
                    // no version, stamped later than the delete (whose stamp the
                    // tombstone keeps).
                    Ok(MutationResult::Conflict {
                        idempotency_key: key.clone(),
                        server: server_record(e, m.entity_id, cur),
                        fields: Vec::new(),
                    })
                }
                None if made_before_collected_delete(tx, account, e, m, &clocks).await? => {
                    // The same rule once the tombstone was collected, by its slim
                    // tombstone: the delete's commit time stands for its stamp.
                    Ok(MutationResult::Conflict {
                        idempotency_key: key.clone(),
                        server: collected(e, m.entity_id, m.base_version.unwrap_or(0)),
                        fields: Vec::new(),
                    })
                }
                other => {
                    // New, or recreated after a delete: the record replaces the tombstone
                    // entirely, so nothing of the old record comes back.
                    let exists = other.is_some();
                    // A record that is gone may have been collected, with versions a
                    // device still holds: start above every collected version (a
                    // record's version never exceeds its last change's number, and
                    // collected changes lie at or below the horizon).
                    let version = match other {
                        Some(c) => c.version.max(seen) + 1,
                        None => horizon(tx, account).await?.1.max(seen) + 1,
                    };
                    let ts = write(
                        tx,
                        e,
                        account,
                        m.entity_id,
                        &record,
                        &clocks,
                        version,
                        false,
                        last_seq,
                        exists,
                        &state.now_text(),
                    )
                    .await?;
                    Ok(applied(Stored {
                        record,
                        clocks,
                        version,
                        deleted: false,
                        server_updated_at: ts,
                    }))
                }
            }
        }
        MutationOp::Update => {
            let Some(patch) = &m.patch else {
                return Ok(rejected(
                    key,
                    422,
                    "invalid-mutation",
                    "Invalid mutation",
                    "an update needs `patch`",
                ));
            };
            let Some(cur) = current else {
                if collected_before(tx, account, e, m.entity_id, m.base_version).await? {
                    // Made against a version this server issued, and gone: collected
                    // after its delete. Delete wins, as it does while the tombstone lasts.
                    return Ok(MutationResult::Conflict {
                        idempotency_key: key.clone(),
                        server: collected(e, m.entity_id, m.base_version.unwrap_or(0)),
                        fields: Vec::new(),
                    });
                }
                return Ok(rejected(
                    key,
                    422,
                    "unknown-record",
                    "Unknown record",
                    format!(
                        "no `{}` with id {} to update; create it first",
                        e.name, m.entity_id
                    ),
                ));
            };
            if cur.deleted {
                // Delete wins over a concurrent update: the client learns of the tombstone.
                return Ok(MutationResult::Conflict {
                    idempotency_key: key.clone(),
                    server: server_record(e, m.entity_id, cur),
                    fields: Vec::new(),
                });
            }
            if patch.as_object().is_some_and(serde_json::Map::is_empty) {
                // Nothing to change (a client checking the record, say): the record as it
                // is, without a new version.
                return Ok(applied(cur));
            }
            let same_version = m.base_version == Some(cur.version);
            match registry::apply_patch(
                ops,
                &cur.record,
                &cur.clocks,
                patch,
                same_version,
                state.max_stamp_millis(),
            ) {
                Err(msg) => Ok(rejected(key, 422, "invalid-patch", "Invalid patch", msg)),
                Ok(PatchOutcome::Conflict(fields)) => Ok(MutationResult::Conflict {
                    idempotency_key: key.clone(),
                    server: server_record(e, m.entity_id, cur),
                    fields,
                }),
                Ok(PatchOutcome::Applied { record, clocks }) => {
                    let version = cur.version.max(seen) + 1;
                    let ts = write(
                        tx,
                        e,
                        account,
                        m.entity_id,
                        &record,
                        &clocks,
                        version,
                        false,
                        last_seq,
                        true,
                        &state.now_text(),
                    )
                    .await?;
                    Ok(applied(Stored {
                        record,
                        clocks,
                        version,
                        deleted: false,
                        server_updated_at: ts,
                    }))
                }
            }
        }
        MutationOp::Delete => match current {
            None if collected_before(tx, account, e, m.entity_id, m.base_version).await? => {
                // Deleted and collected already: the delete is done.
                Ok(applied_collected(key, e, m))
            }
            None => Ok(rejected(
                key,
                422,
                "unknown-record",
                "Unknown record",
                format!("no `{}` with id {} to delete", e.name, m.entity_id),
            )),
            Some(cur) if cur.deleted => Ok(applied(cur)),
            Some(cur) => {
                let version = cur.version.max(seen) + 1;
                // The tombstone's stamps include the delete's own (bounded like any
                // stamp): a create that arrives later is a recreate only if it was made
                // after the delete (see `Create`).
                let clocks = match m.hlc {
                    Some(h) => stamped_at_least(&cur.clocks, h, state.max_stamp_millis()),
                    None => cur.clocks.clone(),
                };
                let ts = write(
                    tx,
                    e,
                    account,
                    m.entity_id,
                    &cur.record,
                    &clocks,
                    version,
                    true,
                    last_seq,
                    true,
                    &state.now_text(),
                )
                .await?;
                Ok(applied(Stored {
                    deleted: true,
                    version,
                    server_updated_at: ts,
                    clocks,
                    ..cur
                }))
            }
        },
    }
}

/// `clocks` (`{field: stamp}`) with every stamp raised to at least `h` (bounded to
/// `max_millis` first, as every stamp a client sends).
fn stamped_at_least(clocks: &Json, h: sync_runtime::hlc::Hlc, max_millis: u64) -> Json {
    let h = crate::registry::bound(&h.to_string(), max_millis)
        .and_then(|b| b.parse().ok())
        .unwrap_or(h);
    let mut out = clocks.clone();
    if let Some(map) = out.as_object_mut() {
        for v in map.values_mut() {
            let old: Option<sync_runtime::hlc::Hlc> = v.as_str().and_then(|t| t.parse().ok());
            if old.is_none_or(|o| o < h) {
                *v = Json::String(h.to_string());
            }
        }
    }
    out
}

/// Whether two clocks objects (`{field: stamp}`) give some field the same stamp.
fn shares_stamp(a: &Json, b: &Json) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    a.iter().any(|(k, v)| {
        v.as_str().is_some_and(|s| {
            s.parse::<sync_runtime::hlc::Hlc>()
                .is_ok_and(|h| h != sync_runtime::hlc::Hlc::ZERO)
        }) && b.get(k) == Some(v)
    })
}

/// The latest stamp of a clocks object (`{field: stamp}`).
fn latest_stamp(clocks: &Json) -> Option<sync_runtime::hlc::Hlc> {
    clocks
        .as_object()?
        .values()
        .filter_map(|v| v.as_str()?.parse().ok())
        .max()
}

/// A change token as the client sent it: the sequence number it stands for, and the tag
/// that binds it to one change of one account in this database (`None` for a legacy
/// `t1.` token, which carried none).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) seq: i64,
    pub(crate) tag: Option<String>,
}

/// The tag of a token or cursor for `seq`: the first 16 hex digits of
/// `SHA-256(account, seq, commit time of change seq)` (an empty commit time for 0).
///
/// A database restored from a backup, or replaced, and then written to again gives its
/// change `seq` another commit time (or has none): the tags of tokens issued before no
/// longer match, and the tokens are refused, where a bare sequence number would have
/// been taken as valid and the changes between the backup and the restore skipped. A
/// token of another account never matches either.
fn tag(account: &str, seq: i64, committed_at: &str) -> String {
    let digest = Sha256::digest(format!("{account}\n{seq}\n{committed_at}").as_bytes());
    hex::encode(&digest[..8])
}

/// A change token (opaque to clients): `t2.<seq>.<tag>` (see [`tag`]).
pub(crate) fn token(account: &str, seq: i64, committed_at: &str) -> String {
    format!("t2.{seq}.{}", tag(account, seq, committed_at))
}

/// Parses `t2.<seq>.<tag>`, or a legacy `t1.<seq>` (no tag).
pub(crate) fn parse_token(t: &str) -> Option<Token> {
    if let Some(rest) = t.strip_prefix("t2.") {
        let (seq, tag) = rest.split_once('.')?;
        let seq: i64 = seq.parse().ok().filter(|s: &i64| *s >= 0)?;
        let ok = tag.len() == 16 && tag.bytes().all(|b| b.is_ascii_hexdigit());
        return ok.then(|| Token {
            seq,
            tag: Some(tag.to_ascii_lowercase()),
        });
    }
    let seq = t
        .strip_prefix("t1.")?
        .parse()
        .ok()
        .filter(|s: &i64| *s >= 0)?;
    Some(Token { seq, tag: None })
}

/// The commit time of the account's change `seq`, if the change log holds it.
async fn committed_at(
    tx: &mut Tx<'_>,
    account: &str,
    seq: i64,
) -> Result<Option<String>, ServerError> {
    if seq == 0 {
        return Ok(Some(String::new()));
    }
    let d = tx.dialect();
    let rows = tx
        .query(
            &format!(
                "SELECT {} FROM {} WHERE {} = {} AND {} = {}",
                sel(d, "committed_at"),
                q(d, "sync_changes"),
                q(d, "sync_account"),
                ph(d, 1, "TEXT"),
                q(d, "seq"),
                ph(d, 2, big_type(d)),
            ),
            &[Arg::Text(account.into()), Arg::Int(seq)],
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r[0].as_str().and_then(time::canonical_lenient)))
}

/// The token for the account's change `seq` (a legacy `t1.` token if the change log no
/// longer holds that change: it was collected by a server version that kept no row at
/// the horizon).
async fn token_for(tx: &mut Tx<'_>, account: &str, seq: i64) -> Result<String, ServerError> {
    Ok(match committed_at(tx, account, seq).await? {
        Some(c) => token(account, seq, &c),
        None => format!("t1.{seq}"),
    })
}

/// Checks a token (or a snapshot cursor's pinned token) against the account's history:
/// [`ServerError::TokenExpired`] below the horizon (collected; the client re-snapshots
/// and drops what the server no longer has), [`ServerError::TokenUnknown`] for one this
/// database did not issue to this account (ahead of its counter, or a tag that does not
/// match: a restore, a replaced database, another account's token; the client
/// re-snapshots and pushes again what the server lost).
async fn check_token(tx: &mut Tx<'_>, account: &str, t: &Token) -> Result<(), ServerError> {
    let (last_seq, horizon_seq) = horizon(tx, account).await?;
    if t.seq > last_seq {
        return Err(ServerError::TokenUnknown);
    }
    if t.seq < horizon_seq {
        return Err(ServerError::TokenExpired);
    }
    let Some(expected) = &t.tag else {
        return Ok(());
    };
    match committed_at(tx, account, t.seq).await? {
        Some(c) if tag(account, t.seq, &c) == *expected => Ok(()),
        Some(_) => Err(ServerError::TokenUnknown),
        // At the horizon, collected by a server version that kept no row there.
        None if t.seq == horizon_seq => Ok(()),
        None => Err(ServerError::TokenUnknown),
    }
}

/// The account's counter and horizon: tokens below the horizon are expired (their
/// tombstones were collected).
async fn horizon(tx: &mut Tx<'_>, account: &str) -> Result<(i64, i64), ServerError> {
    let d = tx.dialect();
    let rows = tx
        .query(
            &format!(
                "SELECT {}, {} FROM {} WHERE {} = {}",
                sel(d, "last_seq"),
                sel(d, "horizon_seq"),
                q(d, "sync_accounts"),
                q(d, "sync_account"),
                ph(d, 1, "TEXT")
            ),
            &[Arg::Text(account.into())],
        )
        .await?;
    Ok(rows
        .first()
        .map(|r| (r[0].as_i64().unwrap_or(0), r[1].as_i64().unwrap_or(0)))
        .unwrap_or((0, 0)))
}

/// `GET /changes`: the records changed after `since`, in commit order.
///
/// Returns the records, the next token and whether more follow.
pub(crate) async fn changes(
    state: &State,
    account: &str,
    since: Option<&Token>,
    limit: u32,
) -> Result<(Vec<ServerRecord>, String, bool), ServerError> {
    let d = state.db.dialect();
    let mut tx = state.db.begin().await?;
    let zero = Token { seq: 0, tag: None };
    let since_token = since.unwrap_or(&zero);
    check_token(&mut tx, account, since_token).await?;
    let since = since_token.seq;
    let big = big_type(d);
    let rows = tx
        .query(
            &format!(
                "SELECT {}, {}, {}, {} FROM {} WHERE {} = {} AND {} > {} ORDER BY {} LIMIT {}",
                sel(d, "seq"),
                sel(d, "entity_type"),
                sel(d, "entity_id"),
                sel(d, "committed_at"),
                q(d, "sync_changes"),
                q(d, "sync_account"),
                ph(d, 1, "TEXT"),
                q(d, "seq"),
                ph(d, 2, big),
                q(d, "seq"),
                i64::from(limit) + 1
            ),
            &[Arg::Text(account.into()), Arg::Int(since)],
        )
        .await?;
    let has_more = rows.len() > limit as usize;
    let page = &rows[..rows.len().min(limit as usize)];
    let next = page.last().and_then(|r| r[0].as_i64()).unwrap_or(since);
    // A record's `sync_seq` is its latest change, so the records this page carries are
    // those whose `sync_seq` lies in (since, next]: one range read per entity type on the
    // (account, seq) index, instead of two reads per change (earlier changes of a record
    // changed again are superseded and skipped by the same rule).
    let mut types: Vec<&str> = page.iter().filter_map(|r| r[1].as_str()).collect();
    types.sort_unstable();
    types.dedup();
    let mut out: Vec<(i64, ServerRecord)> = Vec::new();
    for t in types {
        let Some(ops) = state.entities.get(t) else {
            continue;
        };
        let e = ops.model();
        let mut cols = record_columns(d, e);
        cols.push(sel(d, "sync_seq"));
        cols.push(sel(d, &e.id_field().column));
        let rows = tx
            .query(
                &format!(
                    "SELECT {} FROM {} WHERE {} = {} AND {} > {} AND {} <= {}",
                    cols.join(", "),
                    q(d, &e.table),
                    q(d, "sync_account"),
                    ph(d, 1, "TEXT"),
                    q(d, "sync_seq"),
                    ph(d, 2, big),
                    q(d, "sync_seq"),
                    ph(d, 3, big),
                ),
                &[Arg::Text(account.into()), Arg::Int(since), Arg::Int(next)],
            )
            .await?;
        for mut row in rows {
            let id = row
                .pop()
                .and_then(|v| v.as_str().and_then(|s| s.parse::<Uuid>().ok()));
            let seq = row.pop().and_then(|v| v.as_i64());
            let (Some(id), Some(seq)) = (id, seq) else {
                continue;
            };
            out.push((seq, server_record(e, id, stored_from_row(d, e, row)?)));
        }
    }
    let next_token = match page.last() {
        Some(r) => {
            let c = r[3]
                .as_str()
                .and_then(time::canonical_lenient)
                .unwrap_or_default();
            token(account, next, &c)
        }
        None => token_for(&mut tx, account, since).await?,
    };
    tx.commit().await?;
    out.sort_unstable_by_key(|(seq, _)| *seq);
    Ok((
        out.into_iter().map(|(_, r)| r).collect(),
        next_token,
        has_more,
    ))
}

/// The columns `stored_from_row` reads: the synced fields, then the sync metadata.
fn record_columns(d: sync_model::sql::Dialect, e: &Entity) -> Vec<String> {
    let mut cols: Vec<String> = e.synced_fields().map(|f| sel(d, &f.column)).collect();
    for c in [
        "sync_clocks",
        "sync_version",
        "sync_deleted",
        "sync_server_updated_at",
    ] {
        cols.push(sel(d, c));
    }
    cols
}

/// A snapshot cursor: `s2.<pinned seq>.<tag>.<entity index>.<last id>`, the tag binding
/// the pinned token like a change token's (a legacy `s1.` cursor has none).
pub(crate) struct Cursor {
    pub(crate) pinned: Token,
    pub(crate) entity: usize,
    pub(crate) after: Option<Uuid>,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        let after = self.after.map(|u| u.to_string()).unwrap_or_default();
        match &self.pinned.tag {
            Some(tag) => format!("s2.{}.{tag}.{}.{after}", self.pinned.seq, self.entity),
            None => format!("s1.{}.{}.{after}", self.pinned.seq, self.entity),
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (pinned, rest) = if let Some(rest) = s.strip_prefix("s2.") {
            let mut parts = rest.splitn(3, '.');
            let seq = parts.next()?;
            let tag = parts.next()?;
            let pinned = parse_token(&format!("t2.{seq}.{tag}"))?;
            (pinned, parts.next()?)
        } else {
            let rest = s.strip_prefix("s1.")?;
            let (seq, rest) = rest.split_once('.')?;
            (parse_token(&format!("t1.{seq}"))?, rest)
        };
        let (entity, after) = rest.split_once('.')?;
        let entity = entity.parse().ok()?;
        let after = match after {
            "" => None,
            id => Some(id.parse().ok()?),
        };
        Some(Cursor {
            pinned,
            entity,
            after,
        })
    }
}

/// `GET /snapshot`: one page of records as of the pinned token, tombstones included (a
/// client that already holds a record deleted before the token learns of the delete).
///
/// Returns the records, the next cursor and the pinned token.
pub(crate) async fn snapshot(
    state: &State,
    account: &str,
    cursor: Option<Cursor>,
    limit: u32,
) -> Result<(Vec<ServerRecord>, Option<Cursor>, String), ServerError> {
    let d = state.db.dialect();
    let mut tx = state.db.begin().await?;
    let mut cur = match cursor {
        Some(c) => {
            check_token(&mut tx, account, &c.pinned).await?;
            c
        }
        None => {
            let (last_seq, _) = horizon(&mut tx, account).await?;
            let pinned = token_for(&mut tx, account, last_seq).await?;
            Cursor {
                pinned: parse_token(&pinned).expect("a token this server made"),
                entity: 0,
                after: None,
            }
        }
    };
    let big = big_type(d);
    let mut out = Vec::new();
    while out.len() < limit as usize && cur.entity < state.entity_order.len() {
        let ops = &state.entities[&state.entity_order[cur.entity]];
        let e = ops.model();
        let uuid_ty = sync_model::sql::scalar_type(sync_model::ScalarType::Uuid, d);
        let mut cols = record_columns(d, e);
        cols.push(sel(d, &e.id_field().column));
        let id_col = q(d, &e.id_field().column);
        let mut args = vec![Arg::Text(account.into()), Arg::Int(cur.pinned.seq)];
        let after = match cur.after {
            Some(id) => {
                args.push(Arg::Text(id.to_string()));
                format!(" AND {id_col} > {}", ph(d, 3, uuid_ty))
            }
            None => String::new(),
        };
        let want = limit as usize - out.len();
        let rows = tx
            .query(
                &format!(
                    "SELECT {} FROM {} WHERE {} = {} AND {} <= {}{after} ORDER BY {id_col} LIMIT {}",
                    cols.join(", "),
                    q(d, &e.table),
                    q(d, "sync_account"),
                    ph(d, 1, "TEXT"),
                    q(d, "sync_seq"),
                    ph(d, 2, big),
                    want + 1,
                ),
                &args,
            )
            .await?;
        let more_here = rows.len() > want;
        for mut row in rows.into_iter().take(want) {
            let id: Uuid = row
                .pop()
                .and_then(|v| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| DbError::Invalid("snapshot id".into()))?;
            let stored = stored_from_row(d, e, row)?;
            out.push(server_record(e, id, stored));
            cur.after = Some(id);
        }
        if !more_here {
            cur.entity += 1;
            cur.after = None;
        }
    }
    tx.commit().await?;
    let pinned = match &cur.pinned.tag {
        Some(tag) => format!("t2.{}.{tag}", cur.pinned.seq),
        None => format!("t1.{}", cur.pinned.seq),
    };
    let next = (cur.entity < state.entity_order.len()).then_some(cur);
    Ok((out, next, pinned))
}

/// Collects tombstones and change-log rows older than `before` for every account;
/// tokens older than what was collected become expired (410).
pub(crate) async fn collect_garbage(
    state: &State,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64, ServerError> {
    let d = state.db.dialect();
    let mut tx = state.db.begin().await?;
    let ts = ts_type(d);
    let cutoff = time::format(before);
    let accounts = tx
        .query(
            &format!(
                "SELECT {} FROM {}",
                sel(d, "sync_account"),
                q(d, "sync_accounts")
            ),
            &[],
        )
        .await?;
    let big = big_type(d);
    let true_lit = d.bool_literal(true);
    let mut removed = 0;
    for a in accounts {
        let account = a[0].as_str().unwrap_or_default().to_string();
        let rows = tx
            .query(
                &format!(
                    "SELECT {} FROM {} WHERE {} = {} AND {} < {}",
                    sel(d, "seq"),
                    q(d, "sync_changes"),
                    q(d, "sync_account"),
                    ph(d, 1, "TEXT"),
                    q(d, "committed_at"),
                    ph(d, 2, ts)
                ),
                &[Arg::Text(account.clone()), Arg::Text(cutoff.clone())],
            )
            .await?;
        let Some(max_seq) = rows.iter().filter_map(|r| r[0].as_i64()).max() else {
            continue;
        };
        for e in state.entities.values().map(|o| o.model()) {
            removed += tx
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE {} = {} AND {} = {true_lit} AND {} <= {}",
                        q(d, &e.table),
                        q(d, "sync_account"),
                        ph(d, 1, "TEXT"),
                        q(d, "sync_deleted"),
                        q(d, "sync_seq"),
                        ph(d, 2, big)
                    ),
                    &[Arg::Text(account.clone()), Arg::Int(max_seq)],
                )
                .await?;
        }
        // The change at the horizon stays: tokens issued for it are still valid, and
        // its commit time is what their tags are checked against. So do the rows of
        // deletes: slim tombstones, by which a late mutation of a collected record is
        // told from one of a record this database never held (`collected_before`).
        tx.execute(
            &format!(
                "DELETE FROM {} WHERE {} = {} AND {} < {} AND {} <> {true_lit}",
                q(d, "sync_changes"),
                q(d, "sync_account"),
                ph(d, 1, "TEXT"),
                q(d, "seq"),
                ph(d, 2, big),
                q(d, "deleted"),
            ),
            &[Arg::Text(account.clone()), Arg::Int(max_seq)],
        )
        .await?;
        tx.execute(
            &format!(
                "UPDATE {} SET {} = {} WHERE {} = {} AND {} < {}",
                q(d, "sync_accounts"),
                q(d, "horizon_seq"),
                ph(d, 1, big),
                q(d, "sync_account"),
                ph(d, 2, "TEXT"),
                q(d, "horizon_seq"),
                ph(d, 3, big)
            ),
            &[Arg::Int(max_seq), Arg::Text(account), Arg::Int(max_seq)],
        )
        .await?;
    }
    // Idempotency keys past their retention are compacted, not deleted: the stored
    // result goes, the key and its request hash stay (and leave the expiry index's range),
    // so a device that re-sends the mutation however much later is answered with the
    // record as it is now, and its mutation still counts once.
    tx.execute(
        &format!(
            "UPDATE {t} SET {s} = 'compacted', {rb} = NULL, {e} = {far} WHERE {s} = 'done' AND {e} < {p1}",
            t = q(d, "sync_idempotency"),
            s = q(d, "state"),
            rb = q(d, "response_body"),
            e = q(d, "expires_at"),
            far = ph(d, 2, ts),
            p1 = ph(d, 1, ts),
        ),
        &[
            Arg::Text(state.now_text()),
            Arg::Text(time::NEVER.into()),
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(removed)
}
