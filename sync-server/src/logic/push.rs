//! `POST /push`: one mutation at a time, in order, each in the batch's transaction,
//! including the rules for records whose tombstones were collected.

use std::collections::HashMap;

use super::*;

/// A tombstone for a record the server no longer holds because garbage collection
/// removed it: `deleted`, with an empty `record` (a real record always holds its id), so
/// the client drops the record and whatever it still meant to send for it.
pub(crate) fn collected(e: &Entity, id: Uuid, version: i64) -> ServerRecord {
    ServerRecord {
        entity_type: e.name.clone(),
        entity_id: id,
        version,
        server_updated_at: String::new(),
        deleted: true,
        record: sync_runtime::Record::new(),
        clocks: Json::Object(serde_json::Map::new()),
        dots: None,
        dot_gaps: None,
        life_since: None,
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
pub(crate) async fn collected_before(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
    e: &Entity,
    id: Uuid,
    base_version: Option<i64>,
) -> Result<bool, ServerError> {
    if base_version.is_none() {
        return Ok(false);
    }
    Ok(last_delete(tx, sql, account, e, id).await?.is_some())
}

/// The slim tombstone of the record's last delete, if the change log holds one: its
/// version and commit time.
pub(crate) async fn last_delete(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
    e: &Entity,
    id: Uuid,
) -> Result<Option<(i64, Option<String>)>, ServerError> {
    let rows = tx
        .query(
            &sql.last_delete,
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
/// delete: it names no version or an older one than the delete's, and its stamp
/// is no later than the delete's commit time plus `skew` ([`Config::max_clock_skew`]).
/// A retry whose first delivery a restore lost, say; the delete wins, as it would over
/// the tombstone.
///
/// The slim tombstone keeps the delete's commit time, not the tombstone's newest clock,
/// and a stamp may lie up to `skew` in the server's future when it is stored (PUSH-4):
/// the tombstone's clocks were no later than the commit time plus `skew`, so that is
/// what a create is weighed against, as in CREATE-3. Weighed against the commit time
/// alone, a create from a device whose clock ran a second ahead of the server's, made
/// before the delete, counted as made after it and brought the record back (simulation
/// seed 27678).
///
/// The version a create carrying `replaces` names is of a lost history and is not
/// weighed ([`carries_replaces`]), and its stamp is its oldest ([`life_stamp`]).
///
/// The price: a create naming no version, stamped within `skew` after the delete's
/// commit and reaching the server only after the tombstone was collected, is taken as
/// concurrent with the delete (a conflict: the delete wins, and the device reports it
/// superseded), where the tombstone itself would have told it was later. Keeping the
/// tombstone's newest clock in the slim tombstone (a change-log column) would make the
/// two agree exactly; it needs a server migration, not written yet.
///
/// [`Config::max_clock_skew`]: crate::Config::max_clock_skew
pub(crate) fn made_before_delete(
    (version, deleted_at): &(i64, Option<String>),
    m: &Mutation,
    clocks: &Json,
    skew: chrono::Duration,
) -> bool {
    if !carries_replaces(m) && m.base_version.is_some_and(|b| b >= *version) {
        return false;
    }
    let deleted_at = deleted_at
        .as_deref()
        .and_then(time::parse)
        .map(|t| t.timestamp_millis().saturating_add(skew.num_milliseconds()));
    match (life_stamp(m, clocks), deleted_at) {
        (Some(stamp), Some(at)) => i64::try_from(stamp.millis).unwrap_or(i64::MAX) <= at,
        _ => false,
    }
}

/// The stamp that says when a create was made, to weigh it against a delete: its
/// latest stamp; for a create carrying `replaces` (an edit a device sends again as a
/// create after the server lost the record) its earliest, the stamp of the create that
/// began the life the edit was made in. An edit of a life that began before the delete
/// is a concurrent edit of a deleted record, and the delete wins, however late the edit
/// (simulation seed 18502: an update queued while the record's create was on its way,
/// re-sent as a create once the delete was collected, brought the record back).
pub(crate) fn life_stamp(m: &Mutation, clocks: &Json) -> Option<sync_runtime::hlc::Hlc> {
    if !carries_replaces(m) {
        return latest_stamp(clocks);
    }
    clocks
        .as_object()?
        .values()
        .filter_map(|v| v.as_str()?.parse::<sync_runtime::hlc::Hlc>().ok())
        .filter(|h| *h != sync_runtime::hlc::Hlc::ZERO)
        .min()
}

/// Whether a create carries `replaces`: an edit a device sends again as a create after
/// the server lost the record. Its `base_version` names a version of the history the
/// server lost, which a restored server may have given again to another change of the
/// record, so it says nothing about which deletes the device saw (CREATE-3, CREATE-4).
pub(crate) fn carries_replaces(m: &Mutation) -> bool {
    m.replaces.as_ref().is_some_and(|r| !r.is_empty())
}

/// A delete of a record deleted and collected already: done.
pub(crate) fn applied_collected(key: &str, e: &Entity, m: &Mutation) -> MutationResult {
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
pub(crate) async fn current_answer(
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
    let server = match load(tx, &state.sql, e, account, m.entity_id).await? {
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
/// Transactions (PROTOCOL.md TXN-1): the mutations from the first to the last of one
/// [`Mutation::transaction`] (with whatever lies between them, the transactions
/// overlapping that range and the later mutations of its records:
/// [`transaction_units`](sync_runtime::protocol::transaction_units)) are one unit,
/// applied all or none under a savepoint. If one
/// of them is answered other than `applied`, the unit is rolled back: that one keeps
/// its answer (stored under its key), mutations an earlier push decided keep their
/// stored answer, and the others are answered [`TRANSACTION_ABORTED`] (not stored: sent
/// again, they are applied afresh). A transaction of one mutation needs no savepoint.
///
/// `lens`: the translation of an older client's model (its mutations are already in
/// the server's names; its members of fields dropped since go after each hash).
///
/// Returns the results, and the key at which processing stopped if a key is still
/// marked in flight by another server (the results before it are committed; none of a
/// unit that was not complete there).
pub(crate) async fn push_batch(
    state: &State,
    account: &str,
    model: ClientModel,
    lens: Option<&crate::history::Lens>,
    mutations: &[Mutation],
) -> Result<(Vec<MutationResult>, Option<String>), ServerError> {
    let mut tx = state.db.begin().await?;
    let first_seq = lock_account(&mut tx, &state.sql, account).await?;
    let mut last_seq = first_seq;
    let mut results = Vec::with_capacity(mutations.len());
    let mut in_flight = None;
    let units: HashMap<usize, usize> = sync_runtime::protocol::transaction_units(mutations)
        .into_iter()
        .collect();
    let mut n = 0;
    'push: while n < mutations.len() {
        let Some(&end) = units.get(&n) else {
            let m = &mutations[n];
            match process(state, &mut tx, account, model, lens, m, &mut last_seq).await? {
                Processed::InFlight => {
                    in_flight = Some(m.idempotency_key.clone());
                    break;
                }
                Processed::Answered(result) => results.push(result),
                Processed::Fresh {
                    m,
                    request_hash,
                    result,
                } => {
                    store_result(state, &mut tx, account, &m, &request_hash, &result).await?;
                    store_replaced(state, &mut tx, account, &m, &result).await?;
                    results.push(result);
                }
            }
            n += 1;
            continue;
        };
        // A unit: mutations `n..=end`, all or none.
        tx.execute_uncached("SAVEPOINT sync_txn").await?;
        let seq_before = last_seq;
        let mut failed = None;
        for (k, m) in mutations.iter().enumerate().take(end + 1).skip(n) {
            match process(state, &mut tx, account, model, lens, m, &mut last_seq).await? {
                Processed::InFlight => {
                    tx.execute_uncached("ROLLBACK TO SAVEPOINT sync_txn")
                        .await?;
                    tx.execute_uncached("RELEASE SAVEPOINT sync_txn").await?;
                    last_seq = seq_before;
                    results.truncate(n);
                    in_flight = Some(m.idempotency_key.clone());
                    break 'push;
                }
                Processed::Answered(result) => {
                    if !matches!(result, MutationResult::Applied { .. }) {
                        failed = Some((k, result, None));
                        break;
                    }
                    results.push(result);
                }
                Processed::Fresh {
                    m,
                    request_hash,
                    result,
                } => {
                    if !matches!(result, MutationResult::Applied { .. }) {
                        failed = Some((k, result, Some((m, request_hash))));
                        break;
                    }
                    store_result(state, &mut tx, account, &m, &request_hash, &result).await?;
                    store_replaced(state, &mut tx, account, &m, &result).await?;
                    results.push(result);
                }
            }
        }
        if let Some((at, result, fresh)) = failed {
            tx.execute_uncached("ROLLBACK TO SAVEPOINT sync_txn")
                .await?;
            last_seq = seq_before;
            results.truncate(n);
            for (k, m) in mutations.iter().enumerate().take(end + 1).skip(n) {
                let answer = if k == at {
                    failing_answer(state, &mut tx, account, m, &result, fresh.as_ref()).await?
                } else {
                    aborted_answer(state, &mut tx, account, m, &mutations[at], &result).await?
                };
                results.push(answer);
            }
        }
        tx.execute_uncached("RELEASE SAVEPOINT sync_txn").await?;
        n = end + 1;
    }
    if last_seq != first_seq {
        save_seq(&mut tx, &state.sql, account, last_seq).await?;
    }
    tx.commit().await?;
    Ok((results, in_flight))
}

/// The answer of the mutation that failed its unit (`m`, answered `result`), once the
/// unit is rolled back (TXN-1).
///
/// Processed in this push (`fresh`: the mutation as processed and its hash), its answer
/// is stored under its key. A `conflict` carries the record as it is after the rollback
/// (it may have held a change of the unit that is gone now); one with a collected
/// record stands as it is. A conflict with a record only the unit created has no
/// answer without the unit: the mutation contradicts its own transaction, and is
/// rejected (422 `invalid-transaction`), which is stored. Answered from its key, it gets
/// that answer again, read after the rollback (a compacted key's answer is the record
/// as it is now).
async fn failing_answer(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    result: &MutationResult,
    fresh: Option<&(std::borrow::Cow<'_, Mutation>, String)>,
) -> Result<MutationResult, ServerError> {
    let Some((processed, request_hash)) = fresh else {
        let request_hash = hash(&state.history.canonical(m));
        return Ok(
            match key_state(state, tx, account, m, &request_hash).await? {
                KeyState::Answer(answer) => *answer,
                _ => result.clone(),
            },
        );
    };
    let mut result = result.clone();
    if let MutationResult::Conflict { server, .. } = &mut result
        && !is_collected_answer(server)
    {
        match current_answer(state, tx, account, processed, 409).await? {
            MutationResult::Conflict { server: now, .. } if !is_collected_answer(&now) => {
                *server = now;
            }
            _ => {
                result = rejected(
                    &processed.idempotency_key,
                    422,
                    "invalid-transaction",
                    "Invalid transaction",
                    format!(
                        "the mutation conflicts with the {} {} that its own transaction created earlier in this push; a transaction must not contradict itself",
                        processed.entity_type, processed.entity_id
                    ),
                );
            }
        }
    }
    store_result(state, tx, account, processed, request_hash, &result).await?;
    store_replaced(state, tx, account, processed, &result).await?;
    Ok(result)
}

/// Whether `record` is the stand-in [`current_answer`] gives for a record it did not
/// find (see [`collected`]): deleted, with an empty record.
fn is_collected_answer(record: &ServerRecord) -> bool {
    record.deleted && record.record.is_empty()
}

/// The answer of mutation `m` of a unit rolled back because `failing` was answered
/// `result` (TXN-1): the answer its key already had (an earlier push decided it), or
/// [`TRANSACTION_ABORTED`], not stored.
async fn aborted_answer(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    failing: &Mutation,
    result: &MutationResult,
) -> Result<MutationResult, ServerError> {
    let request_hash = hash(&state.history.canonical(m));
    if let KeyState::Answer(answer) = key_state(state, tx, account, m, &request_hash).await? {
        return Ok(*answer);
    }
    let failed = match result {
        MutationResult::Conflict { .. } => "answered `conflict`",
        _ => "rejected",
    };
    let of = match failing.transaction.as_deref() {
        Some(t) => format!("of transaction `{t}`"),
        None => "in the unit of a transaction".to_string(),
    };
    Ok(rejected(
        &m.idempotency_key,
        409,
        TRANSACTION_ABORTED,
        "Transaction aborted",
        format!(
            "not applied: the mutation `{}` {of} was {failed}, and a transaction is applied all or none (TXN-1); send it again with the rest of its transaction",
            failing.idempotency_key
        ),
    ))
}

/// One mutation of a push, processed ([`process`]).
#[expect(
    clippy::large_enum_variant,
    reason = "one value per mutation, moved once; boxing would allocate per mutation"
)]
enum Processed<'m> {
    /// Answered from its key's stored result (or refused for a key reused): nothing
    /// to store.
    Answered(MutationResult),
    /// Processed now: the result is to be stored under its key, with `m` (the mutation
    /// as processed: members of dropped fields taken out, the dot of a first delivery
    /// put back) and its hash.
    Fresh {
        m: std::borrow::Cow<'m, Mutation>,
        request_hash: String,
        result: MutationResult,
    },
    /// Its key is in flight on another server: the push stops here.
    InFlight,
}

/// Processes one mutation of a push in its transaction: its key's state, then its
/// change ([`apply`]), or the answer its key already has. Stores nothing under the key.
async fn process<'m>(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    model: ClientModel,
    lens: Option<&crate::history::Lens>,
    m: &'m Mutation,
    last_seq: &mut i64,
) -> Result<Processed<'m>, ServerError> {
    use std::borrow::Cow;
    let request_hash = hash(&state.history.canonical(m));
    // Members of fields this server dropped go after the hash is taken (see
    // `History::strip_dropped`).
    // (An older client's members of fields dropped since its model, too.)
    let mut m = Cow::Borrowed(m);
    if state.history.has_dropped(&m.entity_type) || lens.is_some() {
        let copy = m.to_mut();
        state.history.strip_dropped(copy);
        if let Some(lens) = lens {
            lens.strip_gone(copy);
        }
    }
    match key_state(state, tx, account, &m, &request_hash).await? {
        KeyState::Answer(result) => Ok(Processed::Answered(*result)),
        KeyState::InFlight => Ok(Processed::InFlight),
        again @ (KeyState::New | KeyState::Abandoned | KeyState::Again(_)) => {
            if let KeyState::Again(Some(dot)) = again {
                m.to_mut().dot = Some(dot);
            }
            let result = match invalid_members(&m) {
                Some(problem) => MutationResult::Rejected {
                    idempotency_key: m.idempotency_key.clone(),
                    problem,
                },
                None => match apply(state, tx, account, model, &m, last_seq).await {
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
                },
            };
            Ok(Processed::Fresh {
                m,
                request_hash,
                result,
            })
        }
    }
}

/// The problem of a mutation whose `replaces` or `transaction` is out of bounds.
fn invalid_members(m: &Mutation) -> Option<Problem> {
    use sync_runtime::protocol::{
        MAX_IDEMPOTENCY_KEY_CHARS, MAX_REPLACED_KEYS, MAX_TRANSACTION_ID_CHARS,
    };
    let invalid = |member: &str, detail: String| {
        Some(Problem::new("invalid-mutation", "Invalid mutation", 422, detail).at(member))
    };
    let replaces_fit = m.replaces.as_ref().is_none_or(|keys| {
        keys.len() <= MAX_REPLACED_KEYS
            && keys
                .iter()
                .all(|k| (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&k.chars().count()))
    });
    if !replaces_fit {
        return invalid(
            "/replaces",
            format!(
                "`replaces` holds at most {MAX_REPLACED_KEYS} idempotency keys of 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
            ),
        );
    }
    let transaction_fits = m
        .transaction
        .as_ref()
        .is_none_or(|t| (1..=MAX_TRANSACTION_ID_CHARS).contains(&t.chars().count()));
    if !transaction_fits {
        return invalid(
            "/transaction",
            format!("`transaction` is 1 to {MAX_TRANSACTION_ID_CHARS} characters"),
        );
    }
    None
}

/// Applies one mutation in the push's transaction (the account's counter locked, the
/// mutation's idempotency key unknown or abandoned), by the rules of its operation:
/// [`apply_create`], [`apply_update`], [`apply_delete`].
///
/// Returns the mutation's result: applied (with the record as stored), a conflict (with
/// the server's record, for the client to merge), or a rejection (422, nothing written).
/// `last_seq` is the account's counter, advanced by every change written.
///
/// # Errors
///
/// [`ServerError::BadRecord`] for a value that does not fit its column (nothing of the
/// mutation was written); a database error otherwise.
pub(crate) async fn apply(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    model: ClientModel,
    m: &Mutation,
    last_seq: &mut i64,
) -> Result<MutationResult, ServerError> {
    let Some(ops) = state.entities.get(&m.entity_type) else {
        let known: Vec<&str> = state.entities.keys().map(String::as_str).collect();
        return Ok(rejected(
            &m.idempotency_key,
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
    if let Err(misfit) = shape::op_members(m) {
        return Ok(MutationResult::Rejected {
            idempotency_key: m.idempotency_key.clone(),
            problem: Problem::new("invalid-mutation", "Invalid mutation", 422, misfit.detail)
                .at(misfit.pointer),
        });
    }
    let current = load(tx, &state.sql, e, account, m.entity_id).await?;
    let cx = Applying {
        state,
        account,
        model,
        m,
        e,
        ops,
        // A record's versions stay above every version a client saw, even when this
        // database lost some (restored from a backup): a version number never names two
        // states of one record, so clients can tell the states apart.
        seen: m.base_version.unwrap_or(0).max(0),
    };
    match m.op {
        MutationOp::Create => apply_create(&cx, tx, current, last_seq).await,
        MutationOp::Update => apply_update(&cx, tx, current, last_seq).await,
        MutationOp::Delete => apply_delete(&cx, tx, current, last_seq).await,
    }
}

/// One mutation being applied: what the rules of every operation read.
pub(crate) struct Applying<'a> {
    state: &'a State,
    account: &'a str,
    model: ClientModel,
    m: &'a Mutation,
    e: &'a Entity,
    ops: &'a sync_runtime::erased::ErasedEntity,
    /// The version the client last saw (0 for none).
    seen: i64,
}

impl Applying<'_> {
    fn applied(&self, stored: Stored) -> MutationResult {
        MutationResult::Applied {
            idempotency_key: self.m.idempotency_key.clone(),
            server: server_record(self.e, self.m.entity_id, stored),
        }
    }

    fn conflict(&self, server: ServerRecord, fields: Vec<String>) -> MutationResult {
        MutationResult::Conflict {
            idempotency_key: self.m.idempotency_key.clone(),
            server,
            fields,
        }
    }

    /// A conflict with the record as stored.
    fn conflict_with(&self, cur: Stored, fields: Vec<String>) -> MutationResult {
        self.conflict(server_record(self.e, self.m.entity_id, cur), fields)
    }

    /// A conflict with the record's collected tombstone: delete wins.
    fn conflict_collected(&self) -> MutationResult {
        self.conflict(
            collected(self.e, self.m.entity_id, self.m.base_version.unwrap_or(0)),
            Vec::new(),
        )
    }

    fn rejected(&self, kind: &str, title: &str, detail: impl Into<String>) -> MutationResult {
        rejected(&self.m.idempotency_key, 422, kind, title, detail)
    }

    /// A 422 for a member the document does not allow, pointing at it.
    fn misfit(&self, kind: &str, title: &str, misfit: shape::Misfit) -> MutationResult {
        MutationResult::Rejected {
            idempotency_key: self.m.idempotency_key.clone(),
            problem: Problem::new(kind, title, 422, misfit.detail).at(misfit.pointer),
        }
    }

    /// Whether the record was deleted here and its tombstone collected
    /// ([`collected_before`]).
    async fn was_collected(&self, tx: &mut Tx<'_>) -> Result<bool, ServerError> {
        collected_before(
            tx,
            &self.state.sql,
            self.account,
            self.e,
            self.m.entity_id,
            self.m.base_version,
        )
        .await
    }

    /// Writes the record's new version (and its change) and answers `applied`, with the
    /// record as it reads back (timestamps in the canonical form).
    async fn save(
        &self,
        tx: &mut Tx<'_>,
        last_seq: &mut i64,
        mut stored: Stored,
        exists: bool,
    ) -> Result<MutationResult, ServerError> {
        sync_runtime::column::canonical_timestamps(self.e, &mut stored.record);
        let server_updated_at = write(
            tx,
            &self.state.sql,
            self.e,
            self.account,
            self.m.entity_id,
            &stored.record,
            &stored.clocks,
            (&stored.dots, &stored.gaps, stored.life_since),
            stored.version,
            stored.deleted,
            last_seq,
            exists,
            &self.state.now_text(),
        )
        .await?;
        Ok(self.applied(Stored {
            server_updated_at,
            ..stored
        }))
    }
}

/// A create: of a new record, over a tombstone (a recreate, or a create the delete
/// wins over), or of an id another device created too (a conflict the client merges).
pub(crate) async fn apply_create(
    cx: &Applying<'_>,
    tx: &mut Tx<'_>,
    current: Option<Stored>,
    last_seq: &mut i64,
) -> Result<MutationResult, ServerError> {
    let (m, e) = (cx.m, cx.e);
    let Some(record) = m.record.clone() else {
        return Ok(cx.rejected(
            "invalid-mutation",
            "Invalid mutation",
            "a create needs `record`",
        ));
    };
    if record.get(&e.id_field().name).and_then(Json::as_str)
        != Some(m.entity_id.to_string().as_str())
    {
        return Ok(cx.rejected(
            "invalid-mutation",
            "Invalid mutation",
            "the record's id is not `entity_id`",
        ));
    }
    if let Err(misfit) = shape::record(e, &record, cx.model)
        .and_then(|()| m.clocks.as_ref().map_or(Ok(()), |c| shape::clocks(e, c)))
    {
        return Ok(cx.misfit("invalid-record", "Invalid record", misfit));
    }
    let (record, clocks) = match registry::check_record(
        cx.ops,
        record,
        m.clocks.clone(),
        cx.state.max_stamp_millis(),
    ) {
        Ok(v) => v,
        Err(msg) => return Ok(cx.rejected("invalid-record", "Invalid record", msg)),
    };
    // The id's last delete, when its tombstone was collected (CREATE-4, SUM-4).
    let collected_delete = match current {
        None => last_delete(tx, &cx.state.sql, cx.account, e, m.entity_id).await?,
        Some(_) => None,
    };
    match current {
        Some(cur)
            if !cur.deleted
                && (m.base_version.is_none()
                    && m.replaces.as_ref().is_none_or(Vec::is_empty)
                    && shares_stamp(&clocks, &cur.clocks)
                    || m.dot
                        .as_ref()
                        .is_some_and(|d| d.included(&cur.dots, Some(&cur.gaps)))) =>
        {
            // This very create is in the record already: its first delivery was
            // applied and lost in a restore, and another device that held the
            // record sent it again. (A stamp names one event of one device: a
            // field still carrying the create's stamp came from it; and the
            // record's dots name the contributions its sums hold, also of an edit
            // a device sends again as a create after the server lost its record.)
            // Taking it for a twin would count its `sum` values twice. A create that
            // carries other keys' changes (`replaces`: an update the device sends again
            // as a create after the server lost the record) shares the first create's
            // stamps but holds more than it, so stamps cannot tell that it is in the
            // record; only its dot can (simulation seed 60874 of the runs before
            // transactions). Otherwise it is a conflict, and the device merges it from
            // the copy it last had (`resend_base`), adding nothing twice.
            Ok(cx.applied(cur))
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
            Ok(cx.conflict_with(cur, fields))
        }
        Some(cur)
            if cur.deleted
                && (m.base_version != Some(cur.version) || carries_replaces(m))
                && ((!carries_replaces(m) && m.base_version.is_some_and(|b| b < cur.version))
                    || life_stamp(m, &clocks) <= latest_stamp(&cur.clocks)) =>
        {
            // A create over a tombstone from a device that did not see the
            // delete: it last saw the record (live, or an earlier tombstone) at
            // an earlier version (it sends again what a restore lost, say), or
            // the create was made before the delete (stamped no later: a retry
            // whose first delivery a restore lost). The delete wins, as over any
            // concurrent edit. A recreate is a create after the delete: from a
            // device that saw this tombstone (it carries its version), or, with
            // no version, stamped later than the delete (whose stamp the
            // tombstone keeps). A create carrying `replaces` names a version of the
            // history the server lost, which a restored server may have given again
            // to this very tombstone: only its stamp counts (simulation seed 24798).
            Ok(cx.conflict_with(cur, Vec::new()))
        }
        None if collected_delete
            .as_ref()
            .is_some_and(|d| made_before_delete(d, m, &clocks, cx.state.config.max_clock_skew)) =>
        {
            // The same rule once the tombstone was collected, by its slim
            // tombstone: the delete's commit time plus the clock skew bound stands
            // for its stamp.
            Ok(cx.conflict_collected())
        }
        other => {
            // New, or recreated after a delete: the record replaces the tombstone
            // entirely, so nothing of the old record comes back.
            let exists = other.is_some();
            // A life that follows a delete says so (PROTOCOL.md SUM-4): its dots start
            // afresh, which a device that kept the old life's must not take for a
            // restore's loss.
            let recreated = exists || collected_delete.is_some();
            // A record that is gone may have been collected, with versions a
            // device still holds: start above every collected version (a
            // record's version never exceeds its last change's number, and
            // collected changes lie at or below the horizon).
            let version = match other {
                Some(c) => c.version.max(cx.seen) + 1,
                None => horizon(tx, &cx.state.sql, cx.account).await?.1.max(cx.seen) + 1,
            };
            // A record sent again from a device's copy carries the contributions
            // its sums hold; a new one, its own.
            let mut dots = m.dots.clone().unwrap_or_default();
            let mut gaps = m.dot_gaps.clone().unwrap_or_default();
            if let Some(d) = &m.dot {
                d.add(&mut dots, &mut gaps);
            }
            let stored = Stored {
                life_since: recreated.then_some(version),
                ..Stored::live(record, clocks, (dots, gaps), version)
            };
            cx.save(tx, last_seq, stored, exists).await
        }
    }
}

/// An update: a patch merged into the record by its fields' rules, or a conflict (a
/// `manual` field changed on both sides, the record deleted).
pub(crate) async fn apply_update(
    cx: &Applying<'_>,
    tx: &mut Tx<'_>,
    current: Option<Stored>,
    last_seq: &mut i64,
) -> Result<MutationResult, ServerError> {
    let (m, e) = (cx.m, cx.e);
    let Some(patch) = &m.patch else {
        return Ok(cx.rejected(
            "invalid-mutation",
            "Invalid mutation",
            "an update needs `patch`",
        ));
    };
    if let Err(misfit) = shape::patch(e, patch) {
        return Ok(cx.misfit("invalid-patch", "Invalid patch", misfit));
    }
    let Some(cur) = current else {
        if cx.was_collected(tx).await? {
            // Made against a version this server issued, and gone: collected
            // after its delete. Delete wins, as it does while the tombstone lasts.
            return Ok(cx.conflict_collected());
        }
        return Ok(cx.rejected(
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
        return Ok(cx.conflict_with(cur, Vec::new()));
    }
    if patch.as_object().is_some_and(serde_json::Map::is_empty) {
        // Nothing to change (a client checking the record, say): the record as it
        // is, without a new version.
        return Ok(cx.applied(cur));
    }
    // A contribution the record's sums hold already (its first delivery applied, lost
    // in a restore, and the record sent again by a device that had it): the rest of
    // the patch applies, its `sum` operations do not (PROTOCOL.md SUM-2).
    let without_sums;
    let patch = match &m.dot {
        Some(d) if d.included(&cur.dots, Some(&cur.gaps)) => {
            let mut p = patch.clone();
            if let Some(ops) = p.as_object_mut() {
                ops.retain(|name, _| {
                    e.field(name)
                        .is_none_or(|f| f.merge != sync_model::MergeStrategy::Sum)
                });
                if ops.is_empty() {
                    return Ok(cx.applied(cur));
                }
            }
            without_sums = p;
            &without_sums
        }
        _ => patch,
    };
    let same_version = m.base_version == Some(cur.version);
    match registry::apply_patch(
        cx.ops,
        &cur.record,
        &cur.clocks,
        patch,
        same_version,
        cx.state.max_stamp_millis(),
    ) {
        Err(msg) => Ok(cx.rejected("invalid-patch", "Invalid patch", msg)),
        Ok(PatchOutcome::Conflict(fields)) => Ok(cx.conflict_with(cur, fields)),
        Ok(PatchOutcome::Applied { record, clocks }) => {
            let (mut dots, mut gaps) = (cur.dots, cur.gaps);
            if let Some(d) = &m.dot {
                d.add(&mut dots, &mut gaps);
            }
            let stored = Stored {
                life_since: cur.life_since,
                ..Stored::live(record, clocks, (dots, gaps), cur.version.max(cx.seen) + 1)
            };
            cx.save(tx, last_seq, stored, true).await
        }
    }
}

/// A delete: the record becomes a tombstone (its last values kept, its stamps raised
/// to the delete's); a delete of a tombstone or of a collected record is done already.
pub(crate) async fn apply_delete(
    cx: &Applying<'_>,
    tx: &mut Tx<'_>,
    current: Option<Stored>,
    last_seq: &mut i64,
) -> Result<MutationResult, ServerError> {
    let (m, e) = (cx.m, cx.e);
    match current {
        // Deleted and collected already: the delete is done.
        None if cx.was_collected(tx).await? => Ok(applied_collected(&m.idempotency_key, e, m)),
        None => Ok(cx.rejected(
            "unknown-record",
            "Unknown record",
            format!("no `{}` with id {} to delete", e.name, m.entity_id),
        )),
        Some(cur) if cur.deleted => Ok(cx.applied(cur)),
        Some(cur) => {
            // The tombstone's stamps include the delete's own (bounded like any
            // stamp): a create that arrives later is a recreate only if it was made
            // after the delete (see `apply_create`).
            let clocks = match m.hlc {
                Some(h) => stamped_at_least(&cur.clocks, h, cx.state.max_stamp_millis()),
                None => cur.clocks.clone(),
            };
            let stored = Stored {
                deleted: true,
                version: cur.version.max(cx.seen) + 1,
                clocks,
                ..cur
            };
            cx.save(tx, last_seq, stored, true).await
        }
    }
}

/// `clocks` (`{field: stamp}`) with every stamp raised to at least `h` (bounded to
/// `max_millis` first, as every stamp a client sends).
pub(crate) fn stamped_at_least(clocks: &Json, h: sync_runtime::hlc::Hlc, max_millis: u64) -> Json {
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
pub(crate) fn shares_stamp(a: &Json, b: &Json) -> bool {
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
pub(crate) fn latest_stamp(clocks: &Json) -> Option<sync_runtime::hlc::Hlc> {
    clocks
        .as_object()?
        .values()
        .filter_map(|v| v.as_str()?.parse().ok())
        .max()
}
