//! The one parser of `#[sync(...)]` attributes, from `syn` items to the model.
//!
//! Parsing collects every problem it finds, each at the span of the offending token,
//! and reports them together; cross-field rules live in [`crate::check`].

use heck::{ToSnakeCase, ToSnekCase};
use proc_macro2::Span;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, Fields, Lit, LitStr, UnOp};

use crate::check;
use crate::ctxt::Ctxt;
use crate::model::{Entity, Field, MergeStrategy, OutboxMode, ScopeRule};
use crate::types::classify;

/// The container keys `#[sync(...)]` accepts on a struct.
pub const CONTAINER_KEYS: &[&str] = &[
    "entity",
    "table",
    "outbox",
    "renamed_from",
    "scope",
    "crate",
];
/// The keys `#[sync(...)]` accepts on a field.
pub const FIELD_KEYS: &[&str] = &[
    "id",
    "merge",
    "skip",
    "immutable",
    "rename",
    "column",
    "json",
    "references",
    "renamed_from",
    "default",
];

/// The result of parsing one struct: its model, plus what only code generation needs.
#[derive(Debug, Clone)]
pub struct ParsedEntity {
    /// The entity model.
    pub entity: Entity,
    /// `#[sync(crate = "...")]`: the path under which generated code finds `sync_runtime`.
    pub runtime_crate: Option<syn::Path>,
    /// Where the struct's name is, for diagnostics about the whole entity.
    pub span: Span,
    /// Where each field's name is, in the order of `entity.fields`.
    pub field_spans: Vec<Span>,
}

/// One attribute value with the tokens that set it, so a duplicate can be reported
/// at its second use.
pub(crate) struct Attr<T> {
    name: &'static str,
    value: Option<T>,
    span: Option<Span>,
}

impl<T> Attr<T> {
    fn none(name: &'static str) -> Self {
        Attr {
            name,
            value: None,
            span: None,
        }
    }

    fn set(&mut self, cx: &Ctxt, path: &syn::Path, value: T) {
        if self.value.is_some() {
            cx.error_spanned_by(
                path,
                format!(
                    "duplicate sync attribute `{}`; remove one of them",
                    self.name
                ),
            );
        } else {
            self.value = Some(value);
            self.span = Some(path.span());
        }
    }

    fn is_set(&self) -> bool {
        self.value.is_some()
    }
}

/// Parses a struct deriving `Syncable` into its model.
///
/// Every error found is reported, combined into one `syn::Error` with a span for each.
///
/// # Errors
/// A [`syn::Error`] combining every problem: the item is not a struct with named
/// fields, or is generic; a `#[sync(...)]` key is unknown, repeated or has a bad value;
/// a field's type cannot be synced; or a rule across fields fails (no `#[sync(id)]`
/// field, two fields with one wire name or column, a reserved or non-portable name).
/// Rules across entities are not checked here: see [`validate_model`](crate::validate_model).
pub fn parse_derive_input(input: &DeriveInput) -> Result<ParsedEntity, syn::Error> {
    let cx = Ctxt::new();
    let parsed = parse_with(&cx, input);
    cx.check()?;
    Ok(parsed.expect("no errors means the entity was built"))
}

/// Parses a struct item (as the CLI finds it in a source file) into its model.
///
/// # Errors
/// As [`parse_derive_input`].
pub fn parse_item_struct(item: &syn::ItemStruct) -> Result<ParsedEntity, syn::Error> {
    parse_derive_input(&DeriveInput::from(item.clone()))
}

