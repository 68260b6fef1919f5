//! A field's wire value as a database column value: the one mapping both the local store
//! and the reference server bind values with.
//!
//! | field type | wire JSON | [`ColumnValue`] |
//! |---|---|---|
//! | any, absent or `null` | `null` | `Null` |
//! | `bool` | boolean | `Bool` |
//! | integers | number without a fraction, within `i64` | `Int` |
//! | `f32`, `f64` | number | `Real` |
//! | `String`, `Uuid` | string | `Text`, as sent |
//! | `DateTime<Utc>` | RFC 3339 string | `Text` in the canonical form ([`crate::time::format`]) |
//! | `Vec<u8>` | array of numbers 0-255 | `Blob` |
//! | sets, `json` | any | `Text` holding the JSON |
//!
//! How each database stores the value (SQLite `INTEGER` 0/1 for a bool, PostgreSQL
//! `BYTEA` from hex) is the database layer's part; what a valid value is, is decided here.

use serde_json::Value as Json;
use sync_model::{Field, ScalarType, TypeKind};

/// A value ready to bind to a column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValue {
    /// SQL `NULL`.
    Null,
    /// A boolean (SQLite stores it as `INTEGER` 0 or 1).
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Real(f64),
    /// Text: strings, UUIDs, canonical timestamps, JSON.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// A wire value that does not fit its field's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: expected {expected}")]
pub struct ColumnError {
    /// The field's Rust name.
    pub field: String,
    /// What the field's type takes, in words ("an integer", "an RFC 3339 timestamp").
    pub expected: &'static str,
}

impl ColumnValue {
    /// The column value of `field`'s wire value `v` (see the module's table).
    ///
    /// # Errors
    ///
    /// [`ColumnError`] if `v` is not a value of the field's type: a string for an
    /// integer, a fraction or a number beyond `i64` for an integer, a timestamp that is
    /// not RFC 3339, an array holding anything but bytes.
    pub fn from_wire(field: &Field, v: &Json) -> Result<Self, ColumnError> {
        if v.is_null() {
            return Ok(ColumnValue::Null);
        }
        let bad = |expected: &'static str| ColumnError {
            field: field.name.clone(),
            expected,
        };
        Ok(match &field.ty.kind {
            TypeKind::Set { .. } | TypeKind::Json { .. } => ColumnValue::Text(v.to_string()),
            TypeKind::Scalar { scalar } => match scalar {
                ScalarType::Bool => ColumnValue::Bool(v.as_bool().ok_or_else(|| bad("a boolean"))?),
                ScalarType::F32 | ScalarType::F64 => {
                    ColumnValue::Real(v.as_f64().ok_or_else(|| bad("a number"))?)
                }
                s if s.is_integer() => {
                    ColumnValue::Int(v.as_i64().ok_or_else(|| bad("an integer"))?)
                }
                ScalarType::String | ScalarType::Uuid => {
                    ColumnValue::Text(v.as_str().ok_or_else(|| bad("a string"))?.to_owned())
                }
                ScalarType::Timestamp => ColumnValue::Text(
                    v.as_str()
                        .and_then(crate::time::canonical)
                        .ok_or_else(|| bad("an RFC 3339 timestamp"))?,
                ),
                ScalarType::Bytes => {
                    let items = v.as_array().ok_or_else(|| bad("an array of bytes"))?;
                    let bytes: Option<Vec<u8>> = items
                        .iter()
                        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                        .collect();
                    ColumnValue::Blob(bytes.ok_or_else(|| bad("an array of bytes"))?)
                }
                // `is_integer` covers the remaining scalars.
                _ => ColumnValue::Int(v.as_i64().ok_or_else(|| bad("an integer"))?),
            },
        })
    }
}

/// Writes every timestamp field of `record` in the canonical form
/// ([`crate::time::format`]), as its column stores it and every read gives it back: so a
/// record reads the same in a push result as in `GET /changes`. Values that are not RFC
/// 3339 text are left for [`ColumnValue::from_wire`] to refuse.
pub fn canonical_timestamps(entity: &sync_model::Entity, record: &mut crate::Record) {
    for f in entity.synced_fields() {
        if let TypeKind::Scalar {
            scalar: ScalarType::Timestamp,
        } = f.ty.kind
            && let Some(Json::String(s)) = record.get_mut(&f.name)
            && let Some(c) = crate::time::canonical(s)
        {
            *s = c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sync_model::{FieldType, MergeStrategy};

    fn field(scalar: ScalarType) -> Field {
        Field {
            rust_name: "f".into(),
            name: "f".into(),
            column: "f".into(),
            ty: FieldType {
                kind: TypeKind::Scalar { scalar },
                nullable: true,
            },
            merge: MergeStrategy::Lww,
            id: false,
            skip: false,
            immutable: false,
            references: None,
            renamed_from: None,
            default: None,
            docs: String::new(),
        }
    }

    #[test]
    fn each_type_maps_to_its_column_value() {
        let cases = [
            (ScalarType::Bool, json!(true), ColumnValue::Bool(true)),
            (ScalarType::I64, json!(-3), ColumnValue::Int(-3)),
            (ScalarType::F64, json!(1.5), ColumnValue::Real(1.5)),
            (
                ScalarType::String,
                json!("x"),
                ColumnValue::Text("x".into()),
            ),
            (
                ScalarType::Timestamp,
                json!("2026-11-30T12:00:00+01:00"),
                ColumnValue::Text("2026-11-30T11:00:00.000000Z".into()),
            ),
            (
                ScalarType::Bytes,
                json!([0, 255]),
                ColumnValue::Blob(vec![0, 255]),
            ),
            (ScalarType::I32, Json::Null, ColumnValue::Null),
        ];
        for (ty, wire, want) in cases {
            assert_eq!(
                ColumnValue::from_wire(&field(ty), &wire),
                Ok(want),
                "{ty:?}"
            );
        }
    }

    #[test]
    fn a_value_of_the_wrong_shape_names_the_field_and_the_type() {
        let cases = [
            (ScalarType::I64, json!("1"), "an integer"),
            (ScalarType::I64, json!(1.5), "an integer"),
            (ScalarType::Bool, json!(1), "a boolean"),
            (
                ScalarType::Timestamp,
                json!("2026-11-30 12:00"),
                "an RFC 3339 timestamp",
            ),
            (ScalarType::Bytes, json!([256]), "an array of bytes"),
        ];
        for (ty, wire, expected) in cases {
            let err = ColumnValue::from_wire(&field(ty), &wire).unwrap_err();
            assert_eq!(err.expected, expected, "{ty:?} {wire}");
            assert_eq!(err.to_string(), format!("field `f`: expected {expected}"));
        }
    }
}
