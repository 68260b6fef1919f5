//! The generated OpenAPI document and JSON Schemas: every `$ref` resolves, every example
//! validates against its schema, and the committed `schemas/` folder is what the code
//! generates (regenerate with `SYNCGEN_UPDATE_SCHEMAS=1 cargo test -p sync-cli --test contract`).

use serde_json::{Value as Json, json};

fn example_model() -> sync_model::Model {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    sync_cli::load(&[root.join("examples/tasks/src/model.rs")])
        .unwrap()
        .model
}

fn walk<'a>(v: &'a Json, path: &mut Vec<String>, out: &mut Vec<(String, &'a Json)>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                path.push(k.clone());
                out.push((path.join("/"), x));
                walk(x, path, out);
                path.pop();
            }
        }
        Json::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(i.to_string());
                walk(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[test]
fn every_ref_resolves() {
    let doc = sync_cli::openapi::openapi(&example_model(), "t");
    let mut nodes = Vec::new();
    walk(&doc, &mut Vec::new(), &mut nodes);
    let mut refs = 0;
    for (path, v) in nodes {
        if path.ends_with("$ref") {
            let target = v.as_str().unwrap();
            let pointer = target
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("external ref {target} at {path}"));
            assert!(
                doc.pointer(pointer).is_some(),
                "{target} at {path} does not resolve"
            );
            refs += 1;
        }
    }
    assert!(refs > 30, "{refs} refs");
}

/// A validator for `schema` with the document's components available to `$ref`s.
fn validator(doc: &Json, schema: &Json) -> jsonschema::Validator {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema]
    });
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{e}: {schema}"))
}

