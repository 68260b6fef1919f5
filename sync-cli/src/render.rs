//! Rendering steps as SQL, one target (client SQLite, or a server dialect) at a time.
//!
//! Quoting and type mapping happen here, in Rust, once per dialect; the askama templates
//! in `templates/` only lay out what this module computed.

use askama::Template;
use sync_model::sql::meta;
use sync_model::sql::{Dialect, column_type, scalar_type};
use sync_model::{Entity, Field, FieldType, ScalarType, TypeKind};

use crate::plan::Step;
use sync_runtime::migrations::{WIRE_CHANGE_PREFIX, WireChange};

/// Where a migration is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The app's local SQLite database.
    Client,
    /// A server database.
    Server(Dialect),
}

impl Target {
    /// Every target, in output order.
    pub const ALL: [Target; 4] = [
        Target::Client,
        Target::Server(Dialect::Sqlite),
        Target::Server(Dialect::Postgres),
        Target::Server(Dialect::Mysql),
    ];

    /// The SQL dialect.
    pub fn dialect(self) -> Dialect {
        match self {
            Target::Client => Dialect::Sqlite,
            Target::Server(d) => d,
        }
    }

    /// The folder under `migrations/`.
    pub fn folder(self) -> String {
        match self {
            Target::Client => "client/sqlite".to_string(),
            Target::Server(d) => format!("server/{}", d.as_str()),
        }
    }

    fn label(self) -> String {
        match self {
            Target::Client => "the client (SQLite)".to_string(),
            Target::Server(Dialect::Sqlite) => "the server (SQLite)".to_string(),
            Target::Server(Dialect::Postgres) => "the server (PostgreSQL)".to_string(),
            Target::Server(Dialect::Mysql) => "the server (MySQL/MariaDB)".to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "migration.sql", escape = "none")]
struct MigrationTemplate<'a> {
    direction: &'a str,
    version: u32,
    name: &'a str,
    target: String,
    fingerprint: &'a str,
    description: Vec<String>,
    /// `-- Wire change: {json}` lines (up migrations after the first only).
    wire_changes: Vec<String>,
    statements: Vec<String>,
}

#[derive(Template)]
#[template(path = "create_table.sql", escape = "none")]
struct CreateTableTemplate {
    table: String,
    columns: Vec<String>,
}

/// A migration to render.
pub struct Migration<'a> {
    /// Its number.
    pub version: u32,
    /// Its name (the file name after the number).
    pub name: &'a str,
    /// The fingerprint of the model after it.
    pub fingerprint: &'a str,
    /// `true` for the first migration, which also creates syncgen's own tables.
    pub initial: bool,
    /// What it changes.
    pub steps: &'a [Step],
}

/// The rendered up and (when the migration is reversible) down SQL for one target.
///
/// # Errors
/// An [`askama::Error`] if a template fails to render. The templates only lay out
/// strings and numbers, so this does not happen in practice.
pub fn render(
    m: &Migration<'_>,
    target: Target,
) -> Result<(String, Option<String>), askama::Error> {
    let r = Renderer {
        target,
        d: target.dialect(),
    };
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut reversible = true;
    if m.initial {
        up.extend(r.toolkit_tables()?);
    }
    for step in m.steps {
        up.extend(r.up(step)?);
        match r.down(step)? {
            Some(stmts) => down.push(stmts),
            None => reversible = false,
        }
    }
    up.extend(r.refetch_marker(m));
    up.push(format!(
        "INSERT INTO {} ({}, {}, {}) VALUES ({}, {}, {})",
        r.q(meta::MIGRATIONS),
        r.q("version"),
        r.q("name"),
        r.q("fingerprint"),
        m.version,
        r.string(m.name),
        r.string(m.fingerprint)
    ));
    let mut description: Vec<String> = m.steps.iter().map(Step::describe).collect();
    if m.initial {
        description.insert(0, "create syncgen's tables".to_string());
    }
    let wire_changes = if m.initial {
        Vec::new()
    } else {
        m.steps
            .iter()
            .filter_map(wire_change)
            .map(|c| {
                format!(
                    "{WIRE_CHANGE_PREFIX}{}",
                    serde_json::to_string(&c).expect("wire changes serialise")
                )
            })
            .collect()
    };
    let up_sql = MigrationTemplate {
        direction: "Up",
        version: m.version,
        name: m.name,
        target: target.label(),
        fingerprint: m.fingerprint,
        description: description.clone(),
        wire_changes,
        statements: up,
    }
    .render()?;
    if !reversible {
        return Ok((up_sql, None));
    }
    let mut down_statements: Vec<String> = down.into_iter().rev().flatten().collect();
    if m.initial {
        down_statements.extend(r.drop_toolkit_tables());
    } else {
        down_statements.push(format!(
            "DELETE FROM {} WHERE {} = {}",
            r.q(meta::MIGRATIONS),
            r.q("version"),
            m.version
        ));
    }
    let down_sql = MigrationTemplate {
        direction: "Down",
        version: m.version,
        name: m.name,
        target: target.label(),
        fingerprint: m.fingerprint,
        description,
        wire_changes: Vec::new(),
        statements: down_statements,
    }
    .render()?;
    Ok((up_sql, Some(down_sql)))
}

struct Renderer {
    target: Target,
    d: Dialect,
}

