//! Hybrid logical clocks: timestamps that follow wall time but never go backwards and
//! order causally related events, even when device clocks disagree.
//!
//! An [`Hlc`] is `(millis, counter, node)`. It orders by wall milliseconds, then by the
//! logical counter, then by node id, so two distinct devices never produce equal stamps
//! and last-writer-wins ties are broken the same way on every replica.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A node (device or server) identifier, unique per replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u64);

impl NodeId {
    /// A random node id (from a v4 UUID's random bits).
    pub fn random() -> Self {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        NodeId(u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")))
    }
}

/// A hybrid logical clock timestamp.
///
/// Its text form, used on the wire, is `MMMMMMMMMMMM-CCCCCCCC-NNNNNNNNNNNNNNNN`: wall
/// milliseconds since the Unix epoch (12 hex digits), the counter (8 hex digits) and the
/// node id (16 hex digits). Fixed width makes the strings sort like the stamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hlc {
    /// Wall-clock milliseconds since the Unix epoch (at most 2^48 - 1).
    pub millis: u64,
    /// Logical counter, for events in the same millisecond.
    pub counter: u32,
    /// The node that made the stamp.
    pub node: NodeId,
}

/// The largest `millis` an [`Hlc`] can carry (year 10889).
pub const MAX_MILLIS: u64 = (1 << 48) - 1;

impl Hlc {
    /// The zero stamp, older than any real one.
    pub const ZERO: Hlc = Hlc {
        millis: 0,
        counter: 0,
        node: NodeId(0),
    };

    /// A stamp from its parts.
    pub fn new(millis: u64, counter: u32, node: NodeId) -> Self {
        Hlc {
            millis: millis.min(MAX_MILLIS),
            counter,
            node,
        }
    }
}

impl Hlc {
    /// The text form in a fixed buffer (no allocation, no formatting machinery: stamps
    /// are written on every local edit).
    fn encode(&self) -> [u8; 38] {
        let mut out = [b'-'; 38];
        // 12 hex digits are the low 6 bytes of the millis (at most `MAX_MILLIS`).
        let put = |bytes: &[u8], to: &mut [u8]| {
            hex::encode_to_slice(bytes, to).expect("the slices have twice the bytes' length");
        };
        put(&self.millis.to_be_bytes()[2..], &mut out[0..12]);
        put(&self.counter.to_be_bytes(), &mut out[13..21]);
        put(&self.node.0.to_be_bytes(), &mut out[22..38]);
        out
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let buf = self.encode();
        f.write_str(std::str::from_utf8(&buf).expect("hex digits and dashes are ASCII"))
    }
}

/// A string that is not an [`Hlc`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid HLC timestamp `{0}`: expected 12, 8 and 16 hex digits separated by `-`")]
pub struct ParseHlcError(String);

impl FromStr for Hlc {
    type Err = ParseHlcError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Fixed layout `mmmmmmmmmmmm-cccccccc-nnnnnnnnnnnnnnnn`, decoded byte by byte: this
        // runs for every clock of every pulled record.
        let err = || ParseHlcError(s.chars().take(64).collect());
        let b = s.as_bytes();
        if b.len() != 38 || b[12] != b'-' || b[21] != b'-' {
            return Err(err());
        }
        // Big-endian bytes into the low end of a u64.
        let hex = |part: &[u8]| -> Option<u64> {
            let mut buf = [0u8; 8];
            hex::decode_to_slice(part, &mut buf[8 - part.len() / 2..]).ok()?;
            Some(u64::from_be_bytes(buf))
        };
        match (hex(&b[..12]), hex(&b[13..21]), hex(&b[22..])) {
            (Some(millis), Some(counter), Some(node)) => Ok(Hlc {
                millis,
                counter: counter as u32,
                node: NodeId(node),
            }),
            _ => Err(err()),
        }
    }
}

impl Serialize for Hlc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buf = self.encode();
        s.serialize_str(std::str::from_utf8(&buf).expect("ASCII"))
    }
}

