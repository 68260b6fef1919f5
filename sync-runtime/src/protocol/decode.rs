//! Decoding a push body strictly: what the OpenAPI document allows and nothing else. The
//! reference server decodes every push with [`decode_push_request`]; a Rust backend can
//! do the same.
//!
//! The body is parsed once, into a JSON tree that refuses a repeated member name
//! anywhere (`{"title": "a", "title": "b"}` has no single meaning, and two such bodies
//! would hash alike for idempotency), then read as a [`PushRequest`] from that tree,
//! whose types refuse unknown members. Every refusal carries a JSON Pointer to the member
//! at fault. The members of records, patches and clocks are checked per mutation, against
//! the entity (the reference server's `logic::shape`), so one bad mutation does not
//! refuse the others.

use std::fmt;

use super::{MAX_IDEMPOTENCY_KEY_CHARS, MAX_TRANSACTION_ID_CHARS, PushRequest, json_pointer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

/// Why a push body was refused: the answer's status, where, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail} (at `{pointer}`)")]
pub struct BodyError {
    /// 400 for text that is not JSON, 422 for JSON the document does not allow.
    pub status: u16,
    /// A JSON Pointer (RFC 6901) into the body (`""` for the whole body).
    pub pointer: String,
    /// What is wrong, in words.
    pub detail: String,
}

/// Decodes a push body (`POST /push`), strictly.
///
/// # Errors
///
/// [`BodyError`] with status 400 if `bytes` is not JSON; 422 for a repeated member name, an
/// unknown member, a member of the wrong type, `null` for `record`, `clocks`, `patch` or
/// `hlc`, an idempotency key that is empty or longer than [`MAX_IDEMPOTENCY_KEY_CHARS`],
/// or a transaction id that is empty or longer than [`MAX_TRANSACTION_ID_CHARS`].
pub fn decode_push_request(bytes: &[u8]) -> Result<PushRequest, BodyError> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let StrictJson(tree) = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let status = if e.inner().is_data() { 422 } else { 400 };
        refused(status, e.path(), e.inner().to_string())
    })?;
    json.end().map_err(|e| BodyError {
        status: 400,
        pointer: String::new(),
        detail: e.to_string(),
    })?;
    // `record`, `clocks`, `patch` and `hlc` are left out when unused, never `null` (the
    // document gives each a schema without `null`).
    for (i, m) in tree["mutations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for member in ["record", "clocks", "patch", "hlc"] {
            if m.get(member).is_some_and(Json::is_null) {
                return Err(BodyError {
                    status: 422,
                    pointer: json_pointer(["mutations", &i.to_string(), member]),
                    detail: format!("`{member}` is left out when unused, not `null`"),
                });
            }
        }
    }
    let request: PushRequest = serde_path_to_error::deserialize(tree)
        .map_err(|e| refused(422, e.path(), e.inner().to_string()))?;
    for (i, m) in request.mutations.iter().enumerate() {
        let chars = m.idempotency_key.chars().count();
        if chars == 0 || chars > MAX_IDEMPOTENCY_KEY_CHARS {
            return Err(BodyError {
                status: 422,
                pointer: json_pointer([
                    "mutations".to_string(),
                    i.to_string(),
                    "idempotency_key".to_string(),
                ]),
                detail: format!(
                    "an idempotency key has 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters; this one has {chars}"
                ),
            });
        }
        if let Some(t) = &m.transaction {
            let chars = t.chars().count();
            if chars == 0 || chars > MAX_TRANSACTION_ID_CHARS {
                return Err(BodyError {
                    status: 422,
                    pointer: json_pointer([
                        "mutations".to_string(),
                        i.to_string(),
                        "transaction".to_string(),
                    ]),
                    detail: format!(
                        "a transaction id has 1 to {MAX_TRANSACTION_ID_CHARS} characters; this one has {chars}"
                    ),
                });
            }
        }
    }
    Ok(request)
}