fn parse_with(cx: &Ctxt, input: &DeriveInput) -> Option<ParsedEntity> {
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => Some(named),
            Fields::Unnamed(_) => {
                cx.error_spanned_by(
                    &s.fields,
                    "Syncable needs named fields: every field is a column and a wire name; use `struct Name { field: Type, .. }`",
                );
                None
            }
            Fields::Unit => {
                cx.error_spanned_by(
                    &input.ident,
                    "Syncable needs a struct with named fields, one of them the #[sync(id)] Uuid; a unit struct has nothing to sync",
                );
                None
            }
        },
        Data::Enum(e) => {
            cx.error_spanned_by(
                e.enum_token,
                "Syncable can only be derived for structs with named fields; to sync an enum, store it in a struct field with #[sync(json)]",
            );
            None
        }
        Data::Union(u) => {
            cx.error_spanned_by(
                u.union_token,
                "Syncable can only be derived for structs with named fields, not unions",
            );
            None
        }
    };
    if !input.generics.params.is_empty() {
        cx.error_spanned_by(
            &input.generics,
            "Syncable entities cannot be generic: the migrations and the API need one concrete shape; use concrete types (a type alias can name one instantiation)",
        );
    }

    let container = parse_container(cx, input);
    let fields = fields?;
    let mut out_fields = Vec::with_capacity(fields.named.len());
    for field in &fields.named {
        if let Some(f) = parse_field(cx, field) {
            check::check_field(cx, &f.0, &f.1, field);
            out_fields.push(f);
        }
    }
    if out_fields.len() != fields.named.len() {
        // A field failed to parse; cross-field checks would only add noise.
        return None;
    }

    let rust_name = input.ident.to_string();
    let name = container
        .entity
        .value
        .clone()
        .unwrap_or_else(|| rust_name.to_snake_case());
    let table = container
        .table
        .value
        .clone()
        .unwrap_or_else(|| pluralize(&rust_name.to_snake_case()));
    let fields_model: Vec<Field> = out_fields.iter().map(|(f, _)| f.clone()).collect();
    let scope = match &container.scope.value {
        Some(lit) => scope_rule(cx, lit, &fields_model),
        None => ScopeRule::Account,
    };
    let entity = Entity {
        rust_name,
        name,
        table,
        outbox: container.outbox.value.unwrap_or_default(),
        fields: fields_model,
        docs: docs(&input.attrs),
        renamed_from: container.renamed_from.value.clone(),
        scope,
    };
    if let (Some(old), Some(lit)) = (&entity.renamed_from, &container.renamed_from_lit)
        && *old == entity.name
    {
        cx.error_spanned_by(
            lit,
            format!(
                "`renamed_from` names the entity's previous wire name; `{old}` is its wire name now"
            ),
        );
    }
    check::check_entity(
        cx,
        input,
        &container.entity_lit,
        &container.table_lit,
        &entity,
        fields,
        &out_fields,
    );
    if cx.has_errors() {
        return None;
    }
    Some(ParsedEntity {
        entity,
        runtime_crate: container.runtime_crate.value,
        span: input.ident.span(),
        field_spans: fields
            .named
            .iter()
            .map(|f| f.ident.as_ref().map_or_else(|| f.span(), |i| i.span()))
            .collect(),
    })
}

/// The rule of `#[sync(scope = "...")]`: `"self"` for a scope root, or the Rust name of
/// the field whose referenced record's scope this record shares. Problems are reported
/// at the literal; the rule returned then is [`ScopeRule::Account`].
fn scope_rule(cx: &Ctxt, lit: &LitStr, fields: &[Field]) -> ScopeRule {
    let value = lit.value();
    if value == "self" {
        return ScopeRule::Root;
    }
    let Some(field) = fields
        .iter()
        .find(|f| f.rust_name == value || f.rust_name == format!("r#{value}"))
    else {
        let candidates: Vec<&str> = fields
            .iter()
            .filter(|f| f.references.is_some() && !f.skip)
            .map(|f| f.rust_name.as_str())
            .collect();
        let hint = if candidates.is_empty() {
            "this struct has no `references` field".to_string()
        } else {
            format!("its `references` fields: {}", candidates.join(", "))
        };
        cx.error_spanned_by(
            lit,
            format!(
                "`scope` is \"self\" (each record is a scope of its own) or the name of a field whose referenced record's scope this record shares; no field is named `{value}` ({hint})"
            ),
        );
        return ScopeRule::Account;
    };
    let problem = if field.skip {
        Some(format!(
            "`{value}` is #[sync(skip)]: a local-only field cannot decide where a record is shared; name a synced `references` field"
        ))
    } else if field.references.is_none() {
        Some(format!(
            "`{value}` does not reference another entity: a record shares the scope of the record its scope field references; add #[sync(references = \"...\")] to it, or use scope = \"self\""
        ))
    } else if field.ty.nullable {
        Some(format!(
            "`{value}` is optional: every record needs a scope, so its scope field must always hold an id; make it `Uuid`, not `Option<Uuid>`"
        ))
    } else {
        None
    };
    match problem {
        Some(message) => {
            cx.error_spanned_by(lit, message);
            ScopeRule::Account
        }
        None => ScopeRule::Via {
            field: field.name.clone(),
        },
    }
}

