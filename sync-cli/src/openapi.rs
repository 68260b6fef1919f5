//! The backend contract: an OpenAPI 3.1 document of `POST /push`, `GET /changes`,
//! `GET /snapshot` and `GET /health` for a model.
//!
//! The messages are typed end to end: per entity a record, a patch whose operations
//! follow each field's merge strategy, the clocks, the mutations by `op` (`<E>Create`,
//! `<E>Update`, `<E>Delete`) and the server record, built from the model with
//! descriptions from the Rust doc comments; `AnyServerRecord` is a `oneOf` discriminated
//! by `entity_type` and `AnyMutation` a `oneOf` of the per-entity mutations (each
//! discriminated by `op`, with a constant `entity_type`), and `PushRequest`, `PushResponse`
//! (results discriminated by `status`), `ChangesResponse` and `SnapshotResponse` hold
//! them. Only `Problem` and `Hlc` come from `sync-runtime`'s schemars schemas (draft
//! 2020-12); the standalone wire-level schemas are [`protocol_schemas`].

mod v3_0;
pub use v3_0::openapi_3_0;

use serde_json::{Map, Value as Json, json};
use sync_model::{Entity, Field, MergeStrategy, Model, ScalarType, TypeKind};
use sync_runtime::protocol::{
    CHANGE_TOKEN_PATTERN, ChangesResponse, DEFAULT_MAX_PUSH_BODY_BYTES, MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_PAGE_LIMIT, MAX_PUSH_MUTATIONS, MAX_REPLACED_KEYS, MAX_TRANSACTION_ID_CHARS,
    PROTOCOL_VERSION, Problem, PushRequest, PushResponse, SNAPSHOT_CURSOR_PATTERN,
    SnapshotResponse,
};

/// The component name of an entity's schemas: `Task` -> `TaskRecord`, `TaskPatch`, ...
fn name(e: &Entity, suffix: &str) -> String {
    format!("{}{suffix}", e.rust_name)
}

fn reference(name: &str) -> Json {
    reference_to("schemas", name)
}

/// A reference to the component `name` of the kind `kind` (`schemas`, `headers`).
fn reference_to(kind: &str, name: &str) -> Json {
    json!({ "$ref": format!("#/components/{kind}/{name}") })
}

fn scalar_schema(s: ScalarType) -> Json {
    match s {
        ScalarType::Bool => json!({ "type": "boolean" }),
        ScalarType::I8 => json!({ "type": "integer", "minimum": -128, "maximum": 127 }),
        ScalarType::I16 => json!({ "type": "integer", "minimum": -32768, "maximum": 32767 }),
        ScalarType::I32 => json!({ "type": "integer", "format": "int32" }),
        ScalarType::I64 => json!({ "type": "integer", "format": "int64" }),
        ScalarType::U8 => json!({ "type": "integer", "minimum": 0, "maximum": 255 }),
        ScalarType::U16 => json!({ "type": "integer", "minimum": 0, "maximum": 65535 }),
        ScalarType::U32 => json!({ "type": "integer", "minimum": 0, "maximum": 4294967295u64 }),
        ScalarType::F32 => json!({ "type": "number", "format": "float" }),
        ScalarType::F64 => json!({ "type": "number", "format": "double" }),
        ScalarType::String => json!({ "type": "string" }),
        ScalarType::Uuid => json!({ "type": "string", "format": "uuid" }),
        ScalarType::Timestamp => json!({ "type": "string", "format": "date-time" }),
        ScalarType::Bytes => {
            json!({ "type": "array", "items": { "type": "integer", "minimum": 0, "maximum": 255 } })
        }
    }
}

/// The JSON Schema of a field's wire value.
pub fn field_schema(f: &Field) -> Json {
    let mut s = match &f.ty.kind {
        TypeKind::Scalar { scalar } => scalar_schema(*scalar),
        TypeKind::Set { item, .. } => {
            json!({ "type": "array", "items": scalar_schema(*item), "uniqueItems": true })
        }
        TypeKind::Json { rust_type } => {
            json!({ "description": format!("Any JSON value (Rust type `{rust_type}`).") })
        }
    };
    if f.ty.nullable {
        s = json!({ "anyOf": [s, { "type": "null" }] });
    }
    if !f.docs.is_empty()
        && let Some(obj) = s.as_object_mut()
    {
        let extra = obj
            .get("description")
            .and_then(Json::as_str)
            .map(|d| format!(" {d}"))
            .unwrap_or_default();
        obj.insert(
            "description".into(),
            Json::String(format!("{}{extra}", f.docs)),
        );
    }
    s
}