impl<'de> Deserialize<'de> for Hlc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Hlc {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Hlc".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{12}-[0-9a-f]{8}-[0-9a-f]{16}$",
            "description": "Hybrid logical clock: wall milliseconds, counter and node id in fixed-width hex; sorts like the clock.",
            "examples": ["019a1b2c3d4e-00000000-7f3a9c1d2e4b5a60"]
        })
    }
}

/// A hybrid logical clock for one node.
///
/// [`HlcClock::now`] stamps a local event; [`HlcClock::observe`] merges a stamp received
/// from another node, so the next local stamp is greater than everything seen.
#[derive(Debug)]
pub struct HlcClock {
    node: NodeId,
    last: Mutex<Hlc>,
}

impl HlcClock {
    /// A clock for `node`, starting from the zero stamp.
    pub fn new(node: NodeId) -> Self {
        HlcClock {
            node,
            last: Mutex::new(Hlc::ZERO),
        }
    }

    /// A clock that continues after `last` (for example the greatest stamp persisted locally).
    pub fn resume(node: NodeId, last: Hlc) -> Self {
        HlcClock {
            node,
            last: Mutex::new(last),
        }
    }

    /// This clock's node id.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// A new stamp for a local event, using the system clock.
    pub fn now(&self) -> Hlc {
        self.now_at(wall_millis())
    }

    /// A new stamp for a local event at wall time `wall` (milliseconds since the epoch).
    pub fn now_at(&self, wall: u64) -> Hlc {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let wall = wall.min(MAX_MILLIS);
        let next = if wall > last.millis {
            Hlc::new(wall, 0, self.node)
        } else {
            Self::bump(&last, self.node)
        };
        *last = next;
        next
    }

    /// Merges a stamp received from elsewhere and returns the stamp of the receive event.
    pub fn observe(&self, remote: Hlc) -> Hlc {
        self.observe_at(remote, wall_millis())
    }

    /// [`HlcClock::observe`] at wall time `wall`.
    pub fn observe_at(&self, remote: Hlc, wall: u64) -> Hlc {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let wall = wall.min(MAX_MILLIS);
        let millis = wall.max(last.millis).max(remote.millis);
        let counter = if millis == last.millis && millis == remote.millis {
            last.counter.max(remote.counter).saturating_add(1)
        } else if millis == last.millis {
            last.counter.saturating_add(1)
        } else if millis == remote.millis {
            remote.counter.saturating_add(1)
        } else {
            0
        };
        let next = Hlc::new(millis, counter, self.node);
        *last = next;
        next
    }

    fn bump(last: &Hlc, node: NodeId) -> Hlc {
        match last.counter.checked_add(1) {
            Some(c) => Hlc::new(last.millis, c, node),
            // Counter exhausted within one millisecond: borrow the next millisecond.
            None => Hlc::new(last.millis + 1, 0, node),
        }
    }
}

fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A struct field's name as read by the generated deserialisers: borrowed from the input
/// when it can be, so reading a key does not allocate.
#[doc(hidden)]
pub struct FieldKey<'de>(std::borrow::Cow<'de, str>);

