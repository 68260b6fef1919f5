//! Idempotency keys: what the table says about a key before its mutation runs, and the
//! stored result a retry gets back.

use super::*;

/// Idempotency keys in flight for longer than this are considered abandoned (the server
/// that held them died) and may be taken over.
pub(crate) const IN_FLIGHT_TIMEOUT_SECS: i64 = 60;

/// The member of a stored `unknown-record` rejection that keeps the dot of the mutation
/// (see [`store_result`]).
const FIRST_DOT: &str = "first_dot";

/// The hash of a mutation's body, in the origin shape ([`crate::history::History::canonical`]).
pub(crate) fn hash(m: &Mutation) -> String {
    let bytes = serde_json::to_vec(m).expect("mutations serialise");
    hex::encode(Sha256::digest(&bytes))
}

/// What the idempotency table says about a key before the mutation is processed.
pub(crate) enum KeyState {
    /// Unknown key: process the mutation.
    New,
    /// Answer with this (a replay of the stored result, or a 422 for a reused key).
    Answer(Box<MutationResult>),
    /// Left `in_flight` by a server that stopped mid-request, long enough ago to take
    /// over: process the mutation and overwrite the row.
    Abandoned,
    /// Rejected as `unknown-record` before (nothing of it applied): process the mutation
    /// again (IDEM-1), as the dot of its first delivery if that carried one (see
    /// [`store_result`]).
    Again(Option<Dot>),
    /// `in_flight` and recent: the whole push answers 409.
    InFlight,
}

/// Looks the key up (the caller holds the account's lock, so no other request of this
/// account can insert or change it until the transaction ends).
pub(crate) async fn key_state(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    request_hash: &str,
) -> Result<KeyState, ServerError> {
    let rows = tx
        .query(
            &state.sql.key_lookup,
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
        return Ok(KeyState::Answer(Box::new(
            current_answer(state, tx, account, m, status).await?,
        )));
    }
    if matches!(row[1].as_str(), Some("done" | "compacted")) {
        if stored_hash != request_hash {
            return Ok(KeyState::Answer(Box::new(rejected(
                &m.idempotency_key,
                422,
                "idempotency-key-reused",
                "Idempotency key reused with a different request",
                format!(
                    "idempotency key `{}` was first used with another mutation; a retry must send the same body, and a new mutation needs a new key",
                    m.idempotency_key
                ),
            ))));
        }
        let body = row[2].as_str().unwrap_or("null");
        let result: MutationResult = serde_json::from_str(body)
            .map_err(|e| DbError::Invalid(format!("stored result: {e}")))?;
        if let MutationResult::Rejected { problem, .. } = &result
            && problem.problem_type.ends_with("/unknown-record")
        {
            let first_dot = serde_json::from_str::<Json>(body)
                .ok()
                .and_then(|b| serde_json::from_value::<Dot>(b.get(FIRST_DOT)?.clone()).ok());
            // Rejected because the record was unknown, and nothing of it applied: its
            // reason may no longer hold (the server lost the record in a restore, and
            // another device sent it again since). Replaying the rejection would make
            // the device create the record once more, over the copy the server holds
            // now, and count its sums twice (simulation seed 35783); it is evaluated
            // again, as a compacted rejection is.
            return Ok(KeyState::Again(first_dot));
        }
        return Ok(KeyState::Answer(Box::new(
            state.history.in_current_names(result, &m.entity_type),
        )));
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

/// Stores a mutation's result under its key, in the transaction that applied it.
pub(crate) async fn store_result(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    request_hash: &str,
    result: &MutationResult,
) -> Result<(), ServerError> {
    let expires = time::format(state.now() + state.config.idempotency_retention);
    // Kept in the origin shape, like the hash: a replay after an upgrade that renamed
    // fields is read in the names of the model then (see `crate::history`).
    let mut stored = serde_json::to_value(state.history.in_origin_names(result, &m.entity_type))
        .expect("results serialise");
    // A rejection as `unknown-record` is evaluated again when retried (IDEM-1); its dot
    // is kept with it, so that the retry counts as this delivery. A device that turned
    // the mutation into a create of the record under a new key (the server lost the
    // record) carries this dot into the record; a device restored from a backup of its
    // own database sends the mutation again under its key, with another dot when its
    // runtime drew dots at first sending (before dots were drawn at queueing) or the
    // backup held the item without one, and must be found in the record all the same
    // (simulation seed 7316).
    if let (MutationResult::Rejected { problem, .. }, Some(dot), Some(obj)) =
        (result, &m.dot, stored.as_object_mut())
        && problem.problem_type.ends_with("/unknown-record")
    {
        obj.insert(
            FIRST_DOT.into(),
            serde_json::to_value(dot).expect("dots serialise"),
        );
    }
    let body = stored.to_string();
    // The outcome's kind outlives the stored result (see `current_answer`).
    let status = match result {
        MutationResult::Applied { .. } => 200,
        MutationResult::Conflict { .. } => 409,
        MutationResult::Rejected { problem, .. } => i64::from(problem.status),
    };
    tx.execute(
        &state.sql.key_store,
        &[
            Arg::Text(account.into()),
            Arg::Text(m.idempotency_key.clone()),
            Arg::Text(request_hash.into()),
            Arg::Int(status),
            Arg::Text(body),
            Arg::Text(state.now_text()),
            Arg::Text(expires),
        ],
    )
    .await?;
    Ok(())
}

/// Gives each key `m` names in [`Mutation::replaces`] whose mutation applied nothing
/// (`conflict`, or rejected) `m`'s result, under that key (PROTOCOL.md IDEM-6): `m`
/// carries its change and was applied, so a retry of it (a device restored from a backup
/// of its own database sends it again) is answered `applied` instead of being merged or
/// created a second time. Keys of other accounts, keys this server does not hold, and
/// keys whose mutation applied are left as they are.
///
/// [`Mutation::replaces`]: sync_runtime::protocol::Mutation::replaces
pub(crate) async fn store_replaced(
    state: &State,
    tx: &mut Tx<'_>,
    account: &str,
    m: &Mutation,
    result: &MutationResult,
) -> Result<(), ServerError> {
    let (Some(keys), MutationResult::Applied { .. }) = (&m.replaces, result) else {
        return Ok(());
    };
    let expires = time::format(state.now() + state.config.idempotency_retention);
    let stored = serde_json::to_value(state.history.in_origin_names(result, &m.entity_type))
        .expect("results serialise");
    for key in keys {
        let mut body = stored.clone();
        body["idempotency_key"] = Json::String(key.clone());
        tx.execute(
            &state.sql.key_replace,
            &[
                Arg::Int(200),
                Arg::Text(body.to_string()),
                Arg::Text(expires.clone()),
                Arg::Text(account.into()),
                Arg::Text(key.clone()),
            ],
        )
        .await?;
    }
    Ok(())
}
