//! Garbage collection: tombstones, change rows and idempotency keys past their windows.

use super::*;

/// Collects tombstones and change-log rows older than `before` for every account;
/// tokens older than what was collected become expired (410).
pub(crate) async fn collect_garbage(
    state: &State,
    before: chrono::DateTime<chrono::Utc>,
) -> Result<u64, ServerError> {
    let sql = &state.sql;
    let mut tx = state.db.begin().await?;
    let cutoff = time::format(before);
    let accounts = tx.query(&sql.accounts_all, &[]).await?;
    let mut removed = 0;
    for a in accounts {
        let account = a[0].as_str().unwrap_or_default().to_string();
        let rows = tx
            .query(
                &sql.changes_before,
                &[Arg::Text(account.clone()), Arg::Text(cutoff.clone())],
            )
            .await?;
        let Some(max_seq) = rows.iter().filter_map(|r| r[0].as_i64()).max() else {
            continue;
        };
        for e in state.entities.values().map(|o| o.model()) {
            removed += tx
                .execute(
                    &sql.entity(e)?.collect_tombstones,
                    &[Arg::Text(account.clone()), Arg::Int(max_seq)],
                )
                .await?;
        }
        // The change at the horizon stays: tokens issued for it are still valid, and
        // its commit time is what their tags are checked against. So do the rows of
        // deletes: slim tombstones, by which a late mutation of a collected record is
        // told from one of a record this database never held (`collected_before`).
        tx.execute(
            &sql.changes_collect,
            &[Arg::Text(account.clone()), Arg::Int(max_seq)],
        )
        .await?;
        tx.execute(
            &sql.account_raise_horizon,
            &[Arg::Int(max_seq), Arg::Text(account), Arg::Int(max_seq)],
        )
        .await?;
    }
    // Idempotency keys past their retention are compacted, not deleted: the stored
    // result goes, the key and its request hash stay (and leave the expiry index's range),
    // so a device that re-sends the mutation however much later is answered with the
    // record as it is now, and its mutation still counts once.
    tx.execute(
        &sql.keys_compact,
        &[Arg::Text(state.now_text()), Arg::Text(time::NEVER.into())],
    )
    .await?;
    tx.commit().await?;
    Ok(removed)
}