/// An index name that fits every database's identifier limit.
fn index_name(table: &str, suffix: &str) -> String {
    let name = format!("{table}_{suffix}_idx");
    if name.len() <= sync_model::MAX_IDENT_LEN {
        return name;
    }
    // Deterministic shortening: keep a prefix and add a short hash of the full name.
    let mut h: u32 = 2166136261;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    format!("{}_{h:08x}_idx", &name[..sync_model::MAX_IDENT_LEN - 13])
}

impl Renderer {
    fn q(&self, ident: &str) -> String {
        self.d.quote(ident)
    }

    fn string(&self, s: &str) -> String {
        self.d.string_literal(s)
    }

    fn big(&self) -> &'static str {
        self.d.big_int_type()
    }

    fn key_text(&self) -> &'static str {
        self.d.key_text_type()
    }

    fn long_text(&self) -> &'static str {
        scalar_type(ScalarType::String, self.d)
    }

    fn timestamp(&self) -> &'static str {
        scalar_type(ScalarType::Timestamp, self.d)
    }

    fn boolean(&self) -> &'static str {
        scalar_type(ScalarType::Bool, self.d)
    }

    fn json(&self) -> &'static str {
        self.d.json_type()
    }

    fn false_lit(&self) -> &'static str {
        self.d.bool_literal(false)
    }

    fn create_table(&self, table: &str, columns: Vec<String>) -> Result<String, askama::Error> {
        CreateTableTemplate {
            table: self.q(table),
            columns,
        }
        .render()
    }

    fn create_index(&self, table: &str, name_suffix: &str, columns: &[&str]) -> String {
        let cols: Vec<String> = columns.iter().map(|c| self.q(c)).collect();
        format!(
            "CREATE INDEX {} ON {} ({})",
            self.q(&index_name(table, name_suffix)),
            self.q(table),
            cols.join(", ")
        )
    }

    fn drop_index(&self, table: &str, name_suffix: &str) -> String {
        self.d.drop_index(&index_name(table, name_suffix), table)
    }

    fn column(&self, name: &str, ty: &str, constraints: &str) -> String {
        let mut out = self.q(name);
        out.reserve(ty.len() + constraints.len() + 2);
        out.push(' ');
        out.push_str(ty);
        if !constraints.is_empty() {
            out.push(' ');
            out.push_str(constraints);
        }
        out
    }

    /// `DEFAULT ...` for a field, if it has one (sets default to empty).
    fn default_clause(&self, f: &Field) -> Option<String> {
        let literal = match (&f.ty.kind, &f.default) {
            (TypeKind::Set { .. }, _) => self.string("[]"),
            (_, None) => return None,
            (TypeKind::Json { .. }, Some(v)) => {
                let text = match v {
                    // A string default of a json field is JSON text (`default = "{}"`).
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                self.string(&text)
            }
            (TypeKind::Scalar { scalar }, Some(v)) => self.scalar_literal(*scalar, v),
        };
        Some(self.d.default_clause(column_type(&f.ty, self.d), &literal))
    }

    fn scalar_literal(&self, scalar: ScalarType, v: &serde_json::Value) -> String {
        match (scalar, v) {
            (ScalarType::Bool, serde_json::Value::Bool(b)) => self.d.bool_literal(*b).into(),
            (ScalarType::Timestamp, serde_json::Value::String(s)) => {
                match sync_runtime::time::canonical(s) {
                    Some(t) => self.string(&self.d.timestamp_text(&t)),
                    None => self.string(s),
                }
            }
            (_, serde_json::Value::String(s)) => self.string(s),
            (_, other) => other.to_string(),
        }
    }

    /// The column definition of a model field.
    fn field_column(&self, f: &Field, with_default: bool) -> String {
        // `column` with the constraints joined by spaces, built in place.
        let mut out = self.column(&f.column, column_type(&f.ty, self.d), "");
        if !f.ty.nullable {
            out.push_str(" NOT NULL");
        }
        if with_default && let Some(d) = self.default_clause(f) {
            out.push(' ');
            out.push_str(&d);
        }
        out
    }

    fn id_column(&self, e: &Entity) -> String {
        let id = e.id_field();
        match self.target {
            Target::Client => self.column(
                &id.column,
                column_type(&id.ty, self.d),
                "NOT NULL PRIMARY KEY",
            ),
            Target::Server(_) => self.column(&id.column, column_type(&id.ty, self.d), "NOT NULL"),
        }
    }

    fn data_columns(&self, e: &Entity) -> Vec<String> {
        e.synced_fields()
            .filter(|f| !f.id)
            .map(|f| self.field_column(f, true))
            .collect()
    }

    fn base_table(e: &Entity) -> String {
        meta::base_table(&e.table)
    }

    fn entity_tables(&self, e: &Entity) -> Result<Vec<String>, askama::Error> {
        let mut out = Vec::new();
        match self.target {
            Target::Client => {
                let data = self.data_columns(e);
                let mut cols = vec![self.id_column(e)];
                cols.extend(data.iter().cloned());
                cols.extend([
                    self.column(meta::CLOCKS, "TEXT", "NOT NULL DEFAULT '{}'"),
                    self.column(meta::UPDATED_AT, "TEXT", "NOT NULL"),
                    self.column(meta::SERVER_UPDATED_AT, "TEXT", ""),
                    self.column(meta::VERSION, "INTEGER", ""),
                    self.column(
                        meta::STATUS,
                        "TEXT",
                        &format!(
                            "NOT NULL DEFAULT 'pending' CHECK (\"{}\" IN ('clean', 'pending', 'syncing', 'failed', 'conflicted'))",
                            meta::STATUS
                        ),
                    ),
                    self.column(meta::DELETED, "INTEGER", "NOT NULL DEFAULT 0"),
                ]);
                out.push(self.create_table(&e.table, cols)?);
                out.push(self.create_index(&e.table, meta::STATUS, &[meta::STATUS]));
                let mut base = vec![self.id_column(e)];
                base.extend(data);
                base.extend([
                    self.column(meta::CLOCKS, "TEXT", "NOT NULL DEFAULT '{}'"),
                    self.column(meta::VERSION, "INTEGER", "NOT NULL"),
                    self.column(meta::SERVER_UPDATED_AT, "TEXT", ""),
                    self.column(meta::DELETED, "INTEGER", "NOT NULL DEFAULT 0"),
                ]);
                out.push(self.create_table(&Self::base_table(e), base)?);
            }
            Target::Server(_) => {
                let mut cols = vec![
                    self.column(meta::ACCOUNT, self.key_text(), "NOT NULL"),
                    self.id_column(e),
                ];
                cols.extend(self.data_columns(e));
                cols.extend([
                    self.column(meta::CLOCKS, self.json(), "NOT NULL"),
                    self.column(meta::VERSION, self.big(), "NOT NULL"),
                    self.column(meta::SEQ, self.big(), "NOT NULL"),
                    self.column(meta::SERVER_UPDATED_AT, self.timestamp(), "NOT NULL"),
                    self.column(
                        meta::DELETED,
                        self.boolean(),
                        &format!("NOT NULL DEFAULT {}", self.false_lit()),
                    ),
                    format!(
                        "PRIMARY KEY ({}, {})",
                        self.q(meta::ACCOUNT),
                        self.q(&e.id_field().column)
                    ),
                ]);
                out.push(self.create_table(&e.table, cols)?);
                out.push(self.create_index(&e.table, meta::SEQ, &[meta::ACCOUNT, meta::SEQ]));
            }
        }
        for f in e.synced_fields().filter(|f| f.references.is_some()) {
            out.push(self.reference_index(e, f));
        }
        Ok(out)
    }

    fn reference_index(&self, e: &Entity, f: &Field) -> String {
        match self.target {
            Target::Client => self.create_index(&e.table, &f.column, &[&f.column]),
            Target::Server(_) => {
                self.create_index(&e.table, &f.column, &[meta::ACCOUNT, &f.column])
            }
        }
    }

    fn tables_of(&self, e: &Entity) -> Vec<String> {
        match self.target {
            Target::Client => vec![e.table.clone(), Self::base_table(e)],
            Target::Server(_) => vec![e.table.clone()],
        }
    }

    fn toolkit_tables(&self) -> Result<Vec<String>, askama::Error> {
        let mut out = vec![self.create_table(
            meta::MIGRATIONS,
            vec![
                self.column("version", "INTEGER", "NOT NULL PRIMARY KEY"),
                self.column("name", self.key_text(), "NOT NULL"),
                self.column("fingerprint", self.key_text(), "NOT NULL"),
            ],
        )?];
        match self.target {
            Target::Client => {
                out.push(self.create_table(
                    meta::OUTBOX,
                    vec![
                        self.column("id", "INTEGER", "PRIMARY KEY AUTOINCREMENT"),
                        self.column("entity_type", "TEXT", "NOT NULL"),
                        self.column("entity_id", "TEXT", "NOT NULL"),
                        self.column("op", "TEXT", "NOT NULL CHECK (\"op\" IN ('create', 'update', 'delete'))"),
                        self.column("payload", "TEXT", "NOT NULL"),
                        self.column("idempotency_key", "TEXT", "NOT NULL UNIQUE"),
                        self.column("base_version", "INTEGER", ""),
                        self.column("created_at", "TEXT", "NOT NULL"),
                        self.column("attempt_count", "INTEGER", "NOT NULL DEFAULT 0"),
                        self.column("next_attempt_at", "TEXT", ""),
                        self.column(
                            "status",
                            "TEXT",
                            "NOT NULL DEFAULT 'pending' CHECK (\"status\" IN ('pending', 'sending', 'failed', 'dead'))",
                        ),
                        self.column("last_error", "TEXT", ""),
                    ],
                )?);
                out.push(self.create_index(meta::OUTBOX, "entity", &["entity_type", "entity_id"]));
                out.push(self.create_index(meta::OUTBOX, "status", &["status", "next_attempt_at"]));
                out.push(self.create_table(
                    meta::STATE,
                    vec![
                        self.column("scope", "TEXT", "NOT NULL PRIMARY KEY"),
                        self.column("change_token", "TEXT", ""),
                        self.column("snapshot_cursor", "TEXT", ""),
                        self.column("snapshot_token", "TEXT", ""),
                        self.column("last_sync_at", "TEXT", ""),
                        self.column("last_error", "TEXT", ""),
                    ],
                )?);
                out.push(self.create_table(
                    meta::META,
                    vec![
                        self.column("key", "TEXT", "NOT NULL PRIMARY KEY"),
                        self.column("value", "TEXT", "NOT NULL"),
                    ],
                )?);
                out.push(self.create_table(
                    meta::CONFLICTS,
                    vec![
                        self.column("entity_type", "TEXT", "NOT NULL"),
                        self.column("entity_id", "TEXT", "NOT NULL"),
                        self.column("field", "TEXT", "NOT NULL"),
                        self.column("base", "TEXT", "NOT NULL"),
                        self.column("local", "TEXT", "NOT NULL"),
                        self.column("remote", "TEXT", "NOT NULL"),
                        self.column("remote_version", "INTEGER", ""),
                        self.column("detected_at", "TEXT", "NOT NULL"),
                        format!(
                            "PRIMARY KEY ({}, {}, {})",
                            self.q("entity_type"),
                            self.q("entity_id"),
                            self.q("field")
                        ),
                    ],
                )?);
            }
            Target::Server(_) => {
                let uuid = scalar_type(ScalarType::Uuid, self.d);
                out.push(self.create_table(
                    meta::ACCOUNTS,
                    vec![
                        self.column(meta::ACCOUNT, self.key_text(), "NOT NULL PRIMARY KEY"),
                        self.column("last_seq", self.big(), "NOT NULL DEFAULT 0"),
                        self.column("horizon_seq", self.big(), "NOT NULL DEFAULT 0"),
                    ],
                )?);
                out.push(self.create_table(
                    meta::CHANGES,
                    vec![
                        self.column(meta::ACCOUNT, self.key_text(), "NOT NULL"),
                        self.column("seq", self.big(), "NOT NULL"),
                        self.column("entity_type", self.key_text(), "NOT NULL"),
                        self.column("entity_id", uuid, "NOT NULL"),
                        self.column("version", self.big(), "NOT NULL"),
                        self.column("deleted", self.boolean(), "NOT NULL"),
                        self.column("committed_at", self.timestamp(), "NOT NULL"),
                        format!("PRIMARY KEY ({}, {})", self.q(meta::ACCOUNT), self.q("seq")),
                    ],
                )?);
                out.push(self.create_index(
                    meta::CHANGES,
                    "entity",
                    &[meta::ACCOUNT, "entity_type", "entity_id"],
                ));
                out.push(self.create_table(
                    meta::IDEMPOTENCY,
                    vec![
                        self.column(meta::ACCOUNT, self.key_text(), "NOT NULL"),
                        self.column("idempotency_key", self.key_text(), "NOT NULL"),
                        self.column("request_hash", self.key_text(), "NOT NULL"),
                        self.column("state", self.key_text(), "NOT NULL"),
                        self.column("response_status", "INTEGER", ""),
                        self.column("response_body", self.long_text(), ""),
                        self.column("created_at", self.timestamp(), "NOT NULL"),
                        self.column("expires_at", self.timestamp(), "NOT NULL"),
                        format!(
                            "PRIMARY KEY ({}, {})",
                            self.q(meta::ACCOUNT),
                            self.q("idempotency_key")
                        ),
                    ],
                )?);
                out.push(self.create_index(meta::IDEMPOTENCY, "expiry", &["expires_at"]));
            }
        }
        Ok(out)
    }

    fn drop_toolkit_tables(&self) -> Vec<String> {
        let tables: &[&str] = match self.target {
            Target::Client => &[
                meta::CONFLICTS,
                meta::META,
                meta::STATE,
                meta::OUTBOX,
                meta::MIGRATIONS,
            ],
            Target::Server(_) => &[
                meta::IDEMPOTENCY,
                meta::CHANGES,
                meta::ACCOUNTS,
                meta::MIGRATIONS,
            ],
        };
        tables
            .iter()
            .map(|t| format!("DROP TABLE {}", self.q(t)))
            .collect()
    }

    /// An entity's tables renamed (their indexes dropped and created again under the
    /// new table's name, since index names carry it) and, when its wire name changed,
    /// what names it in flight: the client's outbox items, conflict rows and restart
    /// notes, the server's change log.
    fn rename_entity(&self, from: &Entity, to: &Entity) -> Vec<String> {
        let mut out = Vec::new();
        if from.table != to.table {
            out.extend(
                self.secondary_indexes(from)
                    .into_iter()
                    .map(|(table, suffix, _)| self.drop_index(&table, &suffix)),
            );
            for (a, b) in self.tables_of(from).iter().zip(self.tables_of(to)) {
                out.push(format!(
                    "ALTER TABLE {} RENAME TO {}",
                    self.q(a),
                    self.q(&b)
                ));
            }
            let moved = Entity {
                table: to.table.clone(),
                ..from.clone()
            };
            out.extend(self.secondary_indexes(&moved).into_iter().map(
                |(table, suffix, columns)| {
                    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
                    self.create_index(&table, &suffix, &columns)
                },
            ));
        }
        if from.name == to.name {
            return out;
        }
        let (old, new) = (self.string(&from.name), self.string(&to.name));
        let retype = |table: &str| {
            format!(
                "UPDATE {} SET {c} = {new} WHERE {c} = {old}",
                self.q(table),
                c = self.q("entity_type")
            )
        };
        match self.target {
            Target::Client => {
                out.push(retype(meta::OUTBOX));
                out.push(retype(meta::CONFLICTS));
                // Restart notes: `own-write:<entity>:<id>` keys, and `resnapshot-held:`
                // lists of `[entity, id]` pairs (see the store's `restart.rs`); and the
                // records' dots as the server gave them, `dots:<entity>:<id>` (`push.rs`).
                let (key, value) = (self.q("key"), self.q("value"));
                for note in ["own-write", "dots"] {
                    let prefix = |e: &str| format!("{note}:{e}:");
                    out.push(format!(
                        "UPDATE {} SET {key} = {} || substr({key}, {}) WHERE substr({key}, 1, {}) = {}",
                        self.q(meta::META),
                        self.string(&prefix(&to.name)),
                        prefix(&from.name).len() + 1,
                        prefix(&from.name).len(),
                        self.string(&prefix(&from.name)),
                    ));
                }
                out.push(format!(
                    "UPDATE {m} SET {value} = (SELECT json_group_array(CASE WHEN j.value ->> '$[0]' = {old} THEN json_array({new}, j.value ->> '$[1]') ELSE json(j.value) END) FROM json_each({m}.{value}) AS j) WHERE substr({key}, 1, 16) = 'resnapshot-held:'",
                    m = self.q(meta::META),
                ));
                // The entities still to fetch again after an earlier migration.
                out.push(format!(
                    "UPDATE {m} SET {value} = (SELECT json_group_array(CASE WHEN j.value = {old} THEN {new} ELSE j.value END) FROM json_each({m}.{value}) AS j) WHERE {key} = {}",
                    self.string(meta::REFETCH_KEY),
                    m = self.q(meta::META),
                ));
            }
            Target::Server(_) => out.push(retype(meta::CHANGES)),
        }
        out
    }

    /// `(table, index suffix, columns)` of an entity's indexes other than its primary
    /// key, as [`Renderer::entity_tables`] creates them.
    fn secondary_indexes(&self, e: &Entity) -> Vec<(String, String, Vec<String>)> {
        let mut out = vec![match self.target {
            Target::Client => (
                e.table.clone(),
                meta::STATUS.to_string(),
                vec![meta::STATUS.to_string()],
            ),
            Target::Server(_) => (
                e.table.clone(),
                meta::SEQ.to_string(),
                vec![meta::ACCOUNT.to_string(), meta::SEQ.to_string()],
            ),
        }];
        for f in e.synced_fields().filter(|f| f.references.is_some()) {
            let columns = match self.target {
                Target::Client => vec![f.column.clone()],
                Target::Server(_) => vec![meta::ACCOUNT.to_string(), f.column.clone()],
            };
            out.push((e.table.clone(), f.column.clone(), columns));
        }
        out
    }

    /// Server migrations only: the per-field clocks each row keeps (its `sync_clocks`
    /// JSON, keyed by wire name) follow a field renamed on the wire, so that `lww`
    /// compares a later stamp with the field's own, not with none.
    fn rename_server_clocks(&self, e: &Entity, from: &str, to: &str) -> Vec<String> {
        if from == to || self.target == Target::Client {
            return Vec::new();
        }
        let (t, c) = (self.q(&e.table), self.q(meta::CLOCKS));
        let (from_path, to_path) = (self.json_path("$", from), self.json_path("$", to));
        vec![match self.d {
            Dialect::Sqlite => format!(
                "UPDATE {t} SET {c} = json_set(json_remove({c}, {from_path}), {to_path}, json({c} -> {from_path})) WHERE json_type({c}, {from_path}) IS NOT NULL"
            ),
            Dialect::Postgres => format!(
                "UPDATE {t} SET {c} = ({c} - {f}) || jsonb_build_object({n}, {c} -> {f}) WHERE {c} ? {f}",
                f = self.string(from),
                n = self.string(to),
            ),
            Dialect::Mysql => format!(
                "UPDATE {t} SET {c} = JSON_SET(JSON_REMOVE({c}, {from_path}), {to_path}, JSON_EXTRACT({c}, {from_path})) WHERE JSON_CONTAINS_PATH({c}, 'one', {from_path})"
            ),
        }]
    }

    /// Client migrations only: what the device holds under the old model, brought to the
    /// new one in the same transaction as the schema change, so that nothing valid under
    /// the old model dies because of the upgrade (issue "Upgrades in any order", item 1).
    ///
    /// The data in flight is, per entity: the outbox payloads (a create's `record` and
    /// `clocks`, and its `resend_base` copy of both; an update's `patch`), the per-field
    /// clocks of the row and of its base copy (the base copy's columns follow the row's),
    /// and the conflict rows (one per field). A field renamed on the wire (`renamed_from`)
    /// is renamed in each; an added field gets its default in pending creates (the columns
    /// get it from their `DEFAULT`); a dropped field leaves each (outbox items already
    /// sent excepted: see [`Renderer::drop_in_flight`]), and a record whose only
    /// conflicts were on it is no longer `conflicted`. A rename of the column alone
    /// (`column = ...`) changes nothing in flight: payloads use wire names.
    fn in_flight(&self, step: &Step) -> Vec<String> {
        if self.target != Target::Client {
            return Vec::new();
        }
        match step {
            Step::DropEntity(e) => vec![
                // It is no longer fetched again, and nor is its cursor followed.
                format!(
                    "UPDATE {m} SET {value} = (SELECT json_group_array(j.value) FROM json_each({m}.{value}) AS j WHERE j.value <> {name}) WHERE {key} = {}",
                    self.string(meta::REFETCH_KEY),
                    m = self.q(meta::META),
                    value = self.q("value"),
                    key = self.q("key"),
                    name = self.string(&e.name),
                ),
            ],
            Step::RenameColumn { entity, from, to } if from.name != to.name => {
                self.rename_in_flight(entity, &from.name, &to.name)
            }
            Step::AddField { entity, field } => self.default_in_flight(entity, field),
            Step::DropField { entity, field } => self.drop_in_flight(entity, &field.name),
            _ => Vec::new(),
        }
    }

    /// Client migrations after the first only: when the migration adds fields or
    /// entities, the names of those entities in `sync_meta` (key [`meta::REFETCH_KEY`],
    /// a JSON array, merged with one an earlier migration left unfetched): the device
    /// must fetch their records again. Records pulled before the upgrade hold the new
    /// columns' defaults, and records of a new entity were skipped, while newer devices
    /// may have set them on the server (issue "Upgrades in any order", item 3). The sync
    /// engine fetches each entity's snapshot once its pulls have caught up, keeping and
    /// rebasing pending edits, and removes the names as it goes.
    fn refetch_marker(&self, m: &Migration<'_>) -> Vec<String> {
        let mut entities: Vec<&str> = Vec::new();
        for step in m.steps {
            let name = match step {
                Step::AddField { entity, .. } => entity.name.as_str(),
                Step::CreateEntity(e) => e.name.as_str(),
                _ => continue,
            };
            if !entities.contains(&name) {
                entities.push(name);
            }
        }
        if self.target != Target::Client || m.initial || entities.is_empty() {
            return Vec::new();
        }
        let (key, value) = (self.q("key"), self.q("value"));
        let t = self.q(meta::META);
        vec![
            // A fetch under way (of the model before) starts over, in the new shape.
            format!(
                "DELETE FROM {t} WHERE {key} = {}",
                self.string(meta::REFETCH_CURSOR_KEY)
            ),
            format!(
                "INSERT INTO {t} ({key}, {value}) VALUES ({}, {}) ON CONFLICT ({key}) DO UPDATE SET {value} = (SELECT json_group_array(n) FROM (SELECT j.value AS n FROM json_each({t}.{value}) AS j UNION SELECT j.value FROM json_each(excluded.{value}) AS j))",
                self.string(meta::REFETCH_KEY),
                self.string(&serde_json::to_string(&entities).expect("JSON")),
            ),
        ]
    }

    /// `(table, JSON column, condition, JSON path prefix)` of every place a field's
    /// wire name is a key: `<prefix>."<name>"` in `<column>` of the rows of `<table>`
    /// that meet the condition (`None`: every row).
    fn wire_name_places(
        &self,
        e: &Entity,
    ) -> Vec<(String, &'static str, Option<String>, &'static str)> {
        let op = |op: &str| {
            Some(format!(
                "{} = {} AND {} = '{op}'",
                self.q("entity_type"),
                self.string(&e.name),
                self.q("op")
            ))
        };
        let outbox = meta::OUTBOX.to_string();
        let mut out = vec![
            (outbox.clone(), "payload", op("create"), "$.record"),
            (outbox.clone(), "payload", op("create"), "$.clocks"),
            (
                outbox.clone(),
                "payload",
                op("create"),
                "$.resend_base.record",
            ),
            (
                outbox.clone(),
                "payload",
                op("create"),
                "$.resend_base.clocks",
            ),
            (outbox, "payload", op("update"), "$.patch"),
        ];
        for table in self.tables_of(e) {
            out.push((table, meta::CLOCKS, None, "$"));
        }
        out
    }

    fn json_path(&self, prefix: &str, name: &str) -> String {
        self.string(&format!("{prefix}.\"{name}\""))
    }

    fn rename_in_flight(&self, e: &Entity, from: &str, to: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .wire_name_places(e)
            .into_iter()
            .map(|(table, column, condition, prefix)| {
                let (c, old, new) = (
                    self.q(column),
                    self.json_path(prefix, from),
                    self.json_path(prefix, to),
                );
                format!(
                    "UPDATE {} SET {c} = json_set(json_remove({c}, {old}), {new}, json({c} -> {old})) WHERE {}json_type({c}, {old}) IS NOT NULL",
                    self.q(&table),
                    condition.map(|c| c + " AND ").unwrap_or_default()
                )
            })
            .collect();
        out.push(format!(
            "UPDATE {} SET {} = {} WHERE {} = {} AND {} = {}",
            self.q(meta::CONFLICTS),
            self.q("field"),
            self.string(to),
            self.q("entity_type"),
            self.string(&e.name),
            self.q("field"),
            self.string(from)
        ));
        out
    }

    fn default_in_flight(&self, e: &Entity, f: &Field) -> Vec<String> {
        let Some(value) = wire_default(f) else {
            return Vec::new();
        };
        let value = format!("json({})", self.string(&value.to_string()));
        ["$.record", "$.resend_base.record"]
            .into_iter()
            .map(|record| {
                let c = self.q("payload");
                format!(
                    "UPDATE {} SET {c} = json_set({c}, {}, {value}) WHERE {} = {} AND {} = 'create' AND json_type({c}, {}) = 'object' AND json_type({c}, {}) IS NULL",
                    self.q(meta::OUTBOX),
                    self.json_path(record, &f.name),
                    self.q("entity_type"),
                    self.string(&e.name),
                    self.q("op"),
                    self.string(record),
                    self.json_path(record, &f.name),
                )
            })
            .collect()
    }

    /// A dropped field leaves the payloads of outbox items never sent (the store
    /// composes new edits into them as the new model's patches), the rows' clocks and
    /// the conflict rows. An item already handed to the network keeps its body: its
    /// retry must hash as its first delivery did, and the server leaves out the
    /// members of fields it dropped once the hash is taken (as the store does when it
    /// reads such an item back).
    fn drop_in_flight(&self, e: &Entity, name: &str) -> Vec<String> {
        let unsent = format!(
            "{} = 0 AND {} = 'pending'",
            self.q("attempt_count"),
            self.q("status")
        );
        let mut out: Vec<String> = self
            .wire_name_places(e)
            .into_iter()
            .map(|(table, column, condition, prefix)| {
                let (c, path) = (self.q(column), self.json_path(prefix, name));
                let condition = match condition {
                    Some(c) if table == meta::OUTBOX => format!("{c} AND {unsent} AND "),
                    Some(c) => c + " AND ",
                    None => String::new(),
                };
                format!(
                    "UPDATE {} SET {c} = json_remove({c}, {path}) WHERE {condition}json_type({c}, {path}) IS NOT NULL",
                    self.q(&table),
                )
            })
            .collect();
        let (of_entity, id) = (
            format!("{} = {}", self.q("entity_type"), self.string(&e.name)),
            format!("{}.{}", self.q(&e.table), self.q(&e.id_field().column)),
        );
        out.push(format!(
            "DELETE FROM {} WHERE {of_entity} AND {} = {}",
            self.q(meta::CONFLICTS),
            self.q("field"),
            self.string(name)
        ));
        out.push(format!(
            "UPDATE {table} SET {status} = CASE WHEN EXISTS (SELECT 1 FROM {outbox} WHERE {of_entity} AND {entity_id} = {id}) THEN 'pending' ELSE 'clean' END WHERE {status} = 'conflicted' AND NOT EXISTS (SELECT 1 FROM {conflicts} WHERE {of_entity} AND {entity_id} = {id})",
            table = self.q(&e.table),
            status = self.q(meta::STATUS),
            outbox = self.q(meta::OUTBOX),
            conflicts = self.q(meta::CONFLICTS),
            entity_id = self.q("entity_id"),
        ));
        out
    }

    fn add_column(&self, table: &str, f: &Field) -> String {
        format!(
            "ALTER TABLE {} ADD COLUMN {}",
            self.q(table),
            self.field_column(f, true)
        )
    }

    fn drop_column(&self, e: &Entity, table: &str, f: &Field, main: bool) -> Vec<String> {
        let mut out = Vec::new();
        // SQLite refuses to drop an indexed column; the index goes first everywhere.
        if main && f.references.is_some() {
            out.push(self.drop_index(&e.table, &f.column));
        }
        out.push(format!(
            "ALTER TABLE {} DROP COLUMN {}",
            self.q(table),
            self.q(&f.column)
        ));
        out
    }

    fn rename_column(&self, table: &str, from: &str, to: &str) -> String {
        format!(
            "ALTER TABLE {} RENAME COLUMN {} TO {}",
            self.q(table),
            self.q(from),
            self.q(to)
        )
    }

    fn change_type(&self, table: &str, f: &Field) -> Option<String> {
        self.d.change_column_type(
            table,
            &f.column,
            column_type(&f.ty, self.d),
            &self.field_column(f, true),
        )
    }

    fn up(&self, step: &Step) -> Result<Vec<String>, askama::Error> {
        let mut out = match step {
            Step::CreateEntity(e) => self.entity_tables(e)?,
            Step::DropEntity(e) => self
                .tables_of(e)
                .iter()
                .map(|t| format!("DROP TABLE {}", self.q(t)))
                .collect(),
            Step::RenameEntity { from, to } => self.rename_entity(from, to),
            Step::AddField { entity, field } => {
                let mut out: Vec<String> = self
                    .tables_of(entity)
                    .iter()
                    .map(|t| self.add_column(t, field))
                    .collect();
                if field.references.is_some() {
                    out.push(self.reference_index(entity, field));
                }
                out
            }
            Step::DropField { entity, field } => self
                .tables_of(entity)
                .iter()
                .enumerate()
                .flat_map(|(i, t)| self.drop_column(entity, t, field, i == 0))
                .collect(),
            Step::RenameColumn { entity, from, to } if from.column == to.column => {
                // A rename on the wire alone: the server's clocks follow (the client's
                // in-flight data below).
                self.rename_server_clocks(entity, &from.name, &to.name)
            }
            Step::RenameColumn { entity, from, to } => {
                let mut out: Vec<String> = self
                    .tables_of(entity)
                    .iter()
                    .map(|t| self.rename_column(t, &from.column, &to.column))
                    .collect();
                if from.references.is_some() {
                    out.push(self.drop_index(&entity.table, &from.column));
                }
                if to.references.is_some() {
                    out.push(self.reference_index(entity, to));
                }
                out.extend(self.rename_server_clocks(entity, &from.name, &to.name));
                out
            }
            Step::WidenField { entity, to, .. } => self
                .tables_of(entity)
                .iter()
                .filter_map(|t| self.change_type(t, to))
                .collect(),
            Step::AddIndex { entity, field } => vec![self.reference_index(entity, field)],
            Step::DropIndex { entity, field } => {
                vec![self.drop_index(&entity.table, &field.column)]
            }
            Step::Metadata(_) => Vec::new(),
        };
        out.extend(self.in_flight(step));
        Ok(out)
    }

    /// The statements that undo `step`, or `None` if it cannot be undone.
    fn down(&self, step: &Step) -> Result<Option<Vec<String>>, askama::Error> {
        Ok(Some(match step {
            Step::CreateEntity(e) => self
                .tables_of(e)
                .iter()
                .rev()
                .map(|t| format!("DROP TABLE {}", self.q(t)))
                .collect(),
            Step::DropEntity(e) => self.entity_tables(e)?,
            // By now the field steps are undone: the table holds `from`'s fields.
            Step::RenameEntity { from, to } => self.rename_entity(
                &Entity {
                    name: to.name.clone(),
                    table: to.table.clone(),
                    ..from.clone()
                },
                from,
            ),
            Step::AddField { entity, field } => self
                .tables_of(entity)
                .iter()
                .enumerate()
                .flat_map(|(i, t)| self.drop_column(entity, t, field, i == 0))
                .chain(self.in_flight(&Step::DropField {
                    entity: entity.clone(),
                    field: field.clone(),
                }))
                .collect(),
            Step::DropField { entity, field } => {
                let restorable = field.ty.nullable
                    || field.default.is_some()
                    || matches!(field.ty.kind, TypeKind::Set { .. });
                if !restorable {
                    return Ok(None);
                }
                self.up(&Step::AddField {
                    entity: entity.clone(),
                    field: field.clone(),
                })?
            }
            Step::RenameColumn { entity, from, to } => self.up(&Step::RenameColumn {
                entity: entity.clone(),
                from: to.clone(),
                to: from.clone(),
            })?,
            Step::WidenField { entity, from, .. } => self
                .tables_of(entity)
                .iter()
                .filter_map(|t| self.change_type(t, from))
                .collect(),
            Step::AddIndex { entity, field } => vec![self.drop_index(&entity.table, &field.column)],
            Step::DropIndex { entity, field } => vec![self.reference_index(entity, field)],
            Step::Metadata(_) => Vec::new(),
        }))
    }
}