#[test]
fn every_example_validates_against_its_schema() {
    let doc = sync_cli::openapi::openapi(&example_model(), "t");
    let mut nodes = Vec::new();
    walk(&doc, &mut Vec::new(), &mut nodes);
    let mut checked = 0;
    for (path, v) in &nodes {
        // A media type object: {schema, example}.
        if let (Some(schema), Some(example)) = (v.get("schema"), v.get("example")) {
            let val = validator(&doc, schema);
            let errors: Vec<String> = val.iter_errors(example).map(|e| e.to_string()).collect();
            assert!(
                errors.is_empty(),
                "example at {path} does not validate: {errors:?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "{checked} examples");
    // And invalid data is caught (the validator is really on).
    let bad = json!({ "mutations": [{ "entity_type": "task" }] });
    assert!(
        !validator(&doc, &json!({ "$ref": "#/components/schemas/PushRequest" })).is_valid(&bad)
    );
}

#[test]
fn patch_schemas_follow_the_merge_strategies() {
    let doc = sync_cli::openapi::openapi(&example_model(), "t");
    let patch = &doc["components"]["schemas"]["TaskPatch"]["properties"];
    assert_eq!(patch["likes"]["required"], json!(["add"]));
    assert_eq!(patch["title"]["required"], json!(["set", "hlc"]));
    assert_eq!(patch["price_cents"]["required"], json!(["set", "base"]));
    assert!(patch["tags"]["properties"]["remove"].is_object());
    assert!(patch.get("id").is_none() && patch.get("draft").is_none());
    assert!(
        doc["components"]["schemas"]["ProjectPatch"]["properties"]
            .get("created_at")
            .is_none(),
        "immutable"
    );
    let record = &doc["components"]["schemas"]["TaskRecord"];
    assert_eq!(
        record["properties"]["title"]["description"],
        "What to do; the last edit wins."
    );
    assert_eq!(record["description"], "Something to do.");
    assert_eq!(
        doc["info"]["x-syncgen-fingerprint"],
        sync_model::fingerprint(&example_model()).0
    );
}

#[test]
fn the_committed_schemas_are_up_to_date() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas");
    let mut expected: Vec<(std::path::PathBuf, String)> = sync_cli::openapi::protocol_schemas()
        .into_iter()
        .map(|(name, s)| {
            (
                root.join("protocol").join(name),
                serde_json::to_string_pretty(&s).unwrap() + "\n",
            )
        })
        .collect();
    let bundle = sync_cli::openapi::model_schema_bundle(&example_model());
    expected.push((
        root.join("tasks.schema.json"),
        serde_json::to_string_pretty(&bundle).unwrap() + "\n",
    ));
    if std::env::var_os("SYNCGEN_UPDATE_SCHEMAS").is_some() {
        for (path, text) in &expected {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }
    for (path, text) in &expected {
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == *text,
            "{} is stale; regenerate with `SYNCGEN_UPDATE_SCHEMAS=1 cargo test -p sync-cli --test contract`",
            path.display()
        );
        // Each is a valid JSON Schema.
        jsonschema::validator_for(&serde_json::from_str::<Json>(text).unwrap()).unwrap();
    }
}

/// The document's operation schemas list the members the server checks
/// (`sync_runtime::ops::op_members`), required ones as required.
#[test]
fn op_schemas_have_the_members_the_server_checks() {
    let model = example_model();
    let doc = sync_cli::openapi::openapi(&model, "t");
    let mut checked = 0;
    for e in &model.entities {
        let patch = &doc["components"]["schemas"][format!("{}Patch", e.rust_name)];
        for f in e.synced_fields().filter(|f| !f.id && !f.immutable) {
            let op = &patch["properties"][&f.name];
            let mut props: Vec<&str> = op["properties"]
                .as_object()
                .unwrap_or_else(|| panic!("{}.{}: {op:#}", e.name, f.name))
                .keys()
                .map(String::as_str)
                .collect();
            let mut required: Vec<&str> = op["required"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Json::as_str)
                .collect();
            let members = sync_runtime::ops::op_members(f.merge);
            let mut want: Vec<&str> = members.iter().map(|(m, _)| *m).collect();
            let mut want_required: Vec<&str> = members
                .iter()
                .filter(|(_, r)| *r)
                .map(|(m, _)| *m)
                .collect();
            for v in [&mut props, &mut required, &mut want, &mut want_required] {
                v.sort_unstable();
            }
            assert_eq!(props, want, "{}.{}", e.name, f.name);
            assert_eq!(required, want_required, "{}.{}", e.name, f.name);
            assert_eq!(op["additionalProperties"], false);
            checked += 1;
        }
    }
    assert!(
        checked >= 4,
        "the example model has a field of every strategy"
    );
}

/// The OpenAPI 3.0.3 rendering loads with the `openapiv3` crate (what progenitor reads),
/// keeps every path, operation and component, and says 3.0.3.
#[test]
fn the_3_0_rendering_loads_with_openapiv3() {
    let doc = sync_cli::openapi::openapi(&example_model(), "t");
    let v3_0 = sync_cli::openapi::openapi_3_0(&doc);
    let text = serde_json::to_string(&v3_0).unwrap();
    let parsed: openapiv3::OpenAPI = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("openapiv3 cannot load the 3.0 rendering: {e}"));
    assert_eq!(parsed.openapi, "3.0.3");
    assert_eq!(
        parsed.paths.paths.len(),
        doc["paths"].as_object().unwrap().len()
    );
    let components = parsed.components.expect("components");
    assert_eq!(
        components.schemas.len(),
        doc["components"]["schemas"].as_object().unwrap().len()
    );
    // Nothing of 3.1 is left.
    assert!(!text.contains("\"const\""), "const");
    assert!(!text.contains("\"null\""), "a null type");
    assert!(!text.contains("jsonSchemaDialect"));
    // The committed example is this rendering.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let committed: Json = serde_json::from_str(
        &std::fs::read_to_string(root.join("examples/tasks/generated/openapi-3.0.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(committed["openapi"], "3.0.3");
}

/// Issue "For backend teams": the model's per-field facts are in the document, so
/// another language's server can be driven by it. The model is rebuilt from the
/// committed 3.1 and 3.0.3 documents alone and must equal the source's.
#[test]
fn the_documents_carry_the_models_field_metadata() {
    let model = example_model();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for file in ["openapi.json", "openapi-3.0.json"] {
        let doc: Json = serde_json::from_str(
            &std::fs::read_to_string(root.join("examples/tasks/generated").join(file)).unwrap(),
        )
        .unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let records: Vec<&Json> = schemas
            .values()
            .filter(|s| s.get("x-syncgen-entity").is_some())
            .collect();
        assert_eq!(records.len(), model.entities.len(), "{file}");
        for e in &model.entities {
            let record = records
                .iter()
                .find(|r| r["x-syncgen-entity"] == e.name.as_str())
                .unwrap_or_else(|| panic!("{file}: no record schema for {}", e.name));
            assert_eq!(record["x-syncgen-table"], e.table.as_str());
            let props = record["properties"].as_object().unwrap();
            assert_eq!(props.len(), e.synced_fields().count(), "{file} {}", e.name);
            for f in e.synced_fields() {
                let p = &props[&f.name];
                let at = format!("{file} {}.{}", e.name, f.name);
                assert_eq!(p["x-syncgen-merge"], f.merge.as_str(), "{at}");
                assert_eq!(p["x-syncgen-column"], f.column.as_str(), "{at}");
                assert_eq!(p["x-syncgen-immutable"], f.immutable || f.id, "{at}");
                assert_eq!(p.get("x-syncgen-id").is_some(), f.id, "{at}");
                assert_eq!(
                    p.get("x-syncgen-references").and_then(Json::as_str),
                    f.references.as_deref(),
                    "{at}"
                );
                assert_eq!(p.get("x-syncgen-default"), f.default.as_ref(), "{at}");
            }
        }
    }
}
