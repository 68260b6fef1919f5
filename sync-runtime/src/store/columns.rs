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
use crate::column::ColumnValue;

fn bad(field: &Field, what: &str) -> StoreError {
    StoreError::Corrupt(format!("field `{}`: {what}", field.name))
}

/// The SQLite value of a field's wire value ([`ColumnValue::from_wire`]).
pub(crate) fn to_sql(field: &Field, v: &Json) -> Result<Sql, StoreError> {
    Ok(
        match ColumnValue::from_wire(field, v).map_err(|e| StoreError::Corrupt(e.to_string()))? {
            ColumnValue::Null => Sql::Null,
            ColumnValue::Bool(b) => Sql::Integer(i64::from(b)),
            ColumnValue::Int(i) => Sql::Integer(i),
            ColumnValue::Real(f) => Sql::Real(f),
            ColumnValue::Text(t) => Sql::Text(t),
            ColumnValue::Blob(b) => Sql::Blob(b),
        },
    )
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
