//! The one text form of a point in time, shared by the client store, the engine, the
//! reference server and the CLI.
//!
//! Every timestamp syncgen writes (record fields of type `DateTime<Utc>`, `updated_at`
//! metadata, idempotency-key expiries, retry times) is RFC 3339 in UTC with exactly six
//! fractional digits and a `Z`: `2026-11-30T12:00:00.123456Z`. Microseconds are the
//! precision every target database keeps (SQLite `TEXT`, PostgreSQL `TIMESTAMPTZ`,
//! MySQL `DATETIME(6)`); finer digits are truncated, never rounded, so a value read back
//! from any database compares equal to the one written. The fixed width makes the text
//! order the time order, which the stores rely on when they compare stored times as
//! text.

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};

/// The latest time the canonical form is used for as a "never" sentinel.
pub const NEVER: &str = "9999-12-31T00:00:00.000000Z";

/// `t` in the canonical form (RFC 3339, UTC, microseconds, `Z`). Digits below the
/// microsecond are dropped.
pub fn format(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The current wall-clock time in the canonical form.
pub fn now() -> String {
    format(Utc::now())
}

/// An RFC 3339 timestamp with any offset, as UTC. Strict: the seconds and the offset
/// are required (what the wire and the client store hold). `None` if `s` is not
/// RFC 3339.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.to_utc())
}

/// Like [`parse`], but also takes the text forms databases print for a timestamp with a
/// time zone (`2026-11-30 12:00:00.5 +00:00`, chrono's relaxed form), for values the
/// server reads back from its database. `None` if `s` is neither.
pub fn parse_lenient(s: &str) -> Option<DateTime<Utc>> {
    parse(s).or_else(|| s.parse::<DateTime<FixedOffset>>().ok().map(|t| t.to_utc()))
}

/// The canonical form of an RFC 3339 timestamp (see [`parse`] and [`format()`]); `None` if
/// `s` is not RFC 3339.
pub fn canonical(s: &str) -> Option<String> {
    parse(s).map(format)
}

/// The canonical form of a timestamp a database printed (see [`parse_lenient`]); `None`
/// if `s` is not a timestamp.
pub fn canonical_lenient(s: &str) -> Option<String> {
    parse_lenient(s).map(format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_form_has_six_digits_and_truncates() {
        let t = parse("2026-11-30T13:00:00.1234567+01:00").unwrap();
        assert_eq!(format(t), "2026-11-30T12:00:00.123456Z");
        assert_eq!(
            canonical("2026-11-30T12:00:00Z").as_deref(),
            Some("2026-11-30T12:00:00.000000Z")
        );
        assert_eq!(
            canonical("2026-11-30T12:00Z"),
            None,
            "strict: seconds are required"
        );
        assert_eq!(
            canonical("2026-11-30T12:00:00"),
            None,
            "strict: so is the offset"
        );
        assert_eq!(
            canonical_lenient("2026-11-30 12:00:00.5 +00:00").as_deref(),
            Some("2026-11-30T12:00:00.500000Z")
        );
        assert_eq!(canonical("yesterday"), None);
        assert_eq!(canonical(NEVER).as_deref(), Some(NEVER));
    }

    #[test]
    fn text_order_is_time_order() {
        let a = format(parse("2026-11-30T12:00:00.9Z").unwrap());
        let b = format(parse("2026-11-30T12:00:01Z").unwrap());
        assert!(a < b, "{a} < {b}");
    }
}
