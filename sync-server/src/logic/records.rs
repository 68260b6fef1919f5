//! Record access: reading a record with its metadata, writing a new version (with its
//! change row), and the account's change counter.

use super::*;

/// A record as stored.
pub(crate) struct Stored {
    pub(crate) record: sync_runtime::Record,
    pub(crate) clocks: Json,
    /// The contributions its `sum` fields include (PROTOCOL.md SUM-2), kept in the
    /// clocks column under [`DOTS_KEY`] (no field is named so: wire names are
    /// identifiers), so that no table needed a new column.
    pub(crate) dots: Dots,
    /// The contributions below its dots it lacks (PROTOCOL.md SUM-3), kept in the clocks
    /// column under [`DOT_GAPS_KEY`].
    pub(crate) gaps: DotGaps,
    /// The version this life of the record began at, when it began with a create of a
    /// deleted id ([`ServerRecord::life_since`], PROTOCOL.md SUM-4), kept in the clocks
    /// column under [`LIFE_SINCE_KEY`].
    pub(crate) life_since: Option<i64>,
    pub(crate) version: i64,
    pub(crate) deleted: bool,
    pub(crate) server_updated_at: String,
}

impl Stored {
    /// A live record's new version, before it is written (the write sets
    /// `server_updated_at`).
    pub(crate) fn live(
        record: sync_runtime::Record,
        clocks: Json,
        (dots, gaps): (Dots, DotGaps),
        version: i64,
    ) -> Self {
        Stored {
            record,
            clocks,
            dots,
            gaps,
            life_since: None,
            version,
            deleted: false,
            server_updated_at: String::new(),
        }
    }
}

pub(crate) async fn load(
    tx: &mut Tx<'_>,
    sql: &Statements,
    e: &Entity,
    account: &str,
    id: Uuid,
) -> Result<Option<Stored>, ServerError> {
    let rows = tx
        .query(
            &sql.entity(e)?.load,
            &[Arg::Text(account.into()), Arg::Text(id.to_string())],
        )
        .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    Ok(Some(stored_from_row(tx.dialect(), e, row)?))
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
    let mut clocks = match it.next().unwrap_or(Json::Null) {
        Json::String(s) if d.json_reads_as_text() => serde_json::from_str(&s).unwrap_or(Json::Null),
        other => other,
    };
    let dots = clocks
        .as_object_mut()
        .and_then(|m| m.remove(DOTS_KEY))
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let gaps = clocks
        .as_object_mut()
        .and_then(|m| m.remove(DOT_GAPS_KEY))
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let life_since = clocks
        .as_object_mut()
        .and_then(|m| m.remove(LIFE_SINCE_KEY))
        .and_then(|v| v.as_i64());
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
        dots,
        gaps,
        life_since,
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
        dots: (!s.dots.is_empty()).then_some(s.dots),
        dot_gaps: (!s.gaps.is_empty()).then_some(s.gaps),
        life_since: s.life_since,
    }
}

/// Locks the account's counter and returns its current value.
pub(crate) async fn lock_account(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
) -> Result<i64, ServerError> {
    tx.execute(&sql.account_ensure, &[Arg::Text(account.into())])
        .await?;
    let rows = tx
        .query(&sql.account_lock, &[Arg::Text(account.into())])
        .await?;
    Ok(rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0))
}

/// The member of the clocks column that holds a record's [`Stored::dots`].
pub(crate) const DOTS_KEY: &str = "~dots";

/// The member of the clocks column that holds a record's [`Stored::gaps`].
pub(crate) const DOT_GAPS_KEY: &str = "~dot_gaps";

/// The member of the clocks column that holds a record's [`Stored::life_since`].
pub(crate) const LIFE_SINCE_KEY: &str = "~life_since";

/// Writes the record and its change under the next sequence number.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn write(
    tx: &mut Tx<'_>,
    sql: &Statements,
    e: &Entity,
    account: &str,
    id: Uuid,
    record: &sync_runtime::Record,
    clocks: &Json,
    (dots, gaps, life_since): (&Dots, &DotGaps, Option<i64>),
    version: i64,
    deleted: bool,
    last_seq: &mut i64,
    exists: bool,
    ts: &str,
) -> Result<String, ServerError> {
    // The account's counter is locked by the caller's transaction; the new value is
    // written once, when the push's mutations are done.
    let seq = *last_seq + 1;
    let ts = ts.to_string();
    // In the order of `EntityStatements::insert` and `update`.
    let mut args = Vec::new();
    for f in e.synced_fields() {
        args.push(
            encode(f, record.get(&f.name).unwrap_or(&Json::Null))
                .map_err(ServerError::BadRecord)?,
        );
    }
    let clocks = match clocks {
        Json::Object(m) if !dots.is_empty() || life_since.is_some() => {
            let mut m = m.clone();
            if let Some(v) = life_since {
                m.insert(LIFE_SINCE_KEY.into(), Json::from(v));
            }
            if !dots.is_empty() {
                m.insert(
                    DOTS_KEY.into(),
                    serde_json::to_value(dots).expect("dots serialise"),
                );
            }
            if !dots.is_empty() && !gaps.is_empty() {
                m.insert(
                    DOT_GAPS_KEY.into(),
                    serde_json::to_value(gaps).expect("gaps serialise"),
                );
            }
            Json::Object(m).to_string()
        }
        other => other.to_string(),
    };
    args.extend([
        Arg::Text(clocks),
        Arg::Int(version),
        Arg::Int(seq),
        Arg::Text(ts.clone()),
        Arg::Bool(deleted),
        Arg::Text(account.into()),
    ]);
    let statements = sql.entity(e)?;
    if exists {
        args.push(Arg::Text(id.to_string()));
        tx.execute(&statements.update, &args).await?;
    } else {
        tx.execute(&statements.insert, &args).await?;
    }
    tx.execute(
        &sql.change_insert,
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
pub(crate) async fn save_seq(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
    seq: i64,
) -> Result<(), ServerError> {
    tx.execute(
        &sql.account_save_seq,
        &[Arg::Int(seq), Arg::Text(account.into())],
    )
    .await?;
    Ok(())
}