/// English plural of a snake_case name, for default table names.
fn pluralize(s: &str) -> String {
    if s.ends_with('s') || s.ends_with('x') || s.ends_with("ch") || s.ends_with("sh") {
        format!("{s}es")
    } else if let Some(stem) = s.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else {
        format!("{s}s")
    }
}

pub(crate) struct Container {
    entity: Attr<String>,
    entity_lit: Option<LitStr>,
    table: Attr<String>,
    table_lit: Option<LitStr>,
    outbox: Attr<OutboxMode>,
    renamed_from: Attr<String>,
    renamed_from_lit: Option<LitStr>,
    scope: Attr<LitStr>,
    runtime_crate: Attr<syn::Path>,
}

fn parse_container(cx: &Ctxt, input: &DeriveInput) -> Container {
    let mut c = Container {
        entity: Attr::none("entity"),
        entity_lit: None,
        table: Attr::none("table"),
        table_lit: None,
        outbox: Attr::none("outbox"),
        renamed_from: Attr::none("renamed_from"),
        renamed_from_lit: None,
        scope: Attr::none("scope"),
        runtime_crate: Attr::none("crate"),
    };
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("sync")) {
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("entity") {
                let lit = string_value(&meta)?;
                c.entity.set(cx, &meta.path, lit.value());
                c.entity_lit.get_or_insert(lit);
            } else if meta.path.is_ident("table") {
                let lit = string_value(&meta)?;
                c.table.set(cx, &meta.path, lit.value());
                c.table_lit.get_or_insert(lit);
            } else if meta.path.is_ident("outbox") {
                let lit = string_value(&meta)?;
                let mode = match lit.value().as_str() {
                    "coalesce" => OutboxMode::Coalesce,
                    "history" => OutboxMode::History,
                    other => {
                        return Err(syn::Error::new_spanned(
                            &lit,
                            format!("unknown outbox mode `{other}`; expected \"coalesce\" (compose pending patches, the default) or \"history\" (keep every mutation)"),
                        ));
                    }
                };
                c.outbox.set(cx, &meta.path, mode);
            } else if meta.path.is_ident("renamed_from") {
                let lit = string_value(&meta)?;
                c.renamed_from.set(cx, &meta.path, lit.value());
                c.renamed_from_lit.get_or_insert(lit);
            } else if meta.path.is_ident("scope") {
                let lit = string_value(&meta)?;
                c.scope.set(cx, &meta.path, lit);
            } else if meta.path.is_ident("crate") {
                let lit = string_value(&meta)?;
                let path: syn::Path = lit.parse().map_err(|_| {
                    syn::Error::new_spanned(&lit, "`crate` must be a path such as \"::my_app::sync_runtime\"")
                })?;
                c.runtime_crate.set(cx, &meta.path, path);
            } else if FIELD_KEYS.iter().any(|k| meta.path.is_ident(k)) {
                return Err(meta.error(format!(
                    "`{}` is a field attribute; put it on a field. On the struct, #[sync(...)] accepts: {}",
                    path_name(&meta.path),
                    CONTAINER_KEYS.join(", ")
                )));
            } else {
                return Err(meta.error(format!(
                    "unknown sync attribute `{}` on a struct; expected one of: {}",
                    path_name(&meta.path),
                    CONTAINER_KEYS.join(", ")
                )));
            }
            Ok(())
        });
        if let Err(err) = result {
            cx.syn_error(err);
        }
    }
    c
}

/// A field's parsed attributes, kept with their spans for the cross-field checks.
pub(crate) struct FieldAttrs {
    pub(crate) id: Attr<()>,
    pub(crate) merge: Attr<MergeStrategy>,
    pub(crate) skip: Attr<()>,
    pub(crate) immutable: Attr<()>,
    pub(crate) rename: Attr<String>,
    pub(crate) column: Attr<String>,
    pub(crate) json: Attr<()>,
    pub(crate) references: Attr<String>,
    pub(crate) renamed_from: Attr<String>,
    pub(crate) default: Attr<serde_json::Value>,
    /// Every key's path, in order, for error spans.
    pub(crate) paths: Vec<syn::Path>,
}

