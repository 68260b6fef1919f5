//! Garbage collection: tombstones, change rows and idempotency keys past their windows.

use super::*;
use sync_model::sql::meta;

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
                sel(d, meta::ACCOUNT),
                q(d, meta::ACCOUNTS)
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
                    q(d, meta::CHANGES),
                    q(d, meta::ACCOUNT),
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
                        q(d, meta::ACCOUNT),
                        ph(d, 1, "TEXT"),
                        q(d, meta::DELETED),
                        q(d, meta::SEQ),
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
                q(d, meta::CHANGES),
                q(d, meta::ACCOUNT),
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
                q(d, meta::ACCOUNTS),
                q(d, "horizon_seq"),
                ph(d, 1, big),
                q(d, meta::ACCOUNT),
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
            t = q(d, meta::IDEMPOTENCY),
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
