//! Recognising a field's Rust type as a logical type.
//!
//! The derive macro only sees syntax, so types are recognised by their last path
//! segment (`String`, `std::string::String` and `alloc::string::String` are the same).
//! The generated code then asks the compiler to confirm it through trait bounds, so a
//! type alias that hides something else still fails to compile at the field.

use quote::ToTokens;
use syn::{GenericArgument, PathArguments, Type};

use crate::model::{Collection, FieldType, ScalarType, TypeKind};

/// Renders a type the way a user wrote it, without the spaces `quote` inserts.
pub(crate) fn type_to_string(ty: &Type) -> String {
    let raw = ty.to_token_stream().to_string();
    let mut out = String::with_capacity(raw.len());
    for part in raw.split(' ').filter(|p| !p.is_empty()) {
        let word = |c: char| c.is_alphanumeric() || c == '_' || c == '\'';
        let needs_space = out.ends_with(word) && part.starts_with(word);
        if needs_space || out.ends_with(',') {
            out.push(' ');
        }
        out.push_str(part);
    }
    out
}

/// The last segment of a path type and its generic arguments.
fn last_segment(ty: &Type) -> Option<(String, Vec<&Type>)> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let seg = path.path.segments.last()?;
    let args = match &seg.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|arg| match arg {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Some((seg.ident.to_string(), args))
}

const SUPPORTED: &str = "supported types are bool, i8, i16, i32, i64, u8, u16, u32, f32, f64, String, \
Uuid, DateTime<Utc>, Vec<u8>, Option<T> of those, and BTreeSet<T>, HashSet<T> or Vec<T> with \
#[sync(merge = \"union\")]; add #[sync(json)] to store any other serde type as JSON";

/// Classifies a field type. `json` is the field's `#[sync(json)]` flag.
pub(crate) fn classify(ty: &Type, json: bool) -> Result<FieldType, syn::Error> {
    if json {
        if let Some((name, args)) = last_segment(ty)
            && name == "Option"
            && args.len() == 1
        {
            return Ok(FieldType {
                kind: TypeKind::Json {
                    rust_type: type_to_string(args[0]),
                },
                nullable: true,
            });
        }
        return Ok(FieldType {
            kind: TypeKind::Json {
                rust_type: type_to_string(ty),
            },
            nullable: false,
        });
    }
    if let Some((name, args)) = last_segment(ty)
        && name == "Option"
    {
        let [inner] = args.as_slice() else {
            return Err(syn::Error::new_spanned(
                ty,
                "`Option` takes one type argument",
            ));
        };
        if let Some((inner_name, _)) = last_segment(inner) {
            if inner_name == "Option" {
                return Err(syn::Error::new_spanned(
                    ty,
                    "`Option<Option<T>>` cannot be stored in one nullable column; use `Option<T>`, or #[sync(json)]",
                ));
            }
            if matches!(inner_name.as_str(), "BTreeSet" | "HashSet")
                || (inner_name == "Vec" && scalar(inner)?.is_none())
            {
                return Err(syn::Error::new_spanned(
                    ty,
                    "an optional collection is ambiguous (is `None` different from empty?); use the collection itself, which defaults to empty",
                ));
            }
        }
        let Some(s) = scalar(inner)? else {
            return Err(syn::Error::new_spanned(
                inner,
                format!(
                    "unsupported field type `{}`: {SUPPORTED}",
                    type_to_string(inner)
                ),
            ));
        };
        return Ok(FieldType {
            kind: TypeKind::Scalar { scalar: s },
            nullable: true,
        });
    }
    if let Some(s) = scalar(ty)? {
        return Ok(FieldType {
            kind: TypeKind::Scalar { scalar: s },
            nullable: false,
        });
    }
    if let Some((name, args)) = last_segment(ty) {
        let collection = match name.as_str() {
            "BTreeSet" => Some(Collection::BTreeSet),
            "HashSet" => Some(Collection::HashSet),
            "Vec" => Some(Collection::Vec),
            _ => None,
        };
        if let Some(collection) = collection {
            let Some(item_ty) = args.first() else {
                return Err(syn::Error::new_spanned(
                    ty,
                    format!("`{name}` needs an item type"),
                ));
            };
            let item = match scalar(item_ty)? {
                Some(ScalarType::F32 | ScalarType::F64) => {
                    return Err(syn::Error::new_spanned(
                        item_ty,
                        "floats have no total order, so they cannot be set items; store them with #[sync(json)]",
                    ));
                }
                Some(ScalarType::Bytes) if collection != Collection::Vec => ScalarType::Bytes,
                Some(s) => s,
                None => {
                    return Err(syn::Error::new_spanned(
                        item_ty,
                        format!(
                            "unsupported set item type `{}`: items must be a scalar (bool, integers, String, Uuid, DateTime<Utc>); add #[sync(json)] to store the whole collection as JSON",
                            type_to_string(item_ty)
                        ),
                    ));
                }
            };
            return Ok(FieldType {
                kind: TypeKind::Set { collection, item },
                nullable: false,
            });
        }
    }
    Err(syn::Error::new_spanned(
        ty,
        format!(
            "unsupported field type `{}`: {SUPPORTED}",
            type_to_string(ty)
        ),
    ))
}