impl FieldAttrs {
    /// The path token of the first use of `key`.
    pub(crate) fn path_of(&self, key: &str) -> Option<&syn::Path> {
        self.paths.iter().find(|p| p.is_ident(key))
    }
}

impl<T> Attr<T> {
    pub(crate) fn present(&self) -> bool {
        self.is_set()
    }
}

fn parse_field(cx: &Ctxt, field: &syn::Field) -> Option<(Field, FieldAttrs)> {
    let mut a = FieldAttrs {
        id: Attr::none("id"),
        merge: Attr::none("merge"),
        skip: Attr::none("skip"),
        immutable: Attr::none("immutable"),
        rename: Attr::none("rename"),
        column: Attr::none("column"),
        json: Attr::none("json"),
        references: Attr::none("references"),
        renamed_from: Attr::none("renamed_from"),
        default: Attr::none("default"),
        paths: Vec::new(),
    };
    let mut ok = true;
    for attr in field.attrs.iter().filter(|a| a.path().is_ident("sync")) {
        let result = attr.parse_nested_meta(|meta| {
            a.paths.push(meta.path.clone());
            let p = &meta.path;
            if p.is_ident("id") {
                no_value(&meta)?;
                a.id.set(cx, p, ());
            } else if p.is_ident("skip") {
                no_value(&meta)?;
                a.skip.set(cx, p, ());
            } else if p.is_ident("immutable") {
                no_value(&meta)?;
                a.immutable.set(cx, p, ());
            } else if p.is_ident("json") {
                no_value(&meta)?;
                a.json.set(cx, p, ());
            } else if p.is_ident("merge") {
                let lit = string_value(&meta)?;
                let strategy = parse_strategy(&lit)?;
                a.merge.set(cx, p, strategy);
            } else if p.is_ident("rename") {
                let lit = string_value(&meta)?;
                a.rename.set(cx, p, lit.value());
            } else if p.is_ident("column") {
                let lit = string_value(&meta)?;
                a.column.set(cx, p, lit.value());
            } else if p.is_ident("references") {
                let lit = string_value(&meta)?;
                a.references.set(cx, p, lit.value());
            } else if p.is_ident("renamed_from") {
                let lit = string_value(&meta)?;
                a.renamed_from.set(cx, p, lit.value());
            } else if p.is_ident("default") {
                let expr: Expr = meta.value()?.parse()?;
                let value = literal_json(&expr)?;
                a.default.set(cx, p, value);
            } else if CONTAINER_KEYS.iter().any(|k| p.is_ident(k)) {
                return Err(meta.error(format!(
                    "`{}` is a struct attribute; put it on the struct. On a field, #[sync(...)] accepts: {}",
                    path_name(p),
                    FIELD_KEYS.join(", ")
                )));
            } else {
                return Err(meta.error(format!(
                    "unknown sync attribute `{}` on a field; expected one of: {}",
                    path_name(p),
                    FIELD_KEYS.join(", ")
                )));
            }
            Ok(())
        });
        if let Err(err) = result {
            cx.syn_error(err);
            ok = false;
        }
    }
    let ident = field.ident.as_ref()?;
    let rust_name = ident.to_string();
    let rust_name = rust_name
        .strip_prefix("r#")
        .unwrap_or(&rust_name)
        .to_string();
    let ty = if a.skip.is_set() {
        // Local-only fields may have any type; they never reach a column or the wire.
        crate::model::FieldType {
            kind: crate::model::TypeKind::Json {
                rust_type: crate::types::type_to_string(&field.ty),
            },
            nullable: false,
        }
    } else {
        match classify(&field.ty, a.json.is_set()) {
            Ok(t) => t,
            Err(err) => {
                cx.syn_error(err);
                return None;
            }
        }
    };
    if !ok {
        return None;
    }
    let name = a.rename.value.clone().unwrap_or_else(|| rust_name.clone());
    let column = a
        .column
        .value
        .clone()
        .unwrap_or_else(|| name.to_snek_case());
    let f = Field {
        rust_name,
        name,
        column,
        ty,
        merge: a.merge.value.unwrap_or_default(),
        id: a.id.is_set(),
        skip: a.skip.is_set(),
        immutable: a.immutable.is_set(),
        references: a.references.value.clone(),
        renamed_from: a.renamed_from.value.clone(),
        default: a.default.value.clone(),
        docs: docs(&field.attrs),
    };
    Some((f, a))
}

