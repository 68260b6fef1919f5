//! Finding `#[derive(Syncable)]` structs in parsed Rust source.
//!
//! This is the same parser the derive macro uses, applied to every struct that derives
//! `Syncable` (by its bare name or any path ending in `Syncable`) in a file, including
//! structs inside inline `mod x { ... }` blocks. Walking `mod x;` declarations across
//! files is the CLI's job; it calls [`entities_in_file`] once per file.

use syn::spanned::Spanned;
use syn::{Item, ItemStruct};

use crate::model::Model;
use crate::parse::{ParsedEntity, parse_item_struct};

/// Whether the struct has `#[derive(..., Syncable, ...)]` (also `sync_runtime::Syncable`).
pub fn derives_syncable(item: &ItemStruct) -> bool {
    item.attrs.iter().any(|attr| {
        if !attr.path().is_ident("derive") {
            return false;
        }
        let mut found = false;
        let _ = attr.parse_nested_meta(|meta| {
            if meta
                .path
                .segments
                .last()
                .is_some_and(|s| s.ident == "Syncable")
            {
                found = true;
            }
            Ok(())
        });
        found
    })
}

/// Every `Syncable` struct in a file, in source order, with all errors combined.
///
/// `#[cfg]` and `#[cfg_attr]` on a `Syncable` struct or its fields are rejected: the
/// migrations and the API describe one schema for every build, so a struct whose
/// shape depends on a build flag cannot be generated from source alone.
///
/// # Errors
/// A [`syn::Error`] combining the errors of every `Syncable` struct in the file (see
/// [`parse_derive_input`](crate::parse_derive_input)), a `#[cfg]` or `#[cfg_attr]` on
/// one of them or their fields, and each inline module behind `#[cfg]` that holds one.
pub fn entities_in_file(file: &syn::File) -> Result<Vec<ParsedEntity>, syn::Error> {
    let mut out = Vec::new();
    let mut errors: Option<syn::Error> = None;
    walk(&file.items, &mut out, &mut errors);
    match errors {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

fn walk(items: &[Item], out: &mut Vec<ParsedEntity>, errors: &mut Option<syn::Error>) {
    let push_err = |e: syn::Error, errors: &mut Option<syn::Error>| match errors {
        Some(all) => all.combine(e),
        None => *errors = Some(e),
    };
    for item in items {
        match item {
            Item::Struct(s) if derives_syncable(s) => {
                if let Err(e) = reject_cfg(s) {
                    push_err(e, errors);
                    continue;
                }
                match parse_item_struct(s) {
                    Ok(p) => out.push(p),
                    Err(e) => push_err(e, errors),
                }
            }
            Item::Mod(m) => {
                if is_cfg_test(&m.attrs) {
                    continue;
                }
                if let Some((_, inner)) = &m.content {
                    let before = out.len();
                    walk(inner, out, errors);
                    if out.len() > before
                        && let Some(cfg) = m.attrs.iter().find(|a| a.path().is_ident("cfg"))
                    {
                        out.truncate(before);
                        push_err(
                            syn::Error::new(
                                cfg.span(),
                                format!(
                                    "module `{}` holds Syncable structs but is behind #[cfg]; syncgen generates one schema for every build, so move the structs out of the conditional module",
                                    m.ident
                                ),
                            ),
                            errors,
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether the attributes hold `#[cfg(test)]`: test-only modules are not part of the
/// model and are skipped.
pub fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|i| i == "test")
    })
}

fn reject_cfg(s: &ItemStruct) -> Result<(), syn::Error> {
    let attrs = s
        .attrs
        .iter()
        .chain(s.fields.iter().flat_map(|f| f.attrs.iter()));
    for attr in attrs {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            return Err(syn::Error::new(
                attr.span(),
                "syncgen generates one schema for every build, so #[cfg] and #[cfg_attr] are not supported on a Syncable struct or its fields; move build-dependent data into a #[sync(json)] field or a separate entity",
            ));
        }
    }
    Ok(())
}

/// Parses Rust source text and returns the model of every `Syncable` struct in it.
///
/// # Errors
/// A [`syn::Error`] if `src` is not valid Rust (the first syntax error only), otherwise
/// the errors of [`entities_in_file`]. Rules across entities (unique names, references
/// that resolve) are not checked: run [`validate_model`](crate::validate_model) on the
/// result.
pub fn parse_source(src: &str) -> Result<Model, syn::Error> {
    let file = syn::parse_file(src)?;
    Ok(Model {
        entities: entities_in_file(&file)?
            .into_iter()
            .map(|p| p.entity)
            .collect(),
    })
}