impl FieldKey<'_> {
    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for FieldKey<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = FieldKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(FieldKey(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldKey(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(FieldKey(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// Serialises a `<Name>Clocks` struct: a map of wire name to stamp, in field order.
///
/// The derive calls this (and [`deserialize_clocks`]) instead of deriving serde for every
/// clocks struct: one shared, non-generic-per-entity implementation compiles once, where a
/// derive per entity cost more to compile than serde's derive on the entity itself.
#[doc(hidden)]
pub fn serialize_clocks<S: Serializer>(
    s: S,
    name: &'static str,
    fields: &[(&'static str, &Hlc)],
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct(name, fields.len())?;
    for (key, value) in fields {
        st.serialize_field(key, value)?;
    }
    st.end()
}

/// Deserialises a `<Name>Clocks` struct into `out` (one slot per name in `fields`, in
/// order), as serde's derive with `#[serde(default)]` on every field would: a missing
/// field keeps its slot's value, an unknown field is ignored, a repeated field is an
/// error, and a sequence fills the slots in order.
#[doc(hidden)]
pub fn deserialize_clocks<'de, D: Deserializer<'de>>(
    d: D,
    name: &'static str,
    fields: &'static [&'static str],
    out: &mut [Hlc],
) -> Result<(), D::Error> {
    use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};

    struct ClocksVisitor<'a> {
        name: &'static str,
        fields: &'static [&'static str],
        out: &'a mut [Hlc],
    }

    impl<'de> Visitor<'de> for ClocksVisitor<'_> {
        type Value = ();

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "struct {}", self.name)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            // Repeats are caught for the first 128 fields (no allocation on this path).
            let mut seen: u128 = 0;
            while let Some(key) = map.next_key::<FieldKey<'de>>()? {
                match self.fields.iter().position(|f| *f == key.as_str()) {
                    Some(i) => {
                        let bit = 1u128.checked_shl(i as u32).unwrap_or(0);
                        if seen & bit != 0 {
                            return Err(de::Error::duplicate_field(self.fields[i]));
                        }
                        seen |= bit;
                        self.out[i] = map.next_value()?;
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            for slot in self.out.iter_mut() {
                match seq.next_element()? {
                    Some(hlc) => *slot = hlc,
                    None => break,
                }
            }
            Ok(())
        }
    }

    d.deserialize_struct(name, fields, ClocksVisitor { name, fields, out })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_sorts() {
        let a = Hlc::new(0x19a1b2c3d4e, 7, NodeId(42));
        let b = Hlc::new(0x19a1b2c3d4e, 8, NodeId(1));
        assert_eq!(a.to_string().parse::<Hlc>().unwrap(), a);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert!("nope".parse::<Hlc>().is_err());
        assert!(
            "019a1b2c3d4e-0000000g-0000000000000001"
                .parse::<Hlc>()
                .is_err()
        );
    }

    #[test]
    fn parsing_accepts_exactly_the_fixed_layout() {
        let max = Hlc::new(0xffff_ffff_ffff, u32::MAX, NodeId(u64::MAX));
        assert_eq!(max.to_string().parse::<Hlc>().unwrap(), max);
        assert_eq!(
            "019A1B2C3D4E-0000000A-000000000000002A"
                .parse::<Hlc>()
                .unwrap(),
            Hlc::new(0x19a1b2c3d4e, 10, NodeId(42))
        );
        for bad in [
            "",
            "019a1b2c3d4e-00000007-000000000000002",
            "019a1b2c3d4e-00000007-000000000000002a0",
            "019a1b2c3d4e_00000007-000000000000002a",
            "019a1b2c3d4e-00000007_000000000000002a",
            "019a1b2c3d4-e00000007-000000000000002a",
            "+19a1b2c3d4e-00000007-000000000000002a",
            "019a1b2c3d4e-00000007-00000000000000é",
        ] {
            assert!(bad.parse::<Hlc>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn now_is_monotonic_even_if_the_wall_clock_goes_back() {
        let c = HlcClock::new(NodeId(1));
        let a = c.now_at(1_000);
        let b = c.now_at(900);
        let d = c.now_at(900);
        assert!(a < b && b < d);
        assert_eq!(b.millis, 1_000);
    }

    #[test]
    fn observe_moves_past_the_remote_stamp() {
        let c = HlcClock::new(NodeId(1));
        c.now_at(1_000);
        let remote = Hlc::new(5_000, 3, NodeId(2));
        let seen = c.observe_at(remote, 1_001);
        assert!(seen > remote);
        assert!(c.now_at(1_002) > seen);
    }

    #[test]
    fn serde_uses_the_text_form() {
        let h = Hlc::new(1, 2, NodeId(3));
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, "\"000000000001-00000002-0000000000000003\"");
        assert_eq!(serde_json::from_str::<Hlc>(&json).unwrap(), h);
    }
}