fn path_name(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

fn string_value(meta: &ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    let name = path_name(&meta.path);
    let value = meta
        .value()
        .map_err(|_| meta.error(format!("`{name}` needs a value: #[sync({name} = \"...\")]")))?;
    let expr: Expr = value.parse()?;
    match expr {
        Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{name}` takes a string: #[sync({name} = \"...\")]"),
        )),
    }
}

fn no_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
        let name = path_name(&meta.path);
        return Err(meta.error(format!(
            "`{name}` is a flag and takes no value: write #[sync({name})]"
        )));
    }
    Ok(())
}

fn parse_strategy(lit: &LitStr) -> syn::Result<MergeStrategy> {
    let value = lit.value();
    if let Some(s) = MergeStrategy::ALL.iter().find(|s| s.as_str() == value) {
        return Ok(*s);
    }
    let lower = value.to_lowercase();
    let alias = match lower.as_str() {
        "last_write_wins" | "last-write-wins" | "lastwritewins" | "last_writer_wins" => Some("lww"),
        "counter" | "add" | "increment" | "pn_counter" => Some("sum"),
        "set" | "orset" | "or_set" | "add_wins" | "merge" => Some("union"),
        "conflict" | "user" | "ask" => Some("manual"),
        _ => None,
    };
    let nearest = alias.or_else(|| {
        MergeStrategy::ALL
            .iter()
            .map(|s| (strsim::damerau_levenshtein(&lower, s.as_str()), s.as_str()))
            .filter(|(d, s)| *d <= s.len().div_ceil(2).max(2))
            .min_by_key(|(d, _)| *d)
            .map(|(_, s)| s)
    });
    let valid = "expected one of \"lww\", \"sum\", \"union\", \"manual\"";
    let msg = match nearest {
        Some(s) => format!("unknown merge strategy `{value}`; did you mean \"{s}\"? ({valid})"),
        None => format!("unknown merge strategy `{value}`; {valid}"),
    };
    Err(syn::Error::new_spanned(lit, msg))
}

fn literal_json(expr: &Expr) -> syn::Result<serde_json::Value> {
    let err = || {
        syn::Error::new_spanned(
            expr,
            "`default` takes a literal: a number, a string, `true` or `false` (for example #[sync(default = 0)])",
        )
    };
    match expr {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => Ok(serde_json::Value::String(s.value())),
            Lit::Bool(b) => Ok(serde_json::Value::Bool(b.value)),
            Lit::Int(i) => i
                .base10_parse::<i64>()
                .map(serde_json::Value::from)
                .map_err(|_| err()),
            Lit::Float(f) => {
                let v: f64 = f.base10_parse().map_err(|_| err())?;
                serde_json::Number::from_f64(v)
                    .map(serde_json::Value::Number)
                    .ok_or_else(err)
            }
            _ => Err(err()),
        },
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => match literal_json(&u.expr)? {
            serde_json::Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Ok(serde_json::Value::from(-i))
                } else {
                    serde_json::Number::from_f64(-n.as_f64().ok_or_else(err)?)
                        .map(serde_json::Value::Number)
                        .ok_or_else(err)
                }
            }
            _ => Err(err()),
        },
        _ => Err(err()),
    }
}

/// The doc comment of an item: `///` lines joined, one leading space removed.
fn docs(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta
            && let Expr::Lit(syn::ExprLit {
                lit: Lit::Str(s), ..
            }) = &nv.value
        {
            let v = s.value();
            lines.push(v.strip_prefix(' ').unwrap_or(&v).trim_end().to_string());
        }
    }
    lines.join("\n").trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::pluralize;

    #[test]
    fn plural_table_names() {
        assert_eq!(pluralize("task"), "tasks");
        assert_eq!(pluralize("category"), "categories");
        assert_eq!(pluralize("day"), "days");
        assert_eq!(pluralize("box"), "boxes");
        assert_eq!(pluralize("address"), "addresses");
        assert_eq!(pluralize("order_line"), "order_lines");
    }
}