/// A scalar type, `Ok(None)` for something else, or an error for a type that must not be used.
fn scalar(ty: &Type) -> Result<Option<ScalarType>, syn::Error> {
    let Some((name, args)) = last_segment(ty) else {
        return match ty {
            Type::Reference(_) => Err(syn::Error::new_spanned(
                ty,
                "a syncable entity owns its data: use an owned type such as `String` or `Vec<u8>` instead of a reference",
            )),
            _ => Ok(None),
        };
    };
    let s = match name.as_str() {
        "bool" => ScalarType::Bool,
        "i8" => ScalarType::I8,
        "i16" => ScalarType::I16,
        "i32" => ScalarType::I32,
        "i64" => ScalarType::I64,
        "u8" => ScalarType::U8,
        "u16" => ScalarType::U16,
        "u32" => ScalarType::U32,
        "f32" => ScalarType::F32,
        "f64" => ScalarType::F64,
        "String" => ScalarType::String,
        "Uuid" => ScalarType::Uuid,
        "u64" | "usize" => {
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "`{name}` cannot round-trip through every target database (PostgreSQL has no unsigned 64-bit integer) nor through JSON numbers in JavaScript clients; use `i64`, or `u32` if the value is small"
                ),
            ));
        }
        "i128" | "u128" => {
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "`{name}` has no column type in SQLite, PostgreSQL and MySQL alike; use `i64`, or a `String` (for example a decimal representation)"
                ),
            ));
        }
        "isize" => {
            return Err(syn::Error::new_spanned(
                ty,
                "`isize` changes width between platforms; use `i64` (or `i32`)",
            ));
        }
        "char" => {
            return Err(syn::Error::new_spanned(
                ty,
                "`char` has no column type in every target database; use `String`",
            ));
        }
        "str" => {
            return Err(syn::Error::new_spanned(ty, "use `String` instead of `str`"));
        }
        "NaiveDateTime" | "NaiveDate" | "SystemTime" | "OffsetDateTime" | "Timestamp" => {
            return Err(syn::Error::new_spanned(
                ty,
                format!(
                    "syncgen stores points in time as `chrono::DateTime<Utc>` (microsecond precision in every database); use `DateTime<Utc>` instead of `{name}`, or add #[sync(json)]"
                ),
            ));
        }
        "DateTime" => {
            let utc = args
                .first()
                .and_then(|a| last_segment(a))
                .is_some_and(|(n, _)| n == "Utc");
            if !utc {
                return Err(syn::Error::new_spanned(
                    ty,
                    "timestamps are synced in UTC: use `DateTime<Utc>` and convert to local time for display",
                ));
            }
            ScalarType::Timestamp
        }
        "Vec" => match args.first().map(|a| last_segment(a)) {
            Some(Some((item, _))) if item == "u8" => ScalarType::Bytes,
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    if !matches!(s, ScalarType::Bytes) && !args.is_empty() && name != "DateTime" {
        return Ok(None);
    }
    Ok(Some(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &str) -> Type {
        syn::parse_str(s).unwrap()
    }

    fn kind(s: &str) -> FieldType {
        classify(&ty(s), false).unwrap()
    }

    #[test]
    fn recognises_scalars_by_last_segment() {
        assert_eq!(
            kind("std::string::String").kind,
            TypeKind::Scalar {
                scalar: ScalarType::String
            }
        );
        assert_eq!(
            kind("uuid::Uuid").kind,
            TypeKind::Scalar {
                scalar: ScalarType::Uuid
            }
        );
        assert_eq!(
            kind("chrono::DateTime<chrono::Utc>").kind,
            TypeKind::Scalar {
                scalar: ScalarType::Timestamp
            }
        );
        assert_eq!(
            kind("Vec<u8>").kind,
            TypeKind::Scalar {
                scalar: ScalarType::Bytes
            }
        );
    }

    #[test]
    fn option_is_nullable() {
        let t = kind("Option<i64>");
        assert!(t.nullable);
        assert_eq!(
            t.kind,
            TypeKind::Scalar {
                scalar: ScalarType::I64
            }
        );
    }

    #[test]
    fn sets() {
        assert_eq!(
            kind("BTreeSet<String>").kind,
            TypeKind::Set {
                collection: Collection::BTreeSet,
                item: ScalarType::String
            }
        );
        assert_eq!(
            kind("Vec<Uuid>").kind,
            TypeKind::Set {
                collection: Collection::Vec,
                item: ScalarType::Uuid
            }
        );
    }

    #[test]
    fn json_keeps_the_written_type() {
        let t = classify(&ty("Option<serde_json::Value>"), true).unwrap();
        assert!(t.nullable);
        assert_eq!(
            t.kind,
            TypeKind::Json {
                rust_type: "serde_json::Value".into()
            }
        );
        let t = classify(&ty("HashMap<String, Vec<i32>>"), true).unwrap();
        assert_eq!(
            t.kind,
            TypeKind::Json {
                rust_type: "HashMap<String, Vec<i32>>".into()
            }
        );
    }

    #[test]
    fn rejects_types_that_do_not_round_trip() {
        for bad in [
            "u64",
            "usize",
            "u128",
            "i128",
            "isize",
            "char",
            "&str",
            "NaiveDateTime",
        ] {
            let err = classify(&ty(bad), false).unwrap_err().to_string();
            assert!(!err.is_empty(), "{bad}");
        }
        let err = classify(&ty("u64"), false).unwrap_err().to_string();
        assert!(err.contains("use `i64`"), "{err}");
        let err = classify(&ty("Foo"), false).unwrap_err().to_string();
        assert!(err.contains("#[sync(json)]"), "{err}");
        let err = classify(&ty("BTreeSet<f64>"), false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("floats"), "{err}");
    }
}