/// A JSON object of `pairs`, moved in (`json!` would deep-copy every interpolated
/// `Value` through `serde_json::to_value`).
fn object<const N: usize>(pairs: [(&str, Json); N]) -> Json {
    Json::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn op_schema(f: &Field) -> Json {
    let v = field_schema(f);
    let (props, required, what) = match f.merge {
        MergeStrategy::Lww => (
            object([("set", v), ("hlc", reference("Hlc"))]),
            json!(["set", "hlc"]),
            "last writer wins: set the value, stamped with the edit's clock",
        ),
        MergeStrategy::Sum => (
            object([("add", v)]),
            json!(["add"]),
            "sum: add the delta (may be negative)",
        ),
        MergeStrategy::Union => (
            object([("add", v.clone()), ("remove", v)]),
            json!([]),
            "union: remove these items, then add these",
        ),
        MergeStrategy::Manual => (
            object([("set", v.clone()), ("base", v)]),
            json!(["set", "base"]),
            "manual: set the value, replacing `base`; a server holding a third value reports a conflict",
        ),
    };
    object([
        ("type", Json::from("object")),
        (
            "description",
            Json::String(format!("Operation on `{}` ({what}).", f.name)),
        ),
        ("properties", props),
        ("required", required),
        ("additionalProperties", Json::Bool(false)),
    ])
}

/// The model's facts about a field that JSON Schema cannot say, as OpenAPI extensions
/// on the field's schema in `<E>Record`, so a server in another language can be driven
/// by the document instead of a transcription of the Rust source:
///
/// | extension | value |
/// |---|---|
/// | `x-syncgen-merge` | the merge strategy: `lww`, `sum`, `union` or `manual` |
/// | `x-syncgen-column` | the SQL column (the generated migrations' name) |
/// | `x-syncgen-id` | `true` on the record's identity, absent elsewhere |
/// | `x-syncgen-immutable` | `true` when set at create and never patched (the id is) |
/// | `x-syncgen-references` | the wire name of the entity whose id the field holds |
/// | `x-syncgen-default` | the value rows created by an earlier model get |
///
/// The record schema itself carries `x-syncgen-entity` (the wire name) and
/// `x-syncgen-table`.
pub fn field_metadata(f: &Field) -> Map<String, Json> {
    let mut m = Map::new();
    m.insert("x-syncgen-merge".into(), Json::from(f.merge.as_str()));
    m.insert("x-syncgen-column".into(), Json::from(f.column.as_str()));
    if f.id {
        m.insert("x-syncgen-id".into(), Json::Bool(true));
    }
    m.insert(
        "x-syncgen-immutable".into(),
        Json::Bool(f.immutable || f.id),
    );
    if let Some(r) = &f.references {
        m.insert("x-syncgen-references".into(), Json::from(r.as_str()));
    }
    if let Some(d) = &f.default {
        m.insert("x-syncgen-default".into(), d.clone());
    }
    m
}

fn entity_schemas(e: &Entity, out: &mut Map<String, Json>) {
    let mut props = Map::new();
    let mut required = Vec::new();
    for f in e.synced_fields() {
        let mut schema = field_schema(f);
        if let Some(obj) = schema.as_object_mut() {
            obj.extend(field_metadata(f));
        }
        props.insert(f.name.clone(), schema);
        required.push(Json::String(f.name.clone()));
    }
    let mut record = json!({
        "type": "object",
        "additionalProperties": false,
        "x-syncgen-entity": e.name,
        "x-syncgen-table": e.table,
    });
    record["properties"] = Json::Object(props);
    record["required"] = Json::Array(required);
    if !e.docs.is_empty() {
        record["description"] = Json::String(e.docs.clone());
    }
    out.insert(name(e, "Record"), record);

    let mut patch = Map::new();
    let mut clocks = Map::new();
    for f in e.synced_fields().filter(|f| !f.id && !f.immutable) {
        patch.insert(f.name.clone(), op_schema(f));
        if f.merge == MergeStrategy::Lww {
            clocks.insert(f.name.clone(), reference("Hlc"));
        }
    }
    let mut patch_schema = json!({
        "type": "object",
        "description": format!("Field-level patch of a `{}`: one operation per changed field, by its merge strategy.", e.name),
        "additionalProperties": false
    });
    patch_schema["properties"] = Json::Object(patch);
    out.insert(name(e, "Patch"), patch_schema);
    let mut clocks_schema = json!({
        "type": "object",
        "description": format!("When each last-writer-wins field of a `{}` was last edited.", e.name),
        "additionalProperties": false
    });
    clocks_schema["properties"] = Json::Object(clocks);
    out.insert(name(e, "Clocks"), clocks_schema);
    let envelope = |op: &str, what: &str, members: Json, required: &[&str]| {
        let mut properties = json!({
            "idempotency_key": { "type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS, "description": "Unique per mutation; a retry sends the same key and the same body." },
            "entity_type": { "const": e.name },
            "entity_id": { "type": "string", "format": "uuid" },
            "op": { "const": op },
            "base_version": { "type": ["integer", "null"], "format": "int64", "description": "The server version the edit was made on; `null` if it never saw one." },
            "replaces": {
                "type": "array",
                "maxItems": MAX_REPLACED_KEYS,
                "items": { "type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS },
                "description": "Idempotency keys of earlier mutations of this record, answered `conflict` or rejected as `unknown-record`, whose change this one carries; once it is applied, a retry of any of them is answered with its result (PROTOCOL.md IDEM-6). Sent only to servers of protocol 1.3.1 or later."
            },
            "transaction": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_TRANSACTION_ID_CHARS,
                "description": "The local transaction this mutation was committed in (opaque). The mutations of a push from the first to the last of one transaction, with what lies between them, the transactions overlapping them and the later mutations of their records, are applied all or none: if one is answered `conflict` or rejected, each of the others is rejected with problem `transaction-aborted` (409), not stored under its key (PROTOCOL.md TXN-1). Not part of the idempotency hash. Sent only to servers of protocol 1.4.0 or later."
            }
        });
        for (k, v) in members.as_object().into_iter().flatten() {
            properties[k] = v.clone();
        }
        let mut req = vec!["idempotency_key", "entity_type", "entity_id", "op"];
        req.extend_from_slice(required);
        json!({
            "type": "object",
            "description": format!("{what} of a `{}`.", e.name),
            "properties": properties,
            "required": req,
            "additionalProperties": false
        })
    };
    out.insert(
        name(e, "Create"),
        envelope(
            "create",
            "A create",
            json!({
                "record": reference(&name(e, "Record")),
                "clocks": reference(&name(e, "Clocks")),
                "dot": reference("Dot"),
                "dots": reference("Dots"),
                "dot_gaps": reference("DotGaps")
            }),
            &["record"],
        ),
    );
    out.insert(
        name(e, "Update"),
        envelope(
            "update",
            "An update",
            json!({ "patch": reference(&name(e, "Patch")), "dot": reference("Dot") }),
            &["patch"],
        ),
    );
    out.insert(
        name(e, "Delete"),
        envelope(
            "delete",
            "A delete",
            json!({ "hlc": reference("Hlc") }),
            &[],
        ),
    );
    let mut mutation = json!({
        "description": format!("A mutation of a `{}`, by `op`.", e.name),
        "oneOf": [reference(&name(e, "Create")), reference(&name(e, "Update")), reference(&name(e, "Delete"))],
        "discriminator": { "propertyName": "op" }
    });
    mutation["discriminator"]["mapping"] = json!({
        "create": format!("#/components/schemas/{}", name(e, "Create")),
        "update": format!("#/components/schemas/{}", name(e, "Update")),
        "delete": format!("#/components/schemas/{}", name(e, "Delete")),
    });
    out.insert(name(e, "Mutation"), mutation);
    out.insert(
        name(e, "ServerRecord"),
        json!({
            "type": "object",
            "description": format!("The server's state of a `{}`. A tombstone garbage collection removed (`deleted`, its values gone) has an empty `record` and `clocks` and an empty `server_updated_at`.", e.name),
            "properties": {
                "entity_type": { "const": e.name },
                "entity_id": { "type": "string", "format": "uuid" },
                "version": { "type": "integer", "format": "int64" },
                "server_updated_at": { "anyOf": [
                    { "type": "string", "format": "date-time" },
                    { "const": "", "description": "A collected tombstone." }
                ] },
                "deleted": { "type": "boolean" },
                "record": { "oneOf": [reference(&name(e, "Record")), reference("CollectedRecord")] },
                "clocks": reference(&name(e, "Clocks")),
                "dots": reference("Dots"),
                "dot_gaps": reference("DotGaps"),
                "life_since": {
                    "type": "integer",
                    "format": "int64",
                    "minimum": 1,
                    "description": "The version this life of the record began at, when it began with a create of a deleted id (over its tombstone, or after the tombstone was collected): it includes none of an earlier life's contributions (PROTOCOL.md SUM-4). Left out on a record's first life. Sent by servers of protocol 1.3.3 or later to clients that say they speak it."
                }
            },
            "required": ["entity_type", "entity_id", "version", "server_updated_at", "deleted", "record", "clocks"],
            "additionalProperties": false
        }),
    );
}

/// `Dots`: a map of sessions to numbers (a type alias in the runtime, so written here).
fn dots_schema() -> Json {
    json!({
        "type": "object",
        "description": "The contributions a record's `sum` fields include (PROTOCOL.md SUM-2): per store session (16 lowercase hex digits), the highest `seq` of its mutations applied to the record; every lower one is included too unless `dot_gaps` names it (SUM-3). Sent by servers of protocol 1.3.0 or later to clients that say they speak it (the `sync-protocol` request header); sent by such clients with a create of a record the server lost.",
        "propertyNames": { "pattern": "^[0-9a-f]{16}$" },
        "additionalProperties": { "type": "integer", "format": "int64", "minimum": 1 }
    })
}

/// `DotGaps`: per session, the ranges of numbers below its dots a record lacks (a type
/// alias in the runtime, so written here).
fn dot_gaps_schema() -> Json {
    json!({
        "type": "object",
        "description": "The contributions below a record's `dots` that it lacks (PROTOCOL.md SUM-3): per store session (16 lowercase hex digits), sorted, disjoint, non-adjacent ranges `[first, last]` of dot numbers, `1 <= first <= last <` the session's number in `dots`. Sent by servers of protocol 1.3.2 or later to clients that say they speak it (left out when empty); sent by such clients with the `dots` of a create of a record the server lost.",
        "propertyNames": { "pattern": "^[0-9a-f]{16}$" },
        "additionalProperties": {
            "type": "array",
            "items": {
                "type": "array",
                "description": "`[first, last]`: the numbers from `first` to `last`, both included.",
                "items": { "type": "integer", "format": "int64", "minimum": 1 },
                "minItems": 2,
                "maxItems": 2
            }
        }
    })
}

/// The protocol's messages with the entities' typed records: what `openapi` adds beside
/// the entity schemas (`AnyMutation` and `AnyServerRecord` are inserted by the caller).
fn typed_messages(out: &mut Map<String, Json>) {
    let key = json!({ "type": "string", "description": "The mutation's key." });
    let result = |status: &str, what: &str, members: Json, required: &[&str]| {
        let mut properties =
            json!({ "status": { "const": status }, "idempotency_key": key.clone() });
        for (k, v) in members.as_object().into_iter().flatten() {
            properties[k] = v.clone();
        }
        let mut req = vec!["status", "idempotency_key"];
        req.extend_from_slice(required);
        json!({ "type": "object", "description": what, "properties": properties, "required": req, "additionalProperties": false })
    };
    out.insert(
        "CollectedRecord".into(),
        json!({ "type": "object", "additionalProperties": false, "description": "The record of a tombstone garbage collection removed: no values remain." }),
    );
    out.insert(
        "AppliedResult".into(),
        result(
            "applied",
            "Applied (or already applied: an idempotent replay). `server` is the record now.",
            json!({ "server": reference("AnyServerRecord") }),
            &["server"],
        ),
    );
    out.insert(
        "ConflictResult".into(),
        result(
            "conflict",
            "Not applied: the client merges with the server's record (`server`) and pushes again. `fields` lists the `manual` fields changed on both sides (empty when a delete wins or the same id was created twice with equal values).",
            json!({ "server": reference("AnyServerRecord"), "fields": { "type": "array", "items": { "type": "string" } } }),
            &["server", "fields"],
        ),
    );
    out.insert(
        "RejectedResult".into(),
        result(
            "rejected",
            "Refused and never to be retried as is (invalid data, unknown entity or record, a key reused with another body). `problem.pointer`, when present, points into the mutation.",
            json!({ "problem": reference("Problem") }),
            &["problem"],
        ),
    );
    out.insert(
        "MutationResult".into(),
        json!({
            "description": "What happened to one mutation, by `status`.",
            "oneOf": [reference("AppliedResult"), reference("ConflictResult"), reference("RejectedResult")],
            "discriminator": { "propertyName": "status", "mapping": {
                "applied": "#/components/schemas/AppliedResult",
                "conflict": "#/components/schemas/ConflictResult",
                "rejected": "#/components/schemas/RejectedResult"
            } }
        }),
    );
    out.insert(
        "PushRequest".into(),
        json!({
            "type": "object",
            "description": "An ordered batch of mutations, each applied independently.",
            "properties": { "mutations": { "type": "array", "maxItems": MAX_PUSH_MUTATIONS, "items": reference("AnyMutation") } },
            "required": ["mutations"],
            "additionalProperties": false
        }),
    );
    out.insert(
        "PushResponse".into(),
        json!({
            "type": "object",
            "description": "One result per mutation, in the request's order.",
            "properties": { "results": { "type": "array", "items": reference("MutationResult") } },
            "required": ["results"],
            "additionalProperties": false
        }),
    );
    out.insert(
        "ChangesResponse".into(),
        json!({
            "type": "object",
            "description": "A page of changes: each record changed after the token at its latest state, in commit order.",
            "properties": {
                "changes": { "type": "array", "items": reference("AnyServerRecord") },
                "next_token": { "type": "string", "pattern": CHANGE_TOKEN_PATTERN, "description": "The token to continue from." },
                "has_more": { "type": "boolean", "description": "More changes follow: ask again from `next_token` right away." }
            },
            "required": ["changes", "next_token", "has_more"],
            "additionalProperties": false
        }),
    );
    out.insert(
        "SnapshotResponse".into(),
        json!({
            "type": "object",
            "description": "A page of a snapshot pinned to `token`.",
            "properties": {
                "records": { "type": "array", "items": reference("AnyServerRecord") },
                "next_cursor": { "type": "string", "pattern": SNAPSHOT_CURSOR_PATTERN, "description": "The cursor of the next page, while `has_more`." },
                "has_more": { "type": "boolean" },
                "token": { "type": "string", "pattern": CHANGE_TOKEN_PATTERN, "description": "The change token the snapshot is pinned to: once every page is read, continue with `GET /changes?since=token`." },
                "estimated_total": { "type": "integer", "format": "int64", "minimum": 0, "description": "On the first page: about how many records the whole snapshot holds, tombstones included, for a progress bar (PROTOCOL.md SNAP-3). For clients that send `sync-protocol` 1.3.0 or later." }
            },
            "required": ["records", "has_more", "token"],
            "additionalProperties": false
        }),
    );
}

/// Moves schemars' `$defs` into `components/schemas` and rewrites the references.
fn add_protocol_schema<T: schemars::JsonSchema>(out: &mut Map<String, Json>) {
    let settings = schemars::generate::SchemaSettings::draft2020_12().with(|s| {
        s.definitions_path = "/components/schemas".into();
    });
    let generator = settings.into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    let obj = schema.as_object_mut().expect("a schema object");
    obj.remove("$schema");
    if let Some(Json::Object(defs)) = obj.remove("$defs").or_else(|| obj.remove("components")) {
        let defs = match defs.get("schemas") {
            Some(Json::Object(inner)) => inner.clone(),
            _ => defs,
        };
        for (k, v) in defs {
            out.entry(k).or_insert(v);
        }
    }
    let title = obj
        .get("title")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_string();
    out.insert(title, schema);
}

fn problem_response(description: &str, example: Json) -> Json {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": reference("Problem"), "example": example } }
    })
}

