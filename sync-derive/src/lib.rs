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
            && a.meta.require_list().is_ok_and(|l| {
                l.tokens
                    .clone()
                    .into_iter()
                    .any(|t| matches!(t, proc_macro2::TokenTree::Ident(i) if i == "crate"))
            })
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
        self.patched() && strategy(self.model.merge).clocked
    }
}

/// What every part of the expansion reads: the runtime path, the fields and the names.
struct Cx<'a> {
    /// `<runtime>::__private`.
    p: TokenStream2,
    fields: Vec<F<'a>>,
    vis: &'a syn::Visibility,
    name: &'a syn::Ident,
    patch: syn::Ident,
    clocks: syn::Ident,
    entity: &'a sync_model::Entity,
}

impl<'a> Cx<'a> {
    /// The fields a patch carries (synced, not the id, not immutable).
    fn patched(&self) -> impl Iterator<Item = &F<'a>> {
        self.fields.iter().filter(|f| f.patched())
    }

    /// The fields with a clock (`lww`).
    fn clocked(&self) -> impl Iterator<Item = &F<'a>> {
        self.fields.iter().filter(|f| f.clocked())
    }
}

/// The runtime functions (in `sync_runtime::__private`) that implement one merge
/// strategy: the one place the derive maps a strategy to code. Pairs are `[plain, json]`
/// (a `#[sync(json)]` field compares and copies through serde).
struct Strategy {
    /// The patch operation type.
    op: &'static str,
    /// `compose(earlier, later)` for coalescing.
    compose: &'static str,
    /// `diff(old, new[, hlc])`.
    diff: [&'static str; 2],
    /// Whether fields of this strategy carry a hybrid logical clock: `diff` stamps the
    /// operation, and `<Name>Clocks` has a slot for the field.
    clocked: bool,
    /// `apply(&mut value, op)`: a patch from the same base, or a concurrent one that
    /// merges by adding (sums, sets).
    apply: &'static str,
    /// For a concurrent patch of an `lww` field: `wins(op value, op stamp, value, stamp)`.
    concurrent_wins: Option<[&'static str; 2]>,
    /// For a concurrent patch of a `manual` field: `conflicts(value, op base, op value)`.
    concurrent_conflicts: Option<[&'static str; 2]>,
    /// The three-way merge of the field, `into(&mut local, ...)`.
    merge: [&'static str; 2],
    /// The arguments `merge` takes after `&mut self.field`.
    merge_args: MergeArgs,
}

/// The argument shapes of the three-way merge functions.
#[derive(Clone, Copy)]
enum MergeArgs {
    /// `(&mut clocks.f, &base.f, &remote.f, remote_clocks.f)`.
    Stamped,
    /// `(&base.f, &remote.f)`.
    Plain,
    /// `(&base.f, &remote.f, "wire", conflicts)`.
    Reported,
}

fn strategy(s: MergeStrategy) -> Strategy {
    match s {
        MergeStrategy::Lww => Strategy {
            op: "LwwOp",
            compose: "lww_compose",
            diff: ["lww_diff", "lww_json_diff"],
            clocked: true,
            apply: "lww_apply",
            concurrent_wins: Some(["lww_op_wins", "lww_json_op_wins"]),
            concurrent_conflicts: None,
            merge: ["lww_into", "lww_json_into"],
            merge_args: MergeArgs::Stamped,
        },
        MergeStrategy::Sum => Strategy {
            op: "SumOp",
            compose: "sum_compose",
            diff: ["sum_diff", "sum_diff"],
            clocked: false,
            apply: "sum_apply",
            concurrent_wins: None,
            concurrent_conflicts: None,
            merge: ["sum_into", "sum_into"],
            merge_args: MergeArgs::Plain,
        },
        MergeStrategy::Union => Strategy {
            op: "UnionOp",
            compose: "union_compose",
            diff: ["union_diff", "union_diff"],
            clocked: false,
            apply: "union_apply",
            concurrent_wins: None,
            concurrent_conflicts: None,
            merge: ["union_into", "union_into"],
            merge_args: MergeArgs::Plain,
        },
        MergeStrategy::Manual => Strategy {
            op: "ManualOp",
            compose: "manual_compose",
            diff: ["manual_diff", "manual_json_diff"],
            clocked: false,
            apply: "manual_apply",
            concurrent_wins: None,
            concurrent_conflicts: Some(["manual_op_conflicts", "manual_json_op_conflicts"]),
            merge: ["manual_into", "manual_json_into"],
            merge_args: MergeArgs::Reported,
        },
    }
}

impl F<'_> {
    fn strategy(&self) -> Strategy {
        strategy(self.model.merge)
    }

    /// The plain or json variant of a `[plain, json]` pair, as an identifier spanned at
    /// the field's type.
    fn pick(&self, pair: [&'static str; 2]) -> syn::Ident {
        syn::Ident::new(pair[usize::from(self.json())], self.ty.span())
    }
}

fn expand(input: &DeriveInput, parsed: sync_model::ParsedEntity) -> TokenStream2 {
    let rt: syn::Path = parsed
        .runtime_crate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::sync_runtime));
    let Data::Struct(data) = &input.data else {
        unreachable!("the parser only accepts structs")
    };
    let Fields::Named(named) = &data.fields else {
        unreachable!("the parser only accepts named fields")
    };
    let entity = &parsed.entity;
    let name = &input.ident;
    let cx = Cx {
        p: quote!(#rt::__private),
        fields: entity
            .fields
            .iter()
            .zip(&named.named)
            .map(|(model, f)| F {
                model,
                ident: f.ident.as_ref().expect("named"),
                ty: &f.ty,
            })
            .collect(),
        vis: &input.vis,
        name,
        patch: format_ident!("{}Patch", name),
        clocks: format_ident!("{}Clocks", name),
        entity,
    };
    let (patch_struct, patch_impls) = patch_items(&cx);
    let (clocks_struct, clocks_impls) = clocks_items(&cx);
    let syncable = syncable_impl(&cx);
    quote! {
        #patch_struct
        #clocks_struct

        #[automatically_derived]
        #[allow(clippy::all, clippy::pedantic, unused_variables)]
        const _: () = {
            #patch_impls
            #clocks_impls
            #syncable
        };
    }
}

/// `<Name>Patch` (the struct) and its impls (`PartialEq`, serde, `Patch`).
fn patch_items(cx: &Cx<'_>) -> (TokenStream2, TokenStream2) {
    let Cx {
        p,
        vis,
        name,
        patch,
        ..
    } = cx;
    let patch_fields = cx.patched().map(|f| {
        let ident = f.ident;
        let ty = f.ty;
        let wire = &f.model.name;
        let op = op_type(p, f);
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
    let patch_eq = cx.patched().map(|f| {
        let ident = f.ident;
        if f.json() {
            quote!(#p::serde_json::to_value(&self.#ident).ok() == #p::serde_json::to_value(&other.#ident).ok())
        } else {
            quote!(self.#ident == other.#ident)
        }
    });
    let compose = cx.patched().map(|f| {
        let ident = f.ident;
        let func = format_ident!("{}", f.strategy().compose);
        quote!(#ident: #p::compose_opt(self.#ident, later.#ident, #p::#func))
    });
    let is_empty = cx.patched().map(|f| {
        let ident = f.ident;
        quote!(&& self.#ident.is_none())
    });
    let changed_fields = cx.patched().map(|f| {
        let ident = f.ident;
        let wire = &f.model.name;
        quote!(if self.#ident.is_some() { out.push(#wire); })
    });

    // serde for the patch, by hand: an object of the changed fields by wire name, unknown
    // and repeated keys refused (what `deny_unknown_fields` did), `null` = unchanged.
    let patch_wires: Vec<&str> = cx.patched().map(|f| f.model.name.as_str()).collect();
    let patch_ser = cx.patched().map(|f| {
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
    let patch_de = cx.patched().enumerate().map(|(i, f)| {
        let ident = f.ident;
        let wire = &f.model.name;
        let op = op_type(p, f);
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
    let patch_idents: Vec<&syn::Ident> = cx.patched().map(|f| f.ident).collect();

    let patch_struct = quote! {
        #[doc = #patch_doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug, ::core::default::Default)]
        #vis struct #patch {
            #(#patch_fields,)*
        }
    };
    let patch_impls = quote! {
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
    };
    (patch_struct, patch_impls)
}

/// `<Name>Clocks` (the struct) and its impls (serde, `Clocks`).
fn clocks_items(cx: &Cx<'_>) -> (TokenStream2, TokenStream2) {
    let Cx {
        p,
        vis,
        name,
        clocks,
        ..
    } = cx;
    let clock_fields = cx.clocked().map(|f| {
        let ident = f.ident;
        let wire = &f.model.name;
        let doc = format!("When `{wire}` was last edited.");
        quote! {
            #[doc = #doc]
            pub #ident: #p::Hlc
        }
    });
    let clock_idents: Vec<&syn::Ident> = cx.clocked().map(|f| f.ident).collect();
    let clock_wires: Vec<&str> = cx.clocked().map(|f| f.model.name.as_str()).collect();
    let clock_slots = 0..clock_idents.len();
    let clock_count = clock_idents.len();
    let clocks_name = clocks.to_string();
    let clocks_doc = format!(
        "The hybrid logical clock of each `lww` field of [`{name}`], generated by `#[derive(Syncable)]`."
    );
    let clocks_all = cx.clocked().map(|f| {
        let ident = f.ident;
        quote!(#ident: hlc)
    });
    let clocks_latest = cx.clocked().map(|f| {
        let ident = f.ident;
        quote!(if self.#ident > latest { latest = self.#ident; })
    });

    let clocks_struct = quote! {
        #[doc = #clocks_doc]
        #[derive(::core::clone::Clone, ::core::marker::Copy, ::core::fmt::Debug, ::core::default::Default, ::core::cmp::PartialEq, ::core::cmp::Eq)]
        #vis struct #clocks {
            #(#clock_fields,)*
        }
    };
    let clocks_impls = quote! {
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
    };
    (clocks_struct, clocks_impls)
}

/// `impl Syncable for <Name>`.
fn syncable_impl(cx: &Cx<'_>) -> TokenStream2 {
    let Cx {
        p,
        name,
        patch,
        clocks,
        entity,
        fields,
        ..
    } = cx;
    let entity_name = &entity.name;
    let fingerprint = sync_model::fingerprint_entity(entity).0;
    let model_json = serde_json::to_string(entity).expect("the model serialises");
    let id = fields.iter().find(|f| f.model.id).expect("exactly one id");
    let id_ident = id.ident;
    let immutable_checks = fields
        .iter()
        .filter(|f| f.model.immutable && !f.model.skip)
        .map(|f| {
            let ident = f.ident;
            let wire = &f.model.name;
            let p = respan(p, f.ty.span());
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
    let diffs = cx.patched().map(|f| {
        let ident = f.ident;
        let span = f.ty.span();
        let p = respan(p, span);
        let st = f.strategy();
        let func = f.pick(st.diff);
        let call = if st.clocked {
            quote_spanned!(span=> #p::#func(&old.#ident, &new.#ident, hlc))
        } else {
            quote_spanned!(span=> #p::#func(&old.#ident, &new.#ident))
        };
        quote!(#ident: #call)
    });
    let applies = cx.patched().map(|f| {
        let ident = f.ident;
        let func = format_ident!("{}", f.strategy().apply);
        quote!(if let ::core::option::Option::Some(op) = &patch.#ident { #p::#func(&mut self.#ident, op); })
    });
    let stamps = cx.clocked().map(|f| {
        let ident = f.ident;
        quote!(if let ::core::option::Option::Some(op) = &patch.#ident { if op.hlc > clocks.#ident { clocks.#ident = op.hlc; } })
    });
    let concurrent_checks = cx.patched().filter_map(|f| {
        let func = f.pick(f.strategy().concurrent_conflicts?);
        let ident = f.ident;
        let wire = &f.model.name;
        let p = respan(p, f.ty.span());
        let check = quote_spanned!(f.ty.span()=> #p::#func(&self.#ident, &op.base, &op.set));
        Some(quote!(if let ::core::option::Option::Some(op) = &patch.#ident { if #check { conflicts.push(#wire); } }))
    });
    let concurrent_applies = cx.patched().map(|f| {
        let ident = f.ident;
        let p = respan(p, f.ty.span());
        let st = f.strategy();
        match st.concurrent_wins {
            Some(pair) => {
                let func = f.pick(pair);
                let wins = quote_spanned!(f.ty.span()=> #p::#func(&op.set, op.hlc, &self.#ident, clocks.#ident));
                quote!(if let ::core::option::Option::Some(op) = &patch.#ident {
                    if #wins { self.#ident.clone_from(&op.set); clocks.#ident = op.hlc; }
                })
            }
            None => {
                let func = format_ident!("{}", st.apply);
                quote!(if let ::core::option::Option::Some(op) = &patch.#ident { #p::#func(&mut self.#ident, op); })
            }
        }
    });
    let merges = cx.patched().map(|f| {
        let ident = f.ident;
        let wire = &f.model.name;
        let span = f.ty.span();
        let p = respan(p, span);
        let st = f.strategy();
        let func = f.pick(st.merge);
        match st.merge_args {
            MergeArgs::Stamped => quote_spanned!(span=> #p::#func(&mut self.#ident, &mut clocks.#ident, &base.#ident, &remote.#ident, remote_clocks.#ident);),
            MergeArgs::Plain => quote_spanned!(span=> #p::#func(&mut self.#ident, &base.#ident, &remote.#ident);),
            MergeArgs::Reported => quote_spanned!(span=> #p::#func(&mut self.#ident, &base.#ident, &remote.#ident, #wire, conflicts);),
        }
    });
    let normalizes = fields.iter().filter(|f| !f.model.skip).filter_map(|f| {
        let ident = f.ident;
        let span = f.ty.span();
        let p = respan(p, span);
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
        let p = respan(p, f.ty.span());
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
        let p = respan(p, f.ty.span());
        let wire = &f.model.name;
        quote_spanned!(f.ty.span()=> #p::field_to_record(&mut record, #entity_name, #wire, &self.#ident)?;)
    });
    let from_record = fields.iter().map(|f| {
        let ident = f.ident;
        let p = respan(p, f.ty.span());
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
    let op = syn::Ident::new(f.strategy().op, span);
    quote_spanned!(span=> #p::#op<#ty>)
}
