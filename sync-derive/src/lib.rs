//! `#[derive(Syncable)]` for syncgen.
//!
//! A thin front end: the struct is parsed by `sync-model` (the same parser the CLI
//! uses), and this crate only expands the model into code on the traits of
//! `sync-runtime`. Use it through `sync_runtime::prelude::Syncable`; the attribute
//! reference is in the repository README and in `sync_model`'s docs.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, parse_macro_input};
use sync_model::{Field, MergeStrategy, ScalarType, TypeKind};

/// Derives `sync_runtime::Syncable` for a struct with named fields.
///
/// Generates, beside the struct, `<Name>Patch` (one optional operation per synced,
/// mutable field) and `<Name>Clocks` (one hybrid logical clock per `lww` field), and
/// implements `Syncable`, `Patch` and `Clocks` for them. Errors in `#[sync(...)]`
/// attributes are reported at the offending token, all at once.
#[proc_macro_derive(Syncable, attributes(sync))]
pub fn derive_syncable(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match sync_model::parse_derive_input(&input) {
        Ok(parsed) => expand(&input, parsed).into(),
        Err(err) => {
            let mut out = err.to_compile_error();
            out.extend(fallback(&input));
            out.into()
        }
    }
}

/// After an attribute error: an impl of `Syncable` and the `<Name>Patch`/`<Name>Clocks`
/// names whose bodies never run, so code using the type reports nothing beyond the
/// error itself (thiserror and clap do the same). Generic types get none: the bounds the
/// real impl would need are unknown.
fn fallback(input: &DeriveInput) -> TokenStream2 {
    // A custom runtime path (`#[sync(crate = "...")]`) is not known here: no fallback
    // rather than one that names a crate the user does not have.
    let custom_crate = input.attrs.iter().any(|a| {
        a.path().is_ident("sync")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().contains("crate"))
    });
    if !input.generics.params.is_empty() || custom_crate {
        return TokenStream2::new();
    }
    let name = &input.ident;
    let vis = &input.vis;
    let patch = format_ident!("{}Patch", name);
    let clocks = format_ident!("{}Clocks", name);
    let p = quote! { ::sync_runtime::__private };
    let never = quote! { ::core::unreachable!("`#[derive(Syncable)]` failed: see its error") };
    quote! {
        #[allow(dead_code)]
        #vis type #patch = #p::Unavailable;
        #[allow(dead_code)]
        #vis type #clocks = #p::Unavailable;
        #[allow(unused_variables)]
        impl #p::Syncable for #name {
            type Patch = #p::Unavailable;
            type Clocks = #p::Unavailable;
            const ENTITY: &'static str = "";
            const FINGERPRINT: &'static str = "";
            fn model() -> &'static #p::sync_model::Entity { #never }
            fn id(&self) -> #p::Uuid { #never }
            fn diff(old: &Self, new: &Self, hlc: #p::Hlc) -> ::core::result::Result<Self::Patch, #p::DiffError> { #never }
            fn apply(&mut self, patch: &Self::Patch) { #never }
            fn stamp(clocks: &mut Self::Clocks, patch: &Self::Patch) { #never }
            fn apply_concurrent(&mut self, clocks: &mut Self::Clocks, patch: &Self::Patch) -> ::std::vec::Vec<&'static str> { #never }
            fn merge_into(
                &mut self,
                clocks: &mut Self::Clocks,
                base: &Self,
                remote: &Self,
                remote_clocks: &Self::Clocks,
                conflicts: &mut ::std::vec::Vec<#p::FieldConflict>,
            ) { #never }
            fn normalize(&mut self) { #never }
            fn validate(&self) -> ::core::result::Result<(), #p::InvalidValue> { #never }
            fn to_record(&self) -> ::core::result::Result<#p::Record, #p::RecordError> { #never }
            fn from_record(record: &#p::Record) -> ::core::result::Result<Self, #p::RecordError> { #never }
        }
    }
}

/// A model field with its syntax.
struct F<'a> {
    model: &'a Field,
    ident: &'a syn::Ident,
    ty: &'a syn::Type,
}

impl F<'_> {
    fn json(&self) -> bool {
        matches!(self.model.ty.kind, TypeKind::Json { .. })
    }
    fn patched(&self) -> bool {
        !self.model.skip && !self.model.id && !self.model.immutable
    }
    fn clocked(&self) -> bool {
        self.patched() && self.model.merge == MergeStrategy::Lww
    }
}

fn expand(input: &DeriveInput, parsed: sync_model::ParsedEntity) -> TokenStream2 {
    let entity = &parsed.entity;
    let rt: syn::Path = parsed
        .runtime_crate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::sync_runtime));
    let p = quote!(#rt::__private);

    let Data::Struct(data) = &input.data else {
        unreachable!("the parser only accepts structs")
    };
    let Fields::Named(named) = &data.fields else {
        unreachable!("the parser only accepts named fields")
    };
    let fields: Vec<F<'_>> = entity
        .fields
        .iter()
        .zip(&named.named)
        .map(|(model, f)| F {
            model,
            ident: f.ident.as_ref().expect("named"),
            ty: &f.ty,
        })
        .collect();

    let vis = &input.vis;
    let name = &input.ident;
    let patch = format_ident!("{}Patch", name);
    let clocks = format_ident!("{}Clocks", name);
    let entity_name = &entity.name;
    let fingerprint = sync_model::fingerprint_entity(entity).0;
    let model_json = serde_json::to_string(entity).expect("the model serialises");
    let id = fields.iter().find(|f| f.model.id).expect("exactly one id");
    let id_ident = id.ident;

    // ---- <Name>Patch ------------------------------------------------------------
    let patch_fields = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        let ty = f.ty;
        let wire = &f.model.name;
        let op = op_type(&p, f);
        let doc = format!("Operation on `{}` ({} merge).", f.model.name, f.model.merge);
        let _ = (ty, wire);
        quote! {
            #[doc = #doc]
            pub #ident: ::core::option::Option<#op>
        }
    });
    let patch_doc = format!(
        "Field-level patch of [`{name}`]: one optional operation per synced field, generated by `#[derive(Syncable)]`."
    );
    let patch_eq = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        if f.json() {
            quote!(#p::serde_json::to_value(&self.#ident).ok() == #p::serde_json::to_value(&other.#ident).ok())
        } else {
            quote!(self.#ident == other.#ident)
        }
    });
    let compose = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        let func = match f.model.merge {
            MergeStrategy::Lww => quote!(lww_compose),
            MergeStrategy::Sum => quote!(sum_compose),
            MergeStrategy::Union => quote!(union_compose),
            MergeStrategy::Manual => quote!(manual_compose),
        };
        quote!(#ident: #p::compose_opt(self.#ident, later.#ident, #p::#func))
    });
    let is_empty = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        quote!(&& self.#ident.is_none())
    });
    let changed_fields = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        let wire = &f.model.name;
        quote!(if self.#ident.is_some() { out.push(#wire); })
    });

    // serde for the patch, by hand: an object of the changed fields by wire name, unknown
    // and repeated keys refused (what `deny_unknown_fields` did), `null` = unchanged.
    let patch_wires: Vec<&str> = fields
        .iter()
        .filter(|f| f.patched())
        .map(|f| f.model.name.as_str())
        .collect();
    let patch_ser = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        let wire = &f.model.name;
        quote! {
            if let ::core::option::Option::Some(op) = &self.#ident {
                #p::serde::ser::SerializeStruct::serialize_field(&mut st, #wire, op)?;
            } else {
                #p::serde::ser::SerializeStruct::skip_field(&mut st, #wire)?;
            }
        }
    });
    let patch_de = fields.iter().filter(|f| f.patched()).enumerate().map(|(i, f)| {
        let ident = f.ident;
        let wire = &f.model.name;
        let op = op_type(&p, f);
        let bit = 1u128.checked_shl(i as u32).unwrap_or(0);
        quote! {
            #wire => {
                if seen & #bit != 0 {
                    return ::core::result::Result::Err(<__A::Error as #p::serde::de::Error>::duplicate_field(#wire));
                }
                seen |= #bit;
                out.#ident = #p::serde::de::MapAccess::next_value::<::core::option::Option<#op>>(&mut map)?;
            }
        }
    });
    let patch_name = patch.to_string();
    let patch_idents: Vec<&syn::Ident> = fields
        .iter()
        .filter(|f| f.patched())
        .map(|f| f.ident)
        .collect();

    // ---- <Name>Clocks -----------------------------------------------------------
    let clock_fields = fields.iter().filter(|f| f.clocked()).map(|f| {
        let ident = f.ident;
        let wire = &f.model.name;
        let doc = format!("When `{wire}` was last edited.");
        quote! {
            #[doc = #doc]
            pub #ident: #p::Hlc
        }
    });
    let clock_idents: Vec<&syn::Ident> = fields
        .iter()
        .filter(|f| f.clocked())
        .map(|f| f.ident)
        .collect();
    let clock_wires: Vec<&str> = fields
        .iter()
        .filter(|f| f.clocked())
        .map(|f| f.model.name.as_str())
        .collect();
    let clock_slots = 0..clock_idents.len();
    let clock_count = clock_idents.len();
    let clocks_name = clocks.to_string();
    let clocks_doc = format!(
        "The hybrid logical clock of each `lww` field of [`{name}`], generated by `#[derive(Syncable)]`."
    );
    let clocks_all = fields.iter().filter(|f| f.clocked()).map(|f| {
        let ident = f.ident;
        quote!(#ident: hlc)
    });
    let clocks_latest = fields.iter().filter(|f| f.clocked()).map(|f| {
        let ident = f.ident;
        quote!(if self.#ident > latest { latest = self.#ident; })
    });

    // ---- Syncable ---------------------------------------------------------------
    let immutable_checks = fields
        .iter()
        .filter(|f| f.model.immutable && !f.model.skip)
        .map(|f| {
            let ident = f.ident;
            let wire = &f.model.name;
            let p = respan(&p, f.ty.span());
            let changed = if f.json() {
                quote_spanned!(f.ty.span()=> #p::serde_json::to_value(&old.#ident).ok() != #p::serde_json::to_value(&new.#ident).ok())
            } else {
                quote_spanned!(f.ty.span()=> !#p::MergeValue::same(&old.#ident, &new.#ident))
            };
            quote! {
                if #changed {
                    return ::core::result::Result::Err(#p::DiffError::ImmutableChanged { entity: #entity_name, field: #wire });
                }
            }
        });
    let diffs = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        let span = f.ty.span();
        let p = respan(&p, span);
        let call = match (f.model.merge, f.json()) {
            (MergeStrategy::Lww, false) => {
                quote_spanned!(span=> #p::lww_diff(&old.#ident, &new.#ident, hlc))
            }
            (MergeStrategy::Lww, true) => {
                quote_spanned!(span=> #p::lww_json_diff(&old.#ident, &new.#ident, hlc))
            }
            (MergeStrategy::Sum, _) => {
                quote_spanned!(span=> #p::sum_diff(&old.#ident, &new.#ident))
            }
            (MergeStrategy::Union, _) => {
                quote_spanned!(span=> #p::union_diff(&old.#ident, &new.#ident))
            }
            (MergeStrategy::Manual, false) => {
                quote_spanned!(span=> #p::manual_diff(&old.#ident, &new.#ident))
            }
            (MergeStrategy::Manual, true) => {
                quote_spanned!(span=> #p::manual_json_diff(&old.#ident, &new.#ident))
            }
        };
        quote!(#ident: #call)
    });
    let applies = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        let func = match f.model.merge {
            MergeStrategy::Lww => quote!(lww_apply),
            MergeStrategy::Sum => quote!(sum_apply),
            MergeStrategy::Union => quote!(union_apply),
            MergeStrategy::Manual => quote!(manual_apply),
        };
        quote!(if let ::core::option::Option::Some(op) = &patch.#ident { #p::#func(&mut self.#ident, op); })
    });
    let stamps = fields.iter().filter(|f| f.clocked()).map(|f| {
        let ident = f.ident;
        quote!(if let ::core::option::Option::Some(op) = &patch.#ident { if op.hlc > clocks.#ident { clocks.#ident = op.hlc; } })
    });
    let concurrent_checks = fields
        .iter()
        .filter(|f| f.patched() && f.model.merge == MergeStrategy::Manual)
        .map(|f| {
            let ident = f.ident;
            let wire = &f.model.name;
            let p = respan(&p, f.ty.span());
            let check = if f.json() {
                quote_spanned!(f.ty.span()=> #p::manual_json_op_conflicts(&self.#ident, &op.base, &op.set))
            } else {
                quote_spanned!(f.ty.span()=> #p::manual_op_conflicts(&self.#ident, &op.base, &op.set))
            };
            quote!(if let ::core::option::Option::Some(op) = &patch.#ident { if #check { conflicts.push(#wire); } })
        });
    let concurrent_applies = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        let p = respan(&p, f.ty.span());
        match f.model.merge {
            MergeStrategy::Lww => {
                let wins = if f.json() {
                    quote_spanned!(f.ty.span()=> #p::lww_json_op_wins(&op.set, op.hlc, &self.#ident, clocks.#ident))
                } else {
                    quote_spanned!(f.ty.span()=> #p::lww_op_wins(&op.set, op.hlc, &self.#ident, clocks.#ident))
                };
                quote!(if let ::core::option::Option::Some(op) = &patch.#ident {
                    if #wins { self.#ident.clone_from(&op.set); clocks.#ident = op.hlc; }
                })
            }
            MergeStrategy::Sum => quote!(if let ::core::option::Option::Some(op) = &patch.#ident { #p::sum_apply(&mut self.#ident, op); }),
            MergeStrategy::Union => quote!(if let ::core::option::Option::Some(op) = &patch.#ident { #p::union_apply(&mut self.#ident, op); }),
            MergeStrategy::Manual => quote!(if let ::core::option::Option::Some(op) = &patch.#ident { #p::manual_apply(&mut self.#ident, op); }),
        }
    });
    let merges = fields.iter().filter(|f| f.patched()).map(|f| {
        let ident = f.ident;
        let wire = &f.model.name;
        let span = f.ty.span();
        let p = respan(&p, span);
        match (f.model.merge, f.json()) {
            (MergeStrategy::Lww, false) => quote_spanned!(span=> #p::lww_into(&mut self.#ident, &mut clocks.#ident, &base.#ident, &remote.#ident, remote_clocks.#ident);),
            (MergeStrategy::Lww, true) => quote_spanned!(span=> #p::lww_json_into(&mut self.#ident, &mut clocks.#ident, &base.#ident, &remote.#ident, remote_clocks.#ident);),
            (MergeStrategy::Sum, _) => quote_spanned!(span=> #p::sum_into(&mut self.#ident, &base.#ident, &remote.#ident);),
            (MergeStrategy::Union, _) => quote_spanned!(span=> #p::union_into(&mut self.#ident, &base.#ident, &remote.#ident);),
            (MergeStrategy::Manual, false) => quote_spanned!(span=> #p::manual_into(&mut self.#ident, &base.#ident, &remote.#ident, #wire, conflicts);),
            (MergeStrategy::Manual, true) => quote_spanned!(span=> #p::manual_json_into(&mut self.#ident, &base.#ident, &remote.#ident, #wire, conflicts);),
        }
    });
    let normalizes = fields.iter().filter(|f| !f.model.skip).filter_map(|f| {
        let ident = f.ident;
        let span = f.ty.span();
        let p = respan(&p, span);
        match &f.model.ty.kind {
            TypeKind::Set { .. } => Some(quote_spanned!(span=> #p::UnionSet::normalize(&mut self.#ident);)),
            TypeKind::Scalar { scalar: ScalarType::Timestamp } => {
                Some(quote_spanned!(span=> #p::NormalizeTimestamp::normalize_timestamp(&mut self.#ident);))
            }
            _ => None,
        }
    });
    let validates = fields.iter().filter(|f| !f.model.skip).filter_map(|f| {
        let ident = f.ident;
        let wire = &f.model.name;
        let p = respan(&p, f.ty.span());
        matches!(
            f.model.ty.kind,
            TypeKind::Scalar {
                scalar: ScalarType::F32 | ScalarType::F64
            }
        )
        .then(
            || quote_spanned!(f.ty.span()=> #p::check_finite(&self.#ident, #entity_name, #wire)?;),
        )
    });
    let to_record = fields.iter().filter(|f| !f.model.skip).map(|f| {
        let ident = f.ident;
        let p = respan(&p, f.ty.span());
        let wire = &f.model.name;
        quote_spanned!(f.ty.span()=> #p::field_to_record(&mut record, #entity_name, #wire, &self.#ident)?;)
    });
    let from_record = fields.iter().map(|f| {
        let ident = f.ident;
        let p = respan(&p, f.ty.span());
        let wire = &f.model.name;
        if f.model.skip {
            quote_spanned!(f.ty.span()=> #ident: ::core::default::Default::default())
        } else {
            quote_spanned!(f.ty.span()=> #ident: #p::field_from_record(record, #entity_name, #wire)?)
        }
    });
    let synced_count = fields.iter().filter(|f| !f.model.skip).count();
    let id_ty = id.ty;
    let id_expr = quote_spanned!(id_ty.span()=> self.#id_ident);

    quote! {
        #[doc = #patch_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #patch {
            #(#patch_fields,)*
        }

        #[doc = #clocks_doc]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default, ::core::cmp::PartialEq, ::core::cmp::Eq)]
        #vis struct #clocks {
            #(#clock_fields,)*
        }

        #[automatically_derived]
        #[allow(clippy::all, clippy::pedantic, unused_variables)]
        const _: () = {
            impl ::core::cmp::PartialEq for #patch {
                fn eq(&self, other: &Self) -> bool {
                    true #(&& #patch_eq)*
                }
            }

            impl #p::serde::Serialize for #patch {
                fn serialize<__S: #p::serde::Serializer>(&self, __s: __S) -> ::core::result::Result<__S::Ok, __S::Error> {
                    let mut st = #p::serde::Serializer::serialize_struct(__s, #patch_name, 0 #(+ usize::from(self.#patch_idents.is_some()))*)?;
                    #(#patch_ser)*
                    #p::serde::ser::SerializeStruct::end(st)
                }
            }

            impl<'__de> #p::serde::Deserialize<'__de> for #patch {
                fn deserialize<__D: #p::serde::Deserializer<'__de>>(__d: __D) -> ::core::result::Result<Self, __D::Error> {
                    const __FIELDS: &[&str] = &[#(#patch_wires),*];
                    struct __PatchVisitor;
                    impl<'__de> #p::serde::de::Visitor<'__de> for __PatchVisitor {
                        type Value = #patch;
                        fn expecting(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                            f.write_str(::core::concat!("struct ", #patch_name))
                        }
                        fn visit_map<__A: #p::serde::de::MapAccess<'__de>>(self, mut map: __A) -> ::core::result::Result<#patch, __A::Error> {
                            let mut out = #patch::default();
                            let mut seen: u128 = 0;
                            while let ::core::option::Option::Some(key) = #p::serde::de::MapAccess::next_key::<#p::FieldKey<'__de>>(&mut map)? {
                                match key.as_str() {
                                    #(#patch_de)*
                                    other => {
                                        return ::core::result::Result::Err(<__A::Error as #p::serde::de::Error>::unknown_field(other, __FIELDS));
                                    }
                                }
                            }
                            ::core::result::Result::Ok(out)
                        }
                    }
                    #p::serde::Deserializer::deserialize_struct(__d, #patch_name, __FIELDS, __PatchVisitor)
                }
            }

            impl #p::Patch for #patch {
                fn compose(self, later: Self) -> Self {
                    #patch { #(#compose,)* }
                }
                fn is_empty(&self) -> bool {
                    true #(#is_empty)*
                }
                fn fields(&self) -> ::std::vec::Vec<&'static str> {
                    let mut out = ::std::vec::Vec::new();
                    #(#changed_fields)*
                    out
                }
            }

            // serde by hand, through one shared function: a serde derive per entity cost
            // more to compile than the entity's own serde derive.
            impl #p::serde::Serialize for #clocks {
                fn serialize<__S: #p::serde::Serializer>(&self, __s: __S) -> ::core::result::Result<__S::Ok, __S::Error> {
                    #p::serialize_clocks(__s, #clocks_name, &[#((#clock_wires, &self.#clock_idents)),*])
                }
            }

            impl<'__de> #p::serde::Deserialize<'__de> for #clocks {
                fn deserialize<__D: #p::serde::Deserializer<'__de>>(__d: __D) -> ::core::result::Result<Self, __D::Error> {
                    let mut slots = [#p::Hlc::ZERO; #clock_count];
                    #p::deserialize_clocks(__d, #clocks_name, &[#(#clock_wires),*], &mut slots)?;
                    ::core::result::Result::Ok(#clocks { #(#clock_idents: slots[#clock_slots],)* })
                }
            }

            impl #p::Clocks for #clocks {
                fn all(hlc: #p::Hlc) -> Self {
                    #clocks { #(#clocks_all,)* }
                }
                fn latest(&self) -> #p::Hlc {
                    let mut latest = #p::Hlc::ZERO;
                    #(#clocks_latest)*
                    latest
                }
            }

            impl #p::Syncable for #name {
                type Patch = #patch;
                type Clocks = #clocks;
                const ENTITY: &'static str = #entity_name;
                const FINGERPRINT: &'static str = #fingerprint;

                fn model() -> &'static #p::sync_model::Entity {
                    static MODEL: ::std::sync::OnceLock<#p::sync_model::Entity> = ::std::sync::OnceLock::new();
                    MODEL.get_or_init(|| #p::model_from_json(#model_json))
                }

                fn id(&self) -> #p::Uuid {
                    #id_expr
                }

                fn diff(old: &Self, new: &Self, hlc: #p::Hlc) -> ::core::result::Result<#patch, #p::DiffError> {
                    if old.#id_ident != new.#id_ident {
                        return ::core::result::Result::Err(#p::DiffError::IdChanged { entity: #entity_name });
                    }
                    #(#immutable_checks)*
                    ::core::result::Result::Ok(#patch { #(#diffs,)* })
                }

                fn apply(&mut self, patch: &#patch) {
                    #(#applies)*
                }

                fn stamp(clocks: &mut #clocks, patch: &#patch) {
                    #(#stamps)*
                }

                fn apply_concurrent(&mut self, clocks: &mut #clocks, patch: &#patch) -> ::std::vec::Vec<&'static str> {
                    let mut conflicts = ::std::vec::Vec::new();
                    #(#concurrent_checks)*
                    if !conflicts.is_empty() {
                        return conflicts;
                    }
                    #(#concurrent_applies)*
                    conflicts
                }

                fn merge_into(
                    &mut self,
                    clocks: &mut #clocks,
                    base: &Self,
                    remote: &Self,
                    remote_clocks: &#clocks,
                    conflicts: &mut ::std::vec::Vec<#p::FieldConflict>,
                ) {
                    #(#merges)*
                }

                fn normalize(&mut self) {
                    #(#normalizes)*
                }

                fn validate(&self) -> ::core::result::Result<(), #p::InvalidValue> {
                    #(#validates)*
                    ::core::result::Result::Ok(())
                }

                fn to_record(&self) -> ::core::result::Result<#p::Record, #p::RecordError> {
                    let mut record = #p::Record::new();
                    let _ = #synced_count;
                    #(#to_record)*
                    ::core::result::Result::Ok(record)
                }

                fn from_record(record: &#p::Record) -> ::core::result::Result<Self, #p::RecordError> {
                    ::core::result::Result::Ok(#name { #(#from_record,)* })
                }
            }
        };
    }
}

/// Gives every token of `tokens` the span `span`, so that a trait-bound error in a call
/// through the runtime's path points at the user's field type, not at the derive.
fn respan(tokens: &TokenStream2, span: proc_macro2::Span) -> TokenStream2 {
    tokens
        .clone()
        .into_iter()
        .map(|mut tt| {
            if let proc_macro2::TokenTree::Group(g) = &tt {
                let mut ng = proc_macro2::Group::new(g.delimiter(), respan(&g.stream(), span));
                ng.set_span(span);
                tt = proc_macro2::TokenTree::Group(ng);
            } else {
                tt.set_span(span);
            }
            tt
        })
        .collect()
}

fn op_type(p: &TokenStream2, f: &F<'_>) -> TokenStream2 {
    let ty = f.ty;
    let span = ty.span();
    match f.model.merge {
        MergeStrategy::Lww => quote_spanned!(span=> #p::LwwOp<#ty>),
        MergeStrategy::Sum => quote_spanned!(span=> #p::SumOp<#ty>),
        MergeStrategy::Union => quote_spanned!(span=> #p::UnionOp<#ty>),
        MergeStrategy::Manual => quote_spanned!(span=> #p::ManualOp<#ty>),
    }
}