/// A refusal at `path`. Where serde reports an unknown member at the object holding it,
/// the pointer is made to name the member itself.
fn refused(status: u16, path: &serde_path_to_error::Path, detail: String) -> BodyError {
    let mut tokens: Vec<String> = path
        .iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
            serde_path_to_error::Segment::Map { key } => Some(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    if let Some(name) = detail
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
        && tokens.last().map(String::as_str) != Some(name)
    {
        tokens.push(name.to_string());
    }
    BodyError {
        status,
        pointer: json_pointer(tokens),
        detail,
    }
}

/// A JSON tree that refuses repeated member names.
struct StrictJson(Json);

impl<'de> de::Deserialize<'de> for StrictJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    /// A number with no fraction is an integer, as JSON Schema counts it (`791.0` is
    /// the integer 791, valid where the document says `integer`).
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        if v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64 {
            return Ok(Json::from(v as i64));
        }
        Ok(serde_json::Number::from_f64(v).map_or(Json::Null, Json::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(StrictVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictJson(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Json::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // The value's seed refuses a repeated name, so the error's path ends at it.
            let v = map.next_value_seed(Member {
                repeated: out.contains_key(&key),
            })?;
            out.insert(key, v);
        }
        Ok(Json::Object(out))
    }
}

/// The value of a member; refused if the member's name came before in its object.
struct Member {
    repeated: bool,
}

impl<'de> DeserializeSeed<'de> for Member {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        if self.repeated {
            return Err(de::Error::custom(
                "member name repeated in its object; each name may appear once",
            ));
        }
        d.deserialize_any(StrictVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> BodyError {
        decode_push_request(body.as_bytes()).expect_err(body)
    }

    const M: &str = r#""entity_type": "task", "entity_id": "0192e0a8-8a1e-7c3c-9a60-1f6c7c1e4a9e""#;

    #[test]
    fn a_repeated_member_is_refused_where_it_stands() {
        let r = refusal(&format!(
            r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "update", "patch": {{"title": {{"set": "a"}}, "title": {{"set": "b"}}}}}}]}}"#
        ));
        assert_eq!(r.status, 422);
        assert_eq!(r.pointer, "/mutations/0/patch/title");
        assert!(r.detail.contains("repeated"), "{}", r.detail);
        let r = refusal(r#"{"mutations": [], "mutations": []}"#);
        assert_eq!(r.pointer, "/mutations");
    }

    #[test]
    fn an_unknown_member_is_named_by_the_pointer() {
        let r = refusal(&format!(
            r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "delete", "extra": 1}}]}}"#
        ));
        assert_eq!((r.status, r.pointer.as_str()), (422, "/mutations/0/extra"));
        let r = refusal(r#"{"mutations": [], "pad": "x"}"#);
        assert_eq!(r.pointer, "/pad");
    }

    #[test]
    fn idempotency_keys_have_one_to_255_characters() {
        let body = |key: &str| {
            format!(r#"{{"mutations": [{{"idempotency_key": "{key}", {M}, "op": "delete"}}]}}"#)
        };
        let r = refusal(&body(""));
        assert_eq!(
            (r.status, r.pointer.as_str()),
            (422, "/mutations/0/idempotency_key")
        );
        assert!(decode_push_request(body(&"é".repeat(255)).as_bytes()).is_ok());
        assert_eq!(refusal(&body(&"k".repeat(256))).status, 422);
    }

    #[test]
    fn transaction_ids_have_one_to_64_characters() {
        let body = |t: &str| {
            format!(
                r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "delete", "transaction": "{t}"}}]}}"#
            )
        };
        let r = refusal(&body(""));
        assert_eq!(
            (r.status, r.pointer.as_str()),
            (422, "/mutations/0/transaction")
        );
        let ok = decode_push_request(body(&"é".repeat(64)).as_bytes()).unwrap();
        assert_eq!(
            ok.mutations[0].transaction.as_deref(),
            Some("é".repeat(64).as_str())
        );
        assert_eq!(refusal(&body(&"t".repeat(65))).status, 422);
    }

    /// Found by the `push_body` fuzz target: without serde_json's `float_roundtrip`, a
    /// long decimal parsed to a float one step away from the nearest, so a value sent as
    /// text came back (and was stored) as another number.
    #[test]
    fn floats_are_the_nearest_to_their_text_and_round_trip() {
        for text in [
            "222222222222222222222222",
            "2.2222222222222222e23",
            "0.1",
            "1e-300",
        ] {
            let body = format!(
                r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "update", "patch": {{"w": {{"set": {text}}}}}}}]}}"#
            );
            let r = decode_push_request(body.as_bytes()).unwrap();
            let v = r.mutations[0].patch.as_ref().unwrap()["w"]["set"].clone();
            let expected: f64 = text.parse().unwrap();
            assert_eq!(v.as_f64(), Some(expected), "{text}");
            let again = decode_push_request(&serde_json::to_vec(&r).unwrap()).unwrap();
            assert_eq!(again, r, "{text}");
        }
    }

    #[test]
    fn unused_members_are_left_out_not_null() {
        let r = refusal(&format!(
            r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "delete", "hlc": null}}]}}"#
        ));
        assert_eq!((r.status, r.pointer.as_str()), (422, "/mutations/0/hlc"));
        // `base_version` may be `null`.
        assert!(
            decode_push_request(
                format!(r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "delete", "base_version": null}}]}}"#)
                    .as_bytes()
            )
            .is_ok()
        );
    }

    #[test]
    fn text_that_is_not_json_is_400_and_a_wrong_type_422() {
        assert_eq!(refusal("{not json").status, 400);
        assert_eq!(refusal(r#"{"mutations": []} trailing"#).status, 400);
        let r = refusal(r#"{"mutations": 3}"#);
        assert_eq!((r.status, r.pointer.as_str()), (422, "/mutations"));
    }

    #[test]
    fn numbers_keep_their_kind() {
        let r = decode_push_request(
            format!(
                r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "update", "base_version": 3, "patch": {{"likes": {{"add": -2}}, "weight": {{"set": 1.5}}}}}}]}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let m = &r.mutations[0];
        assert_eq!(m.base_version, Some(3));
        assert_eq!(m.patch.as_ref().unwrap()["likes"]["add"], Json::from(-2));
        assert_eq!(m.patch.as_ref().unwrap()["weight"]["set"], Json::from(1.5));
        // `3.0` is the integer 3, as JSON Schema says.
        let r = decode_push_request(
            format!(r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "delete", "base_version": 3.0}}]}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.mutations[0].base_version, Some(3));
        let r = refusal(&format!(
            r#"{{"mutations": [{{"idempotency_key": "k", {M}, "op": "delete", "base_version": 3.5}}]}}"#
        ));
        assert_eq!(r.pointer, "/mutations/0/base_version");
    }
}