fn problem_example(kind: &str, title: &str, status: u16, detail: &str) -> Json {
    json!({ "type": format!("https://syncgen.dev/problems/{kind}"), "title": title, "status": status, "detail": detail })
}

/// The OpenAPI 3.1 document of the protocol for `model`.
pub fn openapi(model: &Model, title: &str) -> Json {
    let mut doc = openapi_without_fingerprint(model, title, model.entities.len(), Map::new);
    set_fingerprint(&mut doc, &sync_model::fingerprint(model).0);
    doc
}

/// Writes the model fingerprint into a document of [`openapi_without_fingerprint`]:
/// `info.version`, `info.x-syncgen-fingerprint` and the `/health` example.
pub(crate) fn set_fingerprint(doc: &mut Json, fingerprint: &str) {
    let fp = Json::String(fingerprint.to_string());
    doc["info"]["version"] = fp.clone();
    doc["info"]["x-syncgen-fingerprint"] = fp.clone();
    doc["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["example"]
        ["fingerprint"] = fp;
}

/// The component schemas of `entities` (record, patch, clocks, mutation, server record
/// of each), as [`openapi`] inserts them.
pub(crate) fn entity_component_schemas(entities: &[Entity]) -> Map<String, Json> {
    let mut out = Map::new();
    for e in entities {
        entity_schemas(e, &mut out);
    }
    out
}

/// The document of [`openapi`] with `null` where the fingerprint goes (see
/// [`set_fingerprint`]), so `generate` can hash the model while this is built.
///
/// Only the schemas of the first `split` entities are built here; `tail` gives those of
/// the others ([`entity_component_schemas`] of `model.entities[split..]`, which
/// `generate` builds on another thread). They are added in entity order, after the
/// protocol's, as if built here.
pub(crate) fn openapi_without_fingerprint(
    model: &Model,
    title: &str,
    split: usize,
    tail: impl FnOnce() -> Map<String, Json>,
) -> Json {
    let fingerprint = Json::Null;
    let mut schemas = Map::new();
    add_protocol_schema::<Problem>(&mut schemas);
    add_protocol_schema::<sync_runtime::hlc::Hlc>(&mut schemas);
    add_protocol_schema::<sync_runtime::protocol::Dot>(&mut schemas);
    schemas.insert("Dots".into(), dots_schema());
    schemas.insert("DotGaps".into(), dot_gaps_schema());
    typed_messages(&mut schemas);
    for e in &model.entities[..split] {
        entity_schemas(e, &mut schemas);
    }
    // `append` keeps the later value of a key present in both, as a later `insert` would.
    schemas.append(&mut tail());
    let entity_refs = |suffix: &str| -> Json {
        Json::Array(
            model
                .entities
                .iter()
                .map(|e| reference(&name(e, suffix)))
                .collect(),
        )
    };
    let mapping = |suffix: &str| -> Json {
        Json::Object(
            model
                .entities
                .iter()
                .map(|e| {
                    (
                        e.name.clone(),
                        Json::String(format!("#/components/schemas/{}", name(e, suffix))),
                    )
                })
                .collect(),
        )
    };
    let any = |suffix: &str| -> Json {
        let mut any = json!({ "discriminator": { "propertyName": "entity_type" } });
        any["oneOf"] = entity_refs(suffix);
        any["discriminator"]["mapping"] = mapping(suffix);
        any
    };
    // Each `<E>Mutation` is itself a `oneOf` discriminated by `op`, and a discriminator
    // may only map to object schemas (openapi-typescript warns, and generators that
    // follow the rule drop the mapping), so this envelope is a plain `oneOf`: exact all
    // the same, as every member's `entity_type` is a `const`.
    schemas.insert(
        "AnyMutation".into(),
        json!({ "oneOf": entity_refs("Mutation") }),
    );
    schemas.insert("AnyServerRecord".into(), any("ServerRecord"));

    let example_entity = model.entities.first();
    let push_example = example_entity.map(|e| {
        json!({ "mutations": [{
            "idempotency_key": "5f0c7c1e-4a9e-4c1b-9f55-0f6f5f1c2a11",
            "entity_type": e.name,
            "entity_id": "01900000-0000-7000-8000-000000000001",
            "op": "delete",
            "base_version": 3,
            "hlc": "019a1b2c3d4e-00000000-7f3a9c1d2e4b5a60"
        }]})
    });
    let changes_example =
        json!({ "changes": [], "next_token": "t2.42.5f2c8e1a9b3d7c60", "has_more": false });
    let snapshot_example =
        json!({ "records": [], "has_more": false, "token": "t2.42.5f2c8e1a9b3d7c60" });
    let retry_after = json!({
        "Retry-After": { "description": "Seconds to wait before retrying.", "schema": { "type": "integer", "minimum": 0 } }
    });
    let r401 = problem_response(
        "No valid bearer token: refresh it.",
        problem_example(
            "unauthorized",
            "Unauthorized",
            401,
            "the bearer token is not valid; refresh it",
        ),
    );
    let r426 = problem_response(
        "The client's model (the `sync-model-fingerprint` header) is not one this server serves: the app is older than the server still serves (update the app), or newer than the server (its changes wait until the server is upgraded).",
        problem_example(
            "upgrade-required",
            "Client model not supported",
            426,
            "update the app",
        ),
    );
    let mut r429 = problem_response(
        "Too many requests: wait for `Retry-After`.",
        problem_example("rate-limited", "Too many requests", 429, "slow down"),
    );
    r429["headers"] = retry_after.clone();
    let r400 = problem_response(
        "Malformed request.",
        problem_example(
            "invalid-body",
            "Invalid push body",
            400,
            "expected value at line 1 column 1",
        ),
    );
    let r410 = problem_response(
        "The change token or snapshot cursor cannot be continued: `token-expired` (its changes were compacted) or `token-unknown` (this database did not issue it to this account: a restored or replaced database, another account's token). Take a new snapshot; after `token-unknown`, push again what the server lost.",
        problem_example(
            "token-expired",
            "Change token expired",
            410,
            "take a new snapshot (GET /snapshot) and continue from its token",
        ),
    );
    let limit = json!({ "name": "limit", "in": "query", "required": false, "description": "Page size (capped by the server).", "schema": { "type": "integer", "minimum": 1, "maximum": MAX_PAGE_LIMIT } });
    let fingerprint_header = json!({
        "name": "sync-model-fingerprint", "in": "header", "required": false,
        "description": "The fingerprint of the model the client was built with; unknown fingerprints get 426 (after the request's input is checked); absent: the server's own model.",
        "schema": { "type": "string", "pattern": "^sha256:[0-9a-f]{32}$" }
    });
    let protocol_header = json!({
        "name": "sync-protocol", "in": "header", "required": false,
        "description": "The sync protocol version the client's runtime speaks (`x-syncgen-protocol` of this document for a current one). From 1.3.0 on, records in responses carry their `dots`, from 1.3.2 on their `dot_gaps` too, from 1.3.3 on their `life_since`; absent, or not a `major.minor.patch` of 1.3.0 or later: served without them.",
        "schema": { "type": "string" }
    });

    let mut paths = Map::new();
    paths.insert(
        "/push".into(),
        json!({ "post": {
            "operationId": "push",
            "summary": "Apply an ordered batch of mutations.",
            "description": "Each mutation is applied independently, in order, and answered with `applied` (the server's record), `conflict` (the server's record and the conflicting `manual` fields; nothing applied) or `rejected` (a problem). Idempotency (the IETF Idempotency-Key draft's rules, per mutation key; there is no request-level `Idempotency-Key` header, since a batch is not the unit of retry: each mutation is applied, stored and replayed on its own): the same key with the same body replays the stored result; the same key with another body is rejected with a 422 problem; while the first request with a key is still processed, the push answers 409. The body is read strictly: a member name repeated in any object, an unknown member or an idempotency key outside 1 to 255 characters refuses the whole request (422, `pointer` naming the member in the body). `null` for an unused `record`, `clocks`, `patch` or `hlc` refuses the whole request too. A record, patch or clocks member the entity's schemas do not allow, or a member the mutation's `op` does not carry, refuses that mutation alone (`rejected`, 422, `pointer` into the mutation), so one bad mutation never blocks the others. A client of an earlier model the server still serves (its `sync-model-fingerprint`) may omit from a record the fields added since, which have a default or are optional. Values one supported database cannot store are refused the same way everywhere, for that mutation alone (`rejected`, 422): a string anywhere in a record or patch (JSON fields included) holding U+0000, and a timestamp outside the years 0001 to 9999.",
            "tags": ["sync"],
            "parameters": [fingerprint_header, protocol_header.clone()],
            "requestBody": { "required": true, "content": { "application/json": {
                "schema": reference("PushRequest"),
                "example": push_example
            } } },
            "responses": {
                "200": { "description": "One result per mutation, in order.", "content": { "application/json": {
                    "schema": reference("PushResponse"),
                    "example": { "results": [{ "status": "rejected", "idempotency_key": "5f0c7c1e-4a9e-4c1b-9f55-0f6f5f1c2a11",
                        "problem": problem_example("unknown-record", "Unknown record", 422, "no record with this id to delete") }] }
                } } },
                "400": r400,
                "401": r401,
                "409": problem_response("A mutation of this request is still being processed: retry later.", problem_example("request-in-progress", "Request in progress", 409, "retry later")),
                "413": problem_response(&format!("Too large: more than {MAX_PUSH_MUTATIONS} mutations, fewer than that a server chose to accept, or a body over the server's byte limit ({} MiB for the reference server by default). Send fewer mutations per request.", DEFAULT_MAX_PUSH_BODY_BYTES >> 20), problem_example("body-too-large", "Request body too large", 413, "send fewer mutations")),
                "422": problem_response("The body is JSON but not a push request.", problem_example("invalid-body", "Invalid push body", 422, "missing field `mutations`")),
                "426": r426,
                "429": r429
            }
        }}),
    );
    paths.insert(
        "/changes".into(),
        json!({ "get": {
            "operationId": "changes",
            "tags": ["sync"],
            "summary": "Records changed after a token, in commit order.",
            "description": "Each record at its latest state, tombstones included. A token never skips a change that commits late.",
            "parameters": [
                { "name": "since", "in": "query", "required": false, "description": "The token to continue from (opaque to clients; the pattern is the reference server's format); omitted: from the start.", "schema": { "type": "string", "pattern": CHANGE_TOKEN_PATTERN } },
                limit.clone(),
                fingerprint_header.clone(),
                protocol_header.clone()
            ],
            "responses": {
                "200": { "description": "A page of changes.", "content": { "application/json": { "schema": reference("ChangesResponse"), "example": changes_example } } },
                "400": problem_response("Not a token of this server.", problem_example("invalid-token", "Invalid change token", 400, "`x` is not a change token from this server")),
                "401": r401.clone(),
                "410": r410.clone(),
                "426": r426.clone(),
                "429": r429.clone()
            }
        }}),
    );
    paths.insert(
        "/snapshot".into(),
        json!({ "get": {
            "operationId": "snapshot",
            "tags": ["sync"],
            "summary": "The data set, page by page, pinned to a change token.",
            "description": "The account's records (tombstones included, until collected), page by page in entity and id order. The first page pins a change token; every page holds the records as of that token, and once the last page is read, `GET /changes?since=<token>` delivers every later change: none is missed, none comes twice.",
            "parameters": [
                { "name": "cursor", "in": "query", "required": false, "description": "The `next_cursor` of the previous page (opaque to clients; the pattern is the reference server's format).", "schema": { "type": "string", "pattern": SNAPSHOT_CURSOR_PATTERN } },
                { "name": "entity", "in": "query", "required": false, "description": "Only this entity's records (its wire name): how a device fetches again the entities a migration gave new fields. A cursor continues the snapshot it came from, with the same `entity`.", "schema": { "type": "string", "enum": model.entities.iter().map(|e| e.name.clone()).collect::<Vec<_>>() } },
                limit,
                fingerprint_header,
                protocol_header
            ],
            "responses": {
                "200": { "description": "A page of live records.", "content": { "application/json": { "schema": reference("SnapshotResponse"), "example": snapshot_example } } },
                "400": problem_response("Not a cursor of this server, or of a snapshot of another `entity`.", problem_example("invalid-cursor", "Invalid snapshot cursor", 400, "`x` is not a snapshot cursor from this server")),
                "401": r401,
                "410": r410,
                "426": r426,
                "429": r429
            }
        }}),
    );
    paths.insert(
        "/health".into(),
        json!({ "get": {
            "operationId": "health",
            "tags": ["health"],
            "summary": "Reachability check.",
            "description": "Answers without a token: the server is up, the model fingerprint it serves and its protocol version. It takes no query parameter.",
            "security": [],
            "responses": { "200": { "description": "The server is up.", "content": { "application/json": {
                "schema": { "type": "object", "properties": { "status": { "const": "ok" }, "fingerprint": { "type": "string" }, "protocol": { "type": "string" } }, "required": ["status", "fingerprint", "protocol"] },
                "example": { "status": "ok", "fingerprint": fingerprint, "protocol": PROTOCOL_VERSION }
            } } },
            "400": problem_response("A query parameter was given; `/health` takes none.", problem_example("invalid-query", "Invalid query", 400, "unknown field `verbose`, there are none")) }
        }}),
    );
    let entities: Vec<String> = model
        .entities
        .iter()
        .map(|e| format!("`{}`", e.name))
        .collect();
    let mut doc = json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": title,
            "version": fingerprint,
            "description": format!("The sync protocol of the entities {}, generated by syncgen from the Rust model. `info.version` and `x-syncgen-fingerprint` are the model fingerprint a client sends in `sync-model-fingerprint`.", entities.join(", ")),
            "x-syncgen-fingerprint": fingerprint,
            "x-syncgen-protocol": PROTOCOL_VERSION
        },
        "tags": [
            { "name": "sync", "description": "Push local changes; pull the server's changes and snapshots." },
            { "name": "health", "description": "Whether the server is up, and what it serves." }
        ],
        "security": [{ "bearer": [] }],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "A token the server maps to one account; every request sees only that account's rows." } }
        }
    });
    document_headers(&mut paths);
    doc["paths"] = Json::Object(paths);
    doc["components"]["schemas"] = Json::Object(schemas);
    doc["components"]["headers"] = json!({
        "RequestId": {
            "description": "The request's id: the client's `x-request-id` if it sent one, else one the server made. Problem bodies carry it in `instance`.",
            "schema": { "type": "string" }
        },
        "SyncProtocol": {
            "description": "The sync protocol version the server speaks (`x-syncgen-protocol`). From 1.3.0 on, it accepts a mutation's `dot` and `dots`, from 1.3.2 on a dot's `prev` and a create's `dot_gaps`, from 1.4.0 on its `transaction`; clients send them only to such a server.",
            "schema": { "type": "string" }
        },
        "WwwAuthenticate": {
            "description": "`Bearer`, or `Bearer error=\"invalid_token\"` for a token that is not valid (RFC 6750).",
            "schema": { "type": "string" }
        }
    });
    doc
}