/// What `step` changes on the wire, if anything (see [`WireChange`]).
fn wire_change(step: &Step) -> Option<WireChange> {
    let default = |f: &Field| wire_default(f).unwrap_or(serde_json::Value::Null);
    Some(match step {
        Step::CreateEntity(e) => WireChange::AddEntity {
            entity: e.name.clone(),
        },
        Step::DropEntity(e) => WireChange::DropEntity {
            entity: e.name.clone(),
        },
        Step::RenameEntity { from, to } if from.name != to.name => WireChange::RenameEntity {
            from: from.name.clone(),
            to: to.name.clone(),
        },
        Step::AddField { entity, field } => WireChange::AddField {
            entity: entity.name.clone(),
            field: field.name.clone(),
            default: default(field),
        },
        Step::DropField { entity, field } => WireChange::DropField {
            entity: entity.name.clone(),
            field: field.name.clone(),
            // What a client that still has the field reads for it: its default, or
            // else the zero of its type (a required field must read as some value).
            default: wire_default(field).unwrap_or_else(|| zero_value(field)),
        },
        Step::RenameColumn { entity, from, to } if from.name != to.name => {
            WireChange::RenameField {
                entity: entity.name.clone(),
                from: from.name.clone(),
                to: to.name.clone(),
            }
        }
        _ => return None,
    })
}

