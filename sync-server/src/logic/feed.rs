//! `GET /changes` and `GET /snapshot`: change tokens and snapshot cursors, how they are
//! checked, and the pages.

use super::*;

/// A change token as the client sent it: the sequence number it stands for, the newest
/// change the server had shown when it issued the token, and the tag that binds both to
/// changes of one account in this database (`None` for a legacy `t1.` token, which
/// carried none).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    /// The feed continues after this change.
    pub(crate) seq: i64,
    /// The newest change the reads that issued the token saw (`seq` or later). A record
    /// those reads found already moved past `seq` was left for a later page; a database
    /// that lost change `seen` (a restore) may have moved such a record back behind
    /// `seq`, where the feed would never show it again, so it refuses the token. Equal to
    /// `seq` in `t2.` and `t1.` tokens.
    pub(crate) seen: i64,
    pub(crate) tag: Option<String>,
}

impl Token {
    /// The token's text: `t3.<seq>.<seen>.<tag>` when `seen` is past `seq`, else
    /// `t2.<seq>.<tag>`, or the legacy `t1.<seq>`.
    pub(crate) fn encode(&self) -> String {
        match &self.tag {
            Some(tag) if self.seen != self.seq => format!("t3.{}.{}.{tag}", self.seq, self.seen),
            Some(tag) => format!("t2.{}.{tag}", self.seq),
            None => format!("t1.{}", self.seq),
        }
    }
}

/// The tag of a token or cursor for `seq`: the first 16 hex digits of
/// `SHA-256(account, seq, commit time of change seq)` (an empty commit time for 0), and,
/// when the token also names a later change `seen`, of `seen` and its commit time too.
///
/// A database restored from a backup, or replaced, and then written to again gives its
/// change `seq` (or `seen`) another commit time (or has none): the tags of tokens issued
/// before no longer match, and the tokens are refused, where a bare sequence number would
/// have been taken as valid and the changes between the backup and the restore skipped.
/// A token of another account never matches either.
pub(crate) fn tag(
    account: &str,
    seq: i64,
    committed_at: &str,
    seen: Option<(i64, &str)>,
) -> String {
    let text = match seen {
        Some((seen, seen_at)) => format!("{account}\n{seq}\n{committed_at}\n{seen}\n{seen_at}"),
        None => format!("{account}\n{seq}\n{committed_at}"),
    };
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// A change token for `seq` (see [`Token::encode`] and [`tag`]), naming `seen` too when it
/// is past `seq`.
pub(crate) fn token(
    account: &str,
    seq: i64,
    committed_at: &str,
    seen: Option<(i64, &str)>,
) -> String {
    let seen = seen.filter(|(s, _)| *s != seq);
    Token {
        seq,
        seen: seen.map_or(seq, |(s, _)| s),
        tag: Some(tag(account, seq, committed_at, seen)),
    }
    .encode()
}

/// A sequence number as tokens spell it: 1 to 18 ASCII digits (no sign, no space).
fn seq_digits(s: &str) -> Option<i64> {
    let digits = (1..=18).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| s.parse().ok()).flatten()
}

