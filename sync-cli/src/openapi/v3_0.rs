//! The document rendered as OpenAPI 3.0.3, for tools that read only 3.0 (the Rust
//! `openapiv3` crate and so progenitor, several Java and Go generators).
//!
//! 3.1's schemas are JSON Schema 2020-12; 3.0's are an extended subset of draft 4. The
//! rendering rewrites what 3.0 lacks, keeping every constraint 3.0 can say:
//!
//! | 3.1 | 3.0.3 |
//! |---|---|
//! | `type: [T, "null"]` | `type: T, nullable: true` |
//! | `anyOf`/`oneOf` with a `{type: "null"}` member | the other members, `nullable: true` |
//! | `const: v` | `enum: [v]` |
//! | `examples: [a, ..]` in a schema | `example: a` |
//! | `$ref` with sibling keywords | `allOf: [{$ref}]` with the siblings |
//! | `exclusiveMinimum: n` | `minimum: n, exclusiveMinimum: true` (same for maximum) |
//! | `jsonSchemaDialect`, `$schema`, `contentEncoding` | left out |
//! | `propertyNames` (the keys of `Dots`) | left out (the description gives the form) |
//! | `info.license.identifier` (SPDX) | `info.license.url` of the SPDX page |

use serde_json::{Map, Value as Json};

/// The OpenAPI 3.0.3 rendering of `doc`, a document of [`super::openapi`].
pub fn openapi_3_0(doc: &Json) -> Json {
    let mut out = doc.clone();
    let Some(root) = out.as_object_mut() else {
        return out;
    };
    root.insert("openapi".into(), Json::from("3.0.3"));
    root.remove("jsonSchemaDialect");
    if let Some(license) = root
        .get_mut("info")
        .and_then(|i| i.get_mut("license"))
        .and_then(Json::as_object_mut)
        && let Some(id) = license.remove("identifier")
    {
        let url = crate::api_info::spdx_url(id.as_str().unwrap_or_default());
        license.insert("url".into(), Json::from(url));
    }
    if let Some(schemas) = root
        .get_mut("components")
        .and_then(|c| c.get_mut("schemas"))
        .and_then(Json::as_object_mut)
    {
        for schema in schemas.values_mut() {
            schema_3_0(schema);
        }
    }
    if let Some(headers) = root
        .get_mut("components")
        .and_then(|c| c.get_mut("headers"))
        .and_then(Json::as_object_mut)
    {
        for header in headers.values_mut() {
            if let Some(schema) = header.get_mut("schema") {
                schema_3_0(schema);
            }
        }
    }
    if let Some(paths) = root.get_mut("paths").and_then(Json::as_object_mut) {
        for item in paths.values_mut().filter_map(Json::as_object_mut) {
            for op in item.values_mut().filter_map(Json::as_object_mut) {
                operation_3_0(op);
            }
        }
    }
    out
}

/// The schemas inside an operation: parameters, request body, responses and their
/// headers.
fn operation_3_0(op: &mut Map<String, Json>) {
    for p in op
        .get_mut("parameters")
        .and_then(Json::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(schema) = p.get_mut("schema") {
            schema_3_0(schema);
        }
    }
    if let Some(content) = op.get_mut("requestBody").and_then(|b| b.get_mut("content")) {
        content_3_0(content);
    }
    if let Some(responses) = op.get_mut("responses").and_then(Json::as_object_mut) {
        for r in responses.values_mut() {
            if let Some(headers) = r.get_mut("headers").and_then(Json::as_object_mut) {
                for h in headers.values_mut() {
                    if let Some(schema) = h.get_mut("schema") {
                        schema_3_0(schema);
                    }
                }
            }
            if let Some(content) = r.get_mut("content") {
                content_3_0(content);
            }
        }
    }
}

/// The schema of each media type of a `content` map.
fn content_3_0(content: &mut Json) {
    for media in content.as_object_mut().into_iter().flatten() {
        if let Some(schema) = media.1.get_mut("schema") {
            schema_3_0(schema);
        }
    }
}

fn is_null_schema(s: &Json) -> bool {
    s.get("type").and_then(Json::as_str) == Some("null")
        && s.as_object().is_some_and(|o| o.len() == 1)
}

