//! Record access: reading a record with its metadata, writing a new version (with its
//! change row), and the account's change counter.

use super::*;
use sync_model::sql::meta;

/// A record as stored.
pub(crate) struct Stored {
    pub(crate) record: sync_runtime::Record,
    pub(crate) clocks: Json,
    pub(crate) version: i64,
    pub(crate) deleted: bool,
    pub(crate) server_updated_at: String,
}

pub(crate) async fn load(
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
        q(d, meta::ACCOUNT),
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

pub(crate) fn stored_from_row(
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

pub(crate) fn server_record(e: &Entity, id: Uuid, s: Stored) -> ServerRecord {
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
pub(crate) async fn lock_account(tx: &mut Tx<'_>, account: &str) -> Result<i64, ServerError> {
    let d = tx.dialect();
    tx.execute(
        &format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO NOTHING",
            q(d, meta::ACCOUNTS),
            q(d, meta::ACCOUNT),
            ph(d, 1, "TEXT"),
            q(d, meta::ACCOUNT)
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
                q(d, meta::ACCOUNTS),
                q(d, meta::ACCOUNT),
                ph(d, 1, "TEXT")
            ),
            &[Arg::Text(account.into())],
        )
        .await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0))
}

/// Writes the record and its change under the next sequence number.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write(
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
        (meta::CLOCKS, Arg::Text(clocks.to_string()), json_ty),
        (meta::VERSION, Arg::Int(version), big),
        (meta::SEQ, Arg::Int(seq), big),
        (meta::SERVER_UPDATED_AT, Arg::Text(ts.clone()), ts_type(d)),
        (meta::DELETED, Arg::Bool(deleted), boolean),
    ] {
        cols.push(q(d, c));
        args.push(a);
        types.push(t);
    }
    let id_col = q(d, &e.id_field().column);
    let account_col = q(d, meta::ACCOUNT);
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
            q(d, meta::CHANGES),
            q(d, meta::ACCOUNT),
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
pub(crate) async fn save_seq(tx: &mut Tx<'_>, account: &str, seq: i64) -> Result<(), ServerError> {
    let d = tx.dialect();
    let big = big_type(d);
    tx.execute(
        &format!(
            "UPDATE {} SET {} = {} WHERE {} = {}",
            q(d, meta::ACCOUNTS),
            q(d, "last_seq"),
            ph(d, 1, big),
            q(d, meta::ACCOUNT),
            ph(d, 2, "TEXT")
        ),
        &[Arg::Int(seq), Arg::Text(account.into())],
    )
    .await?;
    Ok(())
}

/// The columns `stored_from_row` reads: the synced fields, then the sync metadata.
pub(crate) fn record_columns(d: sync_model::sql::Dialect, e: &Entity) -> Vec<String> {
    let mut cols: Vec<String> = e.synced_fields().map(|f| sel(d, &f.column)).collect();
    for c in [
        meta::CLOCKS,
        meta::VERSION,
        meta::DELETED,
        meta::SERVER_UPDATED_AT,
    ] {
        cols.push(sel(d, c));
    }
    cols
}