/// The zero of a field's type on the wire (`false`, `0`, `""`, the nil UUID, the Unix
/// epoch, no bytes, an empty set; `null` for a `json` field, whose type is the app's).
fn zero_value(f: &Field) -> serde_json::Value {
    use serde_json::json;
    match &f.ty.kind {
        TypeKind::Set { .. } => json!([]),
        TypeKind::Json { .. } => serde_json::Value::Null,
        TypeKind::Scalar { scalar } => match scalar {
            ScalarType::Bool => json!(false),
            ScalarType::F32 | ScalarType::F64 => json!(0.0),
            s if s.is_integer() => json!(0),
            ScalarType::Uuid => json!("00000000-0000-0000-0000-000000000000"),
            ScalarType::Timestamp => json!("1970-01-01T00:00:00.000000Z"),
            ScalarType::Bytes => json!([]),
            _ => json!(""),
        },
    }
}

/// The value a field takes, on the wire, where a record has none: its `default`, an
/// empty set for a `union` field, `null` for an optional field; `None` for a required
/// field without a default (which cannot be added to an existing entity).
pub(crate) fn wire_default(f: &Field) -> Option<serde_json::Value> {
    if matches!(f.ty.kind, TypeKind::Set { .. }) && f.default.is_none() {
        return Some(serde_json::Value::Array(Vec::new()));
    }
    if let Some(v) = crate::vectors::default_value(f) {
        return Some(v);
    }
    f.ty.nullable.then_some(serde_json::Value::Null)
}