/// Rewrites one schema (and every schema inside it) in 3.0's terms (see the module's
/// table).
fn schema_3_0(schema: &mut Json) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    // Children first.
    for key in ["properties", "patternProperties", "$defs"] {
        if let Some(m) = obj.get_mut(key).and_then(Json::as_object_mut) {
            for v in m.values_mut() {
                schema_3_0(v);
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(v) = obj.get_mut(key)
            && v.is_object()
        {
            schema_3_0(v);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = obj.get_mut(key).and_then(Json::as_array_mut) {
            for v in list.iter_mut() {
                schema_3_0(v);
            }
        }
    }
    for key in [
        "jsonSchemaDialect",
        "$schema",
        "contentEncoding",
        "$defs",
        "propertyNames",
    ] {
        obj.remove(key);
    }
    // `type: [T, "null"]`.
    if let Some(Json::Array(types)) = obj.get("type").cloned() {
        let nullable = types.iter().any(|t| t == "null");
        let rest: Vec<Json> = types.into_iter().filter(|t| t != "null").collect();
        match rest.len() {
            0 => {
                obj.remove("type");
            }
            1 => {
                obj.insert("type".into(), rest[0].clone());
            }
            _ => {
                obj.remove("type");
                let members = rest
                    .into_iter()
                    .map(|t| Json::Object(Map::from_iter([("type".to_string(), t)])))
                    .collect();
                obj.insert("anyOf".into(), Json::Array(members));
            }
        }
        if nullable {
            obj.insert("nullable".into(), Json::Bool(true));
        }
    }
    // A `{type: "null"}` member of a union.
    for key in ["anyOf", "oneOf"] {
        if let Some(Json::Array(list)) = obj.get(key).cloned()
            && list.iter().any(is_null_schema)
        {
            let rest: Vec<Json> = list.into_iter().filter(|s| !is_null_schema(s)).collect();
            obj.insert("nullable".into(), Json::Bool(true));
            if rest.len() == 1 {
                obj.remove(key);
                match rest.into_iter().next() {
                    // An inline schema: its keywords join the nullable one.
                    Some(Json::Object(inline)) if !inline.contains_key("$ref") => {
                        for (k, v) in inline {
                            obj.entry(k).or_insert(v);
                        }
                    }
                    Some(member) => {
                        obj.insert("allOf".into(), Json::Array(vec![member]));
                    }
                    None => {}
                }
            } else {
                obj.insert(key.into(), Json::Array(rest));
            }
        }
    }
    // Draft 4's `required` has at least one name.
    if obj
        .get("required")
        .and_then(Json::as_array)
        .is_some_and(Vec::is_empty)
    {
        obj.remove("required");
    }
    if let Some(v) = obj.remove("const") {
        obj.insert("enum".into(), Json::Array(vec![v]));
    }
    if let Some(Json::Array(examples)) = obj.remove("examples")
        && let Some(first) = examples.into_iter().next()
    {
        obj.insert("example".into(), first);
    }
    for (exclusive, bound) in [
        ("exclusiveMinimum", "minimum"),
        ("exclusiveMaximum", "maximum"),
    ] {
        if let Some(n) = obj.get(exclusive).filter(|v| v.is_number()).cloned() {
            obj.insert(bound.into(), n);
            obj.insert(exclusive.into(), Json::Bool(true));
        }
    }
    if obj.contains_key("$ref") && obj.len() > 1 {
        let reference = obj.remove("$ref").expect("checked");
        let mut target = Map::new();
        target.insert("$ref".into(), reference);
        let all_of = obj
            .entry("allOf")
            .or_insert_with(|| Json::Array(Vec::new()));
        if let Some(list) = all_of.as_array_mut() {
            list.insert(0, Json::Object(target));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_31_form_has_its_30_rendering() {
        let mut s = json!({
            "type": "object",
            "properties": {
                "a": { "type": ["integer", "null"], "format": "int64" },
                "b": { "const": "create" },
                "c": { "anyOf": [{ "$ref": "#/components/schemas/X" }, { "type": "null" }] },
                "d": { "$ref": "#/components/schemas/Y", "description": "why" },
                "e": { "type": "string", "examples": ["one", "two"] },
                "f": { "type": "integer", "exclusiveMinimum": 0 },
                "g": { "anyOf": [{ "type": "string" }, { "type": "null" }] },
                "h": { "type": "object", "required": [] }
            }
        });
        schema_3_0(&mut s);
        let p = &s["properties"];
        assert_eq!(
            p["a"],
            json!({ "type": "integer", "format": "int64", "nullable": true })
        );
        assert_eq!(p["b"], json!({ "enum": ["create"] }));
        assert_eq!(
            p["c"],
            json!({ "allOf": [{ "$ref": "#/components/schemas/X" }], "nullable": true })
        );
        assert_eq!(
            p["d"],
            json!({ "allOf": [{ "$ref": "#/components/schemas/Y" }], "description": "why" })
        );
        assert_eq!(p["e"], json!({ "type": "string", "example": "one" }));
        assert_eq!(
            p["f"],
            json!({ "type": "integer", "minimum": 0, "exclusiveMinimum": true })
        );
        assert_eq!(p["g"], json!({ "type": "string", "nullable": true }));
        assert_eq!(p["h"], json!({ "type": "object" }));
    }
}
