//! Typed columns <-> wire JSON: the one place the local store maps values to SQLite.
//!
//! | logical | SQLite value |
//! |---|---|
//! | bool | INTEGER 0/1 |
//! | integers | INTEGER |
//! | floats | REAL |
//! | String | TEXT |
//! | Uuid | TEXT, hyphenated lower case |
//! | `DateTime<Utc>` | TEXT `YYYY-MM-DDTHH:MM:SS.ffffffZ` (sorts as time) |
//! | `Vec<u8>` | BLOB |
//! | sets, json | TEXT holding JSON |

use rusqlite::types::{Value as Sql, ValueRef};
use serde_json::Value as Json;
use sync_model::{Field, ScalarType, TypeKind};

use super::StoreError;

fn bad(field: &Field, what: &str) -> StoreError {
    StoreError::Corrupt(format!("field `{}`: {what}", field.name))
}

/// The SQLite value of a field's wire value.
pub(crate) fn to_sql(field: &Field, v: &Json) -> Result<Sql, StoreError> {
    if v.is_null() {
        return Ok(Sql::Null);
    }
    Ok(match &field.ty.kind {
        TypeKind::Set { .. } | TypeKind::Json { .. } => Sql::Text(v.to_string()),
        TypeKind::Scalar { scalar } => match scalar {
            ScalarType::Bool => Sql::Integer(i64::from(
                v.as_bool().ok_or_else(|| bad(field, "expected a bool"))?,
            )),
            ScalarType::F32 | ScalarType::F64 => {
                Sql::Real(v.as_f64().ok_or_else(|| bad(field, "expected a number"))?)
            }
            s if s.is_integer() => Sql::Integer(
                v.as_i64()
                    .ok_or_else(|| bad(field, "expected an integer"))?,
            ),
            ScalarType::String | ScalarType::Uuid => Sql::Text(
                v.as_str()
                    .ok_or_else(|| bad(field, "expected a string"))?
                    .to_owned(),
            ),
            ScalarType::Timestamp => {
                let s = v
                    .as_str()
                    .ok_or_else(|| bad(field, "expected a timestamp"))?;
                Sql::Text(
                    crate::time::canonical(s)
                        .ok_or_else(|| bad(field, "expected an RFC 3339 timestamp"))?,
                )
            }
            ScalarType::Bytes => {
                let items = v.as_array().ok_or_else(|| bad(field, "expected bytes"))?;
                let bytes: Option<Vec<u8>> = items
                    .iter()
                    .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                    .collect();
                Sql::Blob(bytes.ok_or_else(|| bad(field, "expected bytes"))?)
            }
            _ => unreachable!("every scalar is covered"),
        },
    })
}

/// The wire value of a field read from SQLite.
pub(crate) fn from_sql(field: &Field, v: ValueRef<'_>) -> Result<Json, StoreError> {
    if let ValueRef::Null = v {
        return Ok(Json::Null);
    }
    Ok(match (&field.ty.kind, v) {
        (TypeKind::Set { .. } | TypeKind::Json { .. }, ValueRef::Text(t)) => {
            serde_json::from_slice(t).map_err(|e| bad(field, &format!("invalid JSON: {e}")))?
        }
        (
            TypeKind::Scalar {
                scalar: ScalarType::Bool,
            },
            ValueRef::Integer(i),
        ) => Json::Bool(i != 0),
        (
            TypeKind::Scalar {
                scalar: ScalarType::F32 | ScalarType::F64,
            },
            ValueRef::Real(f),
        ) => serde_json::Number::from_f64(f).map_or(Json::Null, Json::Number),
        (
            TypeKind::Scalar {
                scalar: ScalarType::F32 | ScalarType::F64,
            },
            ValueRef::Integer(i),
        ) => Json::from(i as f64),
        (TypeKind::Scalar { scalar }, ValueRef::Integer(i)) if scalar.is_integer() => Json::from(i),
        (
            TypeKind::Scalar {
                scalar: ScalarType::String | ScalarType::Uuid | ScalarType::Timestamp,
            },
            ValueRef::Text(t),
        ) => Json::String(String::from_utf8_lossy(t).into_owned()),
        (
            TypeKind::Scalar {
                scalar: ScalarType::Bytes,
            },
            ValueRef::Blob(b),
        ) => Json::Array(b.iter().map(|x| Json::from(*x)).collect()),
        (_, other) => {
            return Err(bad(
                field,
                &format!("unexpected SQLite value {:?}", other.data_type()),
            ));
        }
    })
}