/// Problems with `default` values that only show when rendering SQL.
pub fn check_defaults(model: &sync_model::Model) -> Vec<String> {
    let mut out = Vec::new();
    for e in &model.entities {
        for f in e.synced_fields() {
            let Some(v) = &f.default else { continue };
            let problem = match (&f.ty.kind, v) {
                (
                    TypeKind::Scalar {
                        scalar: ScalarType::Timestamp,
                    },
                    serde_json::Value::String(s),
                ) => sync_runtime::time::parse(s).is_none().then(|| {
                    format!(
                        "`{s}` is not an RFC 3339 timestamp (for example \"2024-01-01T00:00:00Z\")"
                    )
                }),
                (
                    TypeKind::Scalar {
                        scalar: ScalarType::Uuid,
                    },
                    serde_json::Value::String(s),
                ) => {
                    let ok = s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
                    (!ok).then(|| format!("`{s}` is not a UUID"))
                }
                (TypeKind::Json { .. }, serde_json::Value::String(s)) => serde_json::from_str::<
                    serde_json::Value,
                >(s)
                .err()
                .map(|e| {
                    format!(
                        "a json field's string default is JSON text, and `{s}` is not JSON ({e})"
                    )
                }),
                _ => None,
            };
            if let Some(p) = problem {
                out.push(format!("default of `{}.{}`: {p}", e.name, f.name));
            }
        }
    }
    out
}

/// The type of a field as a readable string, for `inspect`.
pub fn sql_types(ty: &FieldType) -> [&'static str; 3] {
    [
        column_type(ty, Dialect::Sqlite),
        column_type(ty, Dialect::Postgres),
        column_type(ty, Dialect::Mysql),
    ]
}