/// Documents the headers every response carries (`x-request-id`) and those of 401
/// (`WWW-Authenticate`).
fn document_headers(paths: &mut Map<String, Json>) {
    for op in paths.values_mut().filter_map(Json::as_object_mut) {
        for op in op.values_mut() {
            let Some(responses) = op["responses"].as_object_mut() else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let headers = response
                    .as_object_mut()
                    .expect("a response object")
                    .entry("headers")
                    .or_insert_with(|| json!({}));
                headers["x-request-id"] = reference_to("headers", "RequestId");
                headers["sync-protocol"] = reference_to("headers", "SyncProtocol");
                if status == "401" {
                    headers["WWW-Authenticate"] = reference_to("headers", "WwwAuthenticate");
                }
            }
        }
    }
}

/// The document as YAML.
pub fn to_yaml(doc: &Json) -> String {
    serde_saphyr::to_string(doc).expect("JSON values serialise as YAML")
}

/// The protocol messages' JSON Schemas (draft 2020-12, standalone, one per message), by
/// file name: what the repository's `schemas/protocol/` folder holds.
pub fn protocol_schemas() -> Vec<(String, Json)> {
    fn one<T: schemars::JsonSchema>() -> (String, Json) {
        let schema = schemars::generate::SchemaSettings::draft2020_12()
            .into_generator()
            .into_root_schema_for::<T>()
            .to_value();
        (format!("{}.json", T::schema_name()), schema)
    }
    vec![
        one::<PushRequest>(),
        one::<PushResponse>(),
        one::<ChangesResponse>(),
        one::<SnapshotResponse>(),
        one::<Problem>(),
    ]
}

/// Every component schema of a model's document as one standalone JSON Schema bundle
/// (`$defs`), with references rewritten to point inside it.
pub fn model_schema_bundle(model: &Model) -> Json {
    let doc = openapi(model, "bundle");
    let text = serde_json::to_string(&doc["components"]["schemas"])
        .expect("serialises")
        .replace("#/components/schemas/", "#/$defs/");
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "The model's record, patch, clocks, mutation and server-record schemas, and the protocol messages, generated by syncgen.",
        "$defs": serde_json::from_str::<Json>(&text).expect("valid JSON")
    })
}