/// A tag as tokens spell it: 16 hex digits (either case), lower-cased.
fn tag_digits(s: &str) -> Option<String> {
    (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// Parses the part of a token after its `t<n>.` (or a cursor's `s<n>.`) prefix: the
/// token, and what follows it after a dot (`None` when nothing does).
fn parse_token_body(version: u8, rest: &str) -> Option<(Token, Option<&str>)> {
    let mut parts = rest.splitn(
        if version == 3 {
            4
        } else {
            version as usize + 1
        },
        '.',
    );
    let seq = seq_digits(parts.next()?)?;
    let seen = if version == 3 {
        seq_digits(parts.next()?)?
    } else {
        seq
    };
    let tag = if version == 1 {
        None
    } else {
        Some(tag_digits(parts.next()?)?)
    };
    Some((Token { seq, seen, tag }, parts.next()))
}

/// Parses `t3.<seq>.<seen>.<tag>`, `t2.<seq>.<tag>`, or a legacy `t1.<seq>` (no tag):
/// exactly the strings
/// [`CHANGE_TOKEN_PATTERN`](sync_runtime::protocol::CHANGE_TOKEN_PATTERN) matches.
pub(crate) fn parse_token(t: &str) -> Option<Token> {
    let (version, rest) = match t.get(..3)? {
        "t1." => (1, &t[3..]),
        "t2." => (2, &t[3..]),
        "t3." => (3, &t[3..]),
        _ => return None,
    };
    match parse_token_body(version, rest)? {
        (token, None) => Some(token),
        (_, Some(_)) => None,
    }
}

/// The commit time of the account's change `seq`, if the change log holds it.
pub(crate) async fn committed_at(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
    seq: i64,
) -> Result<Option<String>, ServerError> {
    if seq == 0 {
        return Ok(Some(String::new()));
    }
    let rows = tx
        .query(
            &sql.change_committed_at,
            &[Arg::Text(account.into()), Arg::Int(seq)],
        )
        .await?;
    Ok(rows
        .first()
        .and_then(|r| r[0].as_str().and_then(time::canonical_lenient)))
}

/// The account's newest change this transaction sees: its sequence number and commit
/// time (`(0, "")` before the first).
pub(crate) async fn last_change(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
) -> Result<(i64, String), ServerError> {
    let rows = tx
        .query(&sql.change_last, &[Arg::Text(account.into())])
        .await?;
    Ok(rows
        .first()
        .and_then(|r| {
            let at = r[1].as_str().and_then(time::canonical_lenient)?;
            Some((r[0].as_i64()?, at))
        })
        .unwrap_or_default())
}

/// The token for the account's change `seq`, naming `seen` too when it is past `seq` (a
/// legacy `t1.` token if the change log no longer holds change `seq`: it was collected by
/// a server version that kept no row at the horizon).
pub(crate) async fn token_for(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
    seq: i64,
    seen: Option<(i64, &str)>,
) -> Result<String, ServerError> {
    Ok(match committed_at(tx, sql, account, seq).await? {
        Some(c) => token(account, seq, &c, seen),
        None => format!("t1.{seq}"),
    })
}

/// Checks a token (or a snapshot cursor's pinned token) against the account's history:
/// [`ServerError::TokenExpired`] below the horizon (collected; the client re-snapshots
/// and drops what the server no longer has), [`ServerError::TokenUnknown`] for one this
/// database did not issue to this account (ahead of its counter, or a tag that does not
/// match: a restore, a replaced database, another account's token; the client
/// re-snapshots and pushes again what the server lost).
pub(crate) async fn check_token(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
    t: &Token,
) -> Result<(), ServerError> {
    let (last_seq, horizon_seq) = horizon(tx, sql, account).await?;
    if t.seq > last_seq || t.seen > last_seq || t.seen < t.seq {
        return Err(ServerError::TokenUnknown);
    }
    if t.seq < horizon_seq {
        return Err(ServerError::TokenExpired);
    }
    let Some(expected) = &t.tag else {
        return Ok(());
    };
    let seen = if t.seen == t.seq {
        None
    } else {
        match committed_at(tx, sql, account, t.seen).await? {
            Some(c) => Some((t.seen, c)),
            None => return Err(ServerError::TokenUnknown),
        }
    };
    let seen = seen.as_ref().map(|(s, c)| (*s, c.as_str()));
    match committed_at(tx, sql, account, t.seq).await? {
        Some(c) if tag(account, t.seq, &c, seen) == *expected => Ok(()),
        Some(_) => Err(ServerError::TokenUnknown),
        // At the horizon, collected by a server version that kept no row there.
        None if t.seq == horizon_seq => Ok(()),
        None => Err(ServerError::TokenUnknown),
    }
}

/// The account's counter and horizon: tokens below the horizon are expired (their
/// tombstones were collected).
pub(crate) async fn horizon(
    tx: &mut Tx<'_>,
    sql: &Statements,
    account: &str,
) -> Result<(i64, i64), ServerError> {
    let rows = tx
        .query(&sql.account_horizon, &[Arg::Text(account.into())])
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
    let zero = Token {
        seq: 0,
        seen: 0,
        tag: None,
    };
    let since_token = since.unwrap_or(&zero);
    check_token(&mut tx, &state.sql, account, since_token).await?;
    let since = since_token.seq;
    let rows = tx
        .query(
            &state.sql.changes_page,
            &[
                Arg::Text(account.into()),
                Arg::Int(since),
                Arg::Int(i64::from(limit) + 1),
            ],
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
        let rows = tx
            .query(
                &state.sql.entity(e)?.changed_between,
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
            // Read after the records: a record this page left out because it had moved
            // past `next` moved at a change no later than this one (FEED-2).
            let (seen, seen_at) = last_change(&mut tx, &state.sql, account).await?;
            let seen = (seen > next).then_some((seen, seen_at.as_str()));
            token(account, next, &c, seen)
        }
        // Nothing read, nothing left out: the same token back (FEED-1).
        None => {
            let seen = match since_token.seen {
                s if s == since => None,
                s => committed_at(&mut tx, &state.sql, account, s)
                    .await?
                    .map(|c| (s, c)),
            };
            let seen = seen.as_ref().map(|(s, c)| (*s, c.as_str()));
            token_for(&mut tx, &state.sql, account, since, seen).await?
        }
    };
    tx.commit().await?;
    out.sort_unstable_by_key(|(seq, _)| *seq);
    Ok((
        out.into_iter().map(|(_, r)| r).collect(),
        next_token,
        has_more,
    ))
}

/// A snapshot cursor: the pinned token's text with an `s` for its `t`
/// (`s3.<seq>.<seen>.<tag>`, `s2.<seq>.<tag>` or the legacy `s1.<seq>`), then
/// `.<entity index>.<last id>`.
pub(crate) struct Cursor {
    pub(crate) pinned: Token,
    pub(crate) entity: usize,
    pub(crate) after: Option<Uuid>,
}

impl Cursor {
    pub(crate) fn encode(&self) -> String {
        let after = self.after.map(|u| u.to_string()).unwrap_or_default();
        let pinned = self.pinned.encode();
        format!("s{}.{}.{after}", &pinned[1..], self.entity)
    }

    /// Parses a cursor: exactly the strings
    /// [`SNAPSHOT_CURSOR_PATTERN`](sync_runtime::protocol::SNAPSHOT_CURSOR_PATTERN) matches.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (version, rest) = match s.get(..3)? {
            "s1." => (1, &s[3..]),
            "s2." => (2, &s[3..]),
            "s3." => (3, &s[3..]),
            _ => return None,
        };
        let (pinned, rest) = parse_token_body(version, rest)?;
        let (entity, after) = rest?.split_once('.')?;
        let entity_ok =
            (1..=9).contains(&entity.len()) && entity.bytes().all(|b| b.is_ascii_digit());
        let entity = entity_ok.then(|| entity.parse().ok()).flatten()?;
        let after = match after {
            "" => None,
            // The hyphenated form only (`Uuid::parse_str` also takes others).
            id if id.len() == 36 => Some(id.parse().ok()?),
            _ => return None,
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
    only: Option<usize>,
    limit: u32,
) -> Result<(Vec<ServerRecord>, Option<Cursor>, String, Option<u64>), ServerError> {
    // The entities this snapshot covers, by their place in the snapshot order.
    let end = only.map_or(state.entity_order.len(), |i| i + 1);
    let d = state.db.dialect();
    let mut tx = state.db.begin().await?;
    let first_page = cursor.is_none();
    let mut cur = match cursor {
        Some(c) => {
            check_token(&mut tx, &state.sql, account, &c.pinned).await?;
            c
        }
        None => {
            let (last_seq, _) = horizon(&mut tx, &state.sql, account).await?;
            let pinned = token_for(&mut tx, &state.sql, account, last_seq, None).await?;
            Cursor {
                pinned: parse_token(&pinned).expect("a token this server made"),
                entity: only.unwrap_or(0),
                after: None,
            }
        }
    };
    // The first page says how many records the whole snapshot holds (rows come and go
    // with changes after the pinned token, so an estimate: a progress bar's total).
    let mut total = None;
    if first_page {
        let mut n: u64 = 0;
        for name in &state.entity_order[cur.entity..end] {
            let e = state.entities[name].model();
            let rows = tx
                .query(
                    &state.sql.entity(e)?.snapshot_count,
                    &[Arg::Text(account.into()), Arg::Int(cur.pinned.seq)],
                )
                .await?;
            let count = rows.first().and_then(|r| r[0].as_i64()).unwrap_or(0);
            n = n.saturating_add(u64::try_from(count).unwrap_or(0));
        }
        total = Some(n);
    }
    let mut out = Vec::new();
    while out.len() < limit as usize && cur.entity < end {
        let ops = &state.entities[&state.entity_order[cur.entity]];
        let e = ops.model();
        let statements = state.sql.entity(e)?;
        let want = limit as usize - out.len();
        let page = i64::try_from(want + 1).unwrap_or(i64::MAX);
        let account_arg = Arg::Text(account.into());
        let pinned = Arg::Int(cur.pinned.seq);
        let rows = match cur.after {
            Some(id) => {
                tx.query(
                    &statements.snapshot_after,
                    &[
                        account_arg,
                        pinned,
                        Arg::Text(id.to_string()),
                        Arg::Int(page),
                    ],
                )
                .await?
            }
            None => {
                tx.query(
                    &statements.snapshot_first,
                    &[account_arg, pinned, Arg::Int(page)],
                )
                .await?
            }
        };
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
    // A record this page left out because it had moved past the pinned token moved at a
    // change no later than the newest one seen now: the cursor and the token name it, so
    // that a database which lost it (a restore) refuses them (FEED-2).
    let (seen, seen_at) = last_change(&mut tx, &state.sql, account).await?;
    if seen > cur.pinned.seen
        && cur.pinned.tag.is_some()
        && let Some(c) = committed_at(&mut tx, &state.sql, account, cur.pinned.seq).await?
    {
        cur.pinned.seen = seen;
        cur.pinned.tag = Some(tag(account, cur.pinned.seq, &c, Some((seen, &seen_at))));
    }
    tx.commit().await?;
    let pinned = cur.pinned.encode();
    let next = (cur.entity < end).then_some(cur);
    Ok((out, next, pinned, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sync_runtime::protocol::{CHANGE_TOKEN_PATTERN, SNAPSHOT_CURSOR_PATTERN};

    /// The server takes exactly the tokens and cursors the document's patterns allow.
    #[test]
    fn tokens_and_cursors_are_what_the_document_says() {
        let token_re = regex::Regex::new(CHANGE_TOKEN_PATTERN).unwrap();
        let cursor_re = regex::Regex::new(SNAPSHOT_CURSOR_PATTERN).unwrap();
        let tag = "0123456789abcdef";
        let id = "0192e0a8-8a1e-7c3c-9a60-1f6c7c1e4a9e";
        let tokens = [
            "t1.0".to_string(),
            "t1.42".into(),
            format!("t2.42.{tag}"),
            format!("t2.42.{}", tag.to_uppercase()),
            format!("t2.{}.{tag}", "9".repeat(18)),
            format!("t2.{}.{tag}", "9".repeat(19)),
            "t1.+5".into(),
            "t1.-5".into(),
            "t1. 5".into(),
            "t1.".into(),
            "t2.42".into(),
            format!("t2.42.{tag}0"),
            format!("t2.42.{}", &tag[1..]),
            "t2.42.0123456789abcdeg".into(),
            "t3.42".into(),
            format!("t3.42.{tag}"),
            format!("t3.42.50.{tag}"),
            format!("t3.42.50.{}", tag.to_uppercase()),
            format!("t3.42.{}.{tag}", "9".repeat(19)),
            format!("t3.42.+50.{tag}"),
            format!("t3.42.50.{tag}.0"),
            "t4.42".into(),
            String::new(),
        ];
        for t in &tokens {
            assert_eq!(
                parse_token(t).is_some(),
                token_re.is_match(t),
                "token `{t}`"
            );
        }
        let cursors = [
            format!("s2.42.{tag}.0."),
            format!("s2.42.{tag}.3.{id}"),
            format!("s2.42.{tag}.3.{}", id.to_uppercase()),
            format!("s1.42.1.{id}"),
            "s1.42.0.".into(),
            format!("s2.42.{tag}.+3."),
            format!("s2.42.{tag}.1234567890."),
            format!("s2.42.{tag}.3.{}", id.replace('-', "")),
            format!("s2.42.{tag}.3.{{{id}}}"),
            format!("s2.42.{tag}.3"),
            "s1.+42.0.".into(),
            format!("s2.42.{}.0.", &tag[1..]),
            format!("s3.42.50.{tag}.0."),
            format!("s3.42.50.{tag}.3.{id}"),
            format!("s3.42.{tag}.3.{id}"),
            format!("s3.42.50.{}.0.", &tag[1..]),
        ];
        for c in &cursors {
            assert_eq!(
                Cursor::parse(c).is_some(),
                cursor_re.is_match(c),
                "cursor `{c}`"
            );
        }
        // What the server issues parses back.
        let at = "2026-11-30T00:00:00.000000Z";
        for issued in [
            token("a", 7, at, None),
            token("a", 7, at, Some((7, at))),
            token("a", 7, at, Some((9, at))),
        ] {
            assert!(token_re.is_match(&issued), "{issued}");
            let parsed = parse_token(&issued).unwrap();
            assert_eq!(parsed.encode(), issued);
            let c = Cursor {
                pinned: parsed.clone(),
                entity: 2,
                after: Some(id.parse().unwrap()),
            };
            let text = c.encode();
            assert!(cursor_re.is_match(&text), "{text}");
            assert_eq!(Cursor::parse(&text).unwrap().pinned, parsed);
        }
        // Naming the later change changes the tag: a token is bound to both.
        assert_ne!(
            parse_token(&token("a", 7, at, Some((9, at)))).unwrap().tag,
            parse_token(&token("a", 7, at, None)).unwrap().tag
        );
    }
}
